"""Sessions, frames, uploads and files within bounds (issue 15, items 2, 3, 7, 8, 9, 10, 11)."""

from __future__ import annotations

import gc
import json
import os
import stat
import threading
import time
import weakref

import cv2
import httpx
import numpy as np
import psutil
import pytest
import websockets.exceptions
import websockets.sync.client as ws_client
from conftest import FAST_OPTIONS, VIDEOS, ServerProcess, Sess, assert_error

from recon.ingest.options import IngestOptions
from recon.ingest.push import PushSource
from recon.ingest.transforms import plan_resize
from server.errors import ApiError
from server.frames import encode_frame
from server.service import check_pull_url
from server.settings import Settings
from stream4d.commands.serve import deployment_warnings
from stream4d.testdata import png_of_black

MAX_PIXELS = 4_000_000  # --max-pixels of this module's server


@pytest.fixture(scope="module")
def srv(tmp_path_factory) -> ServerProcess:
    """One worker, one live session at most, 4 MP frames at most."""
    server = ServerProcess(tmp_path_factory.mktemp("resources") / "data", workers=1, viewer="none", extra_args=(
        "--max-live-sessions", "1", "--max-pixels", str(MAX_PIXELS), "--live-idle-timeout", "20")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def c(srv) -> httpx.Client:
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def done(c) -> Sess:
    """A completed session (room.mp4, small options)."""
    s = Sess(c, {**FAST_OPTIONS, "max_frames": 8})
    assert s.upload(VIDEOS / "room.mp4").status_code == 202
    assert s.wait(timeout=240)["state"] == "completed"
    return s


# ----- item 2: live frames ---------------------------------------------------------------
def test_pushed_frames_are_shrunk_to_the_model_size_on_arrival():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    source = PushSource(capacity=8, options=IngestOptions(resize=128))
    source.push(image, 0.0)
    assert source.pending_bytes == 128 * 96 * 3  # not the 36 MB that arrived
    source.close()
    (frame,) = list(source)
    assert np.array_equal(frame.image, plan_resize((4000, 3000), 128).apply(image))  # the model sees the same


def test_the_live_queue_is_budgeted_in_bytes():
    frame_bytes = 640 * 480 * 3
    source = PushSource(capacity=32, options=IngestOptions(resize=None), max_bytes=3 * frame_bytes)
    for i in range(10):
        source.push(np.zeros((480, 640, 3), np.uint8), float(i))
    assert (source.pending, source.pending_bytes, source.stats.dropped) == (3, 3 * frame_bytes, 7)
    assert source.discard() == 3 and (source.pending, source.pending_bytes) == (0, 0)


def test_a_push_source_is_freed_without_the_cycle_collector():
    gc.disable()
    try:
        source = PushSource(capacity=4)
        for i in range(6):  # drops, so the drop counter runs
            source.push(np.zeros((8, 8, 3), np.uint8), float(i))
        ref = weakref.ref(source)
        del source
        assert ref() is None  # freed by reference counting, queued frames with it
    finally:
        gc.enable()


def test_live_sessions_are_capped(srv, c):
    first, other = Sess(c, FAST_OPTIONS), Sess(c, FAST_OPTIONS)
    url = srv.url.replace("http", "ws")
    with ws_client.connect(f"{url}/sessions/{first.id}/live", additional_headers=first.headers, open_timeout=10) as ws:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            ws_client.connect(f"{url}/sessions/{other.id}/live", additional_headers=other.headers, open_timeout=10)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["error"]["code"] == "too_many_live_sessions"
        assert other.status()["state"] == "created"  # refused before it took its input
        ws.send(json.dumps({"type": "end"}))
        ws.recv(timeout=30)
    first.wait(timeout=60)  # its slot is free once its job has ended


def test_an_idle_live_client_holds_no_upload_worker(srv, c):
    idle = Sess(c, FAST_OPTIONS)
    with ws_client.connect(srv.url.replace("http", "ws") + f"/sessions/{idle.id}/live",
                           additional_headers=idle.headers, open_timeout=10):
        # The server's one worker is free for an upload while the live client says nothing.
        upload = Sess(c, FAST_OPTIONS)
        assert upload.upload(VIDEOS / "room.mp4").status_code == 202
        upload.wait(("running", "completed"), timeout=30)
    assert upload.wait(timeout=240)["state"] == "completed"
    idle.wait(timeout=60)


# ----- item 3: uploads -------------------------------------------------------------------
def test_uploads_with_frames_above_the_pixel_limit_are_refused_before_decoding(srv, c):
    rss = psutil.Process(srv.proc.pid)
    before = rss.memory_info().rss
    s = Sess(c, FAST_OPTIONS)
    r = c.post(f"/sessions/{s.id}/upload", content=png_of_black(4000, 4000),
               headers={**s.headers, "Content-Type": "video/mp4"})
    assert_error(r, 413, "frames_too_large")
    assert rss.memory_info().rss - before < 40 * 2**20  # 4000x4000 RGB would be 48 MB
    assert s.status()["state"] == "created"


def test_live_frames_above_the_pixel_limit_are_refused(srv, c):
    s = Sess(c, FAST_OPTIONS)
    image = cv2.imencode(".png", np.zeros((2100, 2100, 3), np.uint8))[1].tobytes()  # 4.4 MP
    with ws_client.connect(srv.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                           additional_headers=s.headers, open_timeout=10) as ws:
        ws.send(encode_frame(image, 0.0))
        answer = json.loads(ws.recv(timeout=30))
        assert answer["type"] == "error" and answer["code"] == "bad_image_size", answer
        ws.send(json.dumps({"type": "end"}))
        ws.recv(timeout=30)
    s.wait(timeout=60)


# ----- items 8, 9, 10 --------------------------------------------------------------------
def test_data_dir_and_every_file_in_it_are_private(srv, done):
    assert stat.S_IMODE(srv.data_dir.stat().st_mode) == 0o700
    checked = 0
    for root, dirs, files in os.walk(srv.data_dir):
        for name in dirs + files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(root, name), oct(mode))
            checked += 1
    names = {p.name for p in srv.data_dir.rglob("*")}
    assert {"sessions.db", "upload.mp4", "trajectory.json", "run.json"} <= names and checked > 6


def test_errors_name_the_upload_never_a_server_path(srv, c):
    s = Sess(c, FAST_OPTIONS)
    r = c.post(f"/sessions/{s.id}/upload", content=b"not a video at all " * 100,
               headers={**s.headers, "Content-Type": "video/mp4"})
    err = assert_error(r, 422)
    assert str(srv.data_dir) not in err["message"] and "upload.part" not in err["message"]
    assert "/" not in err["message"].replace("video/", ""), err["message"]


def test_a_still_image_ends_failed_with_a_reason(c):
    s = Sess(c, FAST_OPTIONS)
    image = cv2.imencode(".png", np.full((96, 128, 3), 40, np.uint8))[1].tobytes()
    r = c.post(f"/sessions/{s.id}/upload", content=image, headers={**s.headers, "Content-Type": "video/mp4"})
    assert r.status_code == 202, r.text
    final = s.wait(timeout=120)
    assert final["state"] == "failed" and "no frame was reconstructed" in final["error"], final


def test_an_upload_into_a_session_deleted_mid_upload_is_404(srv, c):
    s = Sess(c, FAST_OPTIONS)
    data = (VIDEOS / "room.mp4").read_bytes()
    go_on = threading.Event()
    part = srv.data_dir / "sessions" / s.id / "upload.part"

    def body():
        yield data[:1024]
        assert go_on.wait(30)
        yield data[1024:]

    result: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: result.append(c.post(
        f"/sessions/{s.id}/upload", content=body(), headers={**s.headers, "Content-Type": "video/mp4"})))
    sender.start()
    deadline = time.monotonic() + 30
    while not part.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with httpx.Client(base_url=srv.url, timeout=60) as other:
        assert other.delete(f"/sessions/{s.id}", headers=s.headers).status_code == 204
    go_on.set()
    sender.join(60)
    assert_error(result[0], 404, "session_not_found")


def test_range_errors_are_json(c, done):
    url = f"/sessions/{done.id}/results/trajectory.json"
    assert_error(c.get(url, headers={**done.headers, "Range": "bytes=abc"}), 400)
    err = assert_error(c.get(url, headers={**done.headers, "Range": "bytes=99999999-"}), 416)
    assert err["code"] == "range_not_satisfiable"


def test_a_sigterm_restart_does_not_use_up_a_job_attempt(tmp_path):
    server = ServerProcess(tmp_path / "data", workers=1, viewer="none").start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            s = Sess(client, {**FAST_OPTIONS, "target_fps": 2})
            assert s.upload(VIDEOS / "great_wall.mp4").status_code == 202
            s.wait(("running",), timeout=120)
        server.stop()  # SIGTERM: the job is interrupted and re-queued
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            s.client = client
            final = s.wait(timeout=300)
        assert final["state"] == "completed" and final["attempts"] == 1, final
    finally:
        server.stop()


# ----- items 6, 11: settings and deployment ---------------------------------------------
def test_private_link_local_and_loopback_pull_targets_are_refused():
    for url in ("http://10.1.2.3/x.mp4", "rtsp://192.168.1.10/cam", "http://169.254.169.254/latest/meta-data",
                "http://100.64.0.1/", "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:80/",
                "rtmp://127.0.0.2/live", "http://224.0.0.1/"):
        with pytest.raises(ApiError) as err:
            check_pull_url(url, allow_devices=False)  # IP literals: no lookup, no connection
        assert (err.value.status, err.value.code) == (403, "private_source"), url
    assert check_pull_url("http://8.8.8.8/x.mp4", allow_devices=False) == "http://8.8.8.8/x.mp4"
    with pytest.raises(ApiError) as err:
        check_pull_url("http://8.8.8.8:99999/x.mp4", allow_devices=False)
    assert err.value.code == "bad_source_url"
    assert check_pull_url("http://127.0.0.1/x.mp4", False, allow_private=True) == "http://127.0.0.1/x.mp4"


def test_defaults_refuse_devices_and_private_sources_and_trust_only_local_names(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert (s.allow_devices, s.allow_private_sources) == (False, False)
    assert set(s.trusted_hosts) == {"localhost", "127.0.0.1", "::1"}
    assert Settings(data_dir=tmp_path, host="0.0.0.0").trusted_hosts == ["*"]


def test_risky_deployments_are_warned_about(tmp_path):
    public = deployment_warnings(Settings(data_dir=tmp_path, host="0.0.0.0"), trusted_hosts_given=False)
    assert any("--trusted-hosts" in w for w in public)
    assert not any("--trusted-hosts" in w for w in deployment_warnings(Settings(data_dir=tmp_path), False))
    assert any("root" in w for w in public) == (os.geteuid() == 0)


def test_sessions_not_yet_ended_are_capped(tmp_path):
    from server.models import SessionOptions
    from server.service import SessionManager

    manager = SessionManager(Settings(data_dir=tmp_path, max_sessions=2, workers=1))
    try:
        first, _ = manager.create(SessionOptions())
        manager.create(SessionOptions())
        with pytest.raises(ApiError) as err:
            manager.create(SessionOptions())
        assert (err.value.status, err.value.code) == (503, "too_many_sessions")
        manager.delete(first.id)
        manager.create(SessionOptions())  # a slot is free again
    finally:
        manager.shutdown()
