"""Viewer sessions: served on loopback with a printed URL, several per process, spawn fallback."""

from __future__ import annotations

import subprocess
import time
import urllib.parse
import urllib.request

import psutil
import pytest
from viz_fixtures import rrd

from stream4d.contracts import StreamStats
from viz import RerunObserver, VizConfig, paths, serve_recording
from viz.session import free_port, rerun_binary


def listening_addresses(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def grpc_port_of(viewer_url: str) -> int:
    grpc = urllib.parse.parse_qs(urllib.parse.urlparse(viewer_url).query)["url"][0]
    assert grpc.startswith("rerun+http://127.0.0.1:") and grpc.endswith("/proxy")
    return urllib.parse.urlparse(grpc.removeprefix("rerun+")).port


def test_serve_prints_a_loopback_viewer_url_and_binds_only_loopback(tmp_path, fern_windows, capsys):
    obs = RerunObserver(VizConfig(mode="serve", rrd_path=tmp_path / "r.rrd"))
    try:
        url = obs.viewer_url
        assert url in capsys.readouterr().err
        parsed = urllib.parse.urlparse(url)
        assert (parsed.scheme, parsed.hostname) == ("http", "127.0.0.1")
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        assert listening_addresses(parsed.port) == {"127.0.0.1"}
        assert listening_addresses(grpc_port_of(url)) == {"127.0.0.1"}
        obs.on_window(fern_windows[0])
        obs.close()
        # close() finalised the .rrd but the gRPC server keeps serving the finished recording.
        assert rrd(tmp_path / "r.rrd").frames(f"/{paths.CAMERA}") == [0, 1, 2, 3, 4]
        assert listening_addresses(grpc_port_of(url)) == {"127.0.0.1"}
    finally:
        obs.shutdown()
    # rerun stops its gRPC server on a thread of its own: the port closes shortly after shutdown()
    deadline = time.monotonic() + 15
    while listening_addresses(grpc_port_of(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listening_addresses(grpc_port_of(url)) == set()


def test_two_sessions_in_one_process_record_separately(tmp_path, fern_windows):
    a = RerunObserver(VizConfig(mode="serve", rrd_path=tmp_path / "a.rrd", announce=False))
    b = RerunObserver(VizConfig(mode="serve", rrd_path=tmp_path / "b.rrd", announce=False))
    try:
        assert a.recording_id != b.recording_id
        assert grpc_port_of(a.viewer_url) != grpc_port_of(b.viewer_url)
        # One web viewer per process serves both; each URL names its own gRPC server.
        assert urllib.parse.urlparse(a.viewer_url).port == urllib.parse.urlparse(b.viewer_url).port
        a.on_window(fern_windows[0])
        b.on_window(fern_windows[1])
        b.on_stats(StreamStats(fps=7.0))
        a.close()
        b.close()
        ra, rb = rrd(tmp_path / "a.rrd"), rrd(tmp_path / "b.rrd")
        assert [r.recording_id for r in ra.recordings] == [a.recording_id]
        assert [r.recording_id for r in rb.recordings] == [b.recording_id]
        assert ra.frames(f"/{paths.CAMERA}") == [0, 1, 2, 3, 4]
        assert rb.frames(f"/{paths.CAMERA}") == [5, 6, 7]
        assert f"/{paths.FPS}" in rb.entities() and f"/{paths.FPS}" not in ra.entities()
    finally:
        a.shutdown()
        b.shutdown()


def test_spawn_without_a_display_falls_back_to_serving_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    obs = RerunObserver(VizConfig(mode="spawn", rrd_path=tmp_path / "r.rrd"))
    try:
        err = capsys.readouterr().err
        assert "cannot open a native rerun viewer" in err and "no display" in err
        assert obs.mode == "serve"
        assert obs.viewer_url is not None and obs.viewer_url in err
    finally:
        obs.shutdown()


def test_spawn_whose_viewer_cannot_open_a_window_falls_back_to_serving(tmp_path, monkeypatch, capsys):
    # No X server there: the real viewer binary listens on its port, then exits.
    monkeypatch.setenv("DISPLAY", ":987")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    port = free_port()
    obs = RerunObserver(VizConfig(mode="spawn", spawn_port=port, rrd_path=tmp_path / "r.rrd"))
    try:
        err = capsys.readouterr().err
        assert "cannot open a native rerun viewer: the viewer exited with code" in err
        assert obs.mode == "serve" and obs.viewer_url is not None and obs.viewer_url in err
        assert listening_addresses(port) == set()
    finally:
        obs.shutdown()


def test_spawn_reuses_a_viewer_already_listening_on_its_port(tmp_path, fern_windows, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":987")  # a second viewer could not open here: only reuse works
    port = free_port()
    proxy = subprocess.Popen([str(rerun_binary()), "--serve-grpc", "--bind", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not listening_addresses(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        obs = RerunObserver(VizConfig(mode="spawn", spawn_port=port, rrd_path=tmp_path / "r.rrd"))
        obs.on_window(fern_windows[0])
        obs.close()
        assert obs.mode == "spawn" and obs.viewer_url is None
        assert f"native rerun viewer on rerun+http://127.0.0.1:{port}/proxy" in capsys.readouterr().err
        assert rrd(tmp_path / "r.rrd").frames(f"/{paths.CAMERA}") == [0, 1, 2, 3, 4]
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_observer_survives_close_twice_and_ignores_late_calls(tmp_path, fern_windows):
    obs = RerunObserver(VizConfig(rrd_path=tmp_path / "r.rrd"))
    obs.on_window(fern_windows[0])
    obs.close()
    obs.on_window(fern_windows[1])  # after close: ignored, no error
    obs.close()
    assert rrd(tmp_path / "r.rrd").frames(f"/{paths.CAMERA}") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["none", "serve"])
def test_unwritable_rrd_path_raises_naming_the_path(tmp_path, mode):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="rrd_path .*cannot write"):
        RerunObserver(VizConfig(mode=mode, rrd_path=blocker / "r.rrd", announce=False))


def test_a_saved_recording_can_be_served_again(tmp_path, fern_windows):
    with RerunObserver(VizConfig(rrd_path=tmp_path / "r.rrd")) as obs:
        obs.on_window(fern_windows[0])
    session = serve_recording(tmp_path / "r.rrd", VizConfig(announce=False))
    try:
        assert session.viewer_url.startswith("http://127.0.0.1:")
        assert listening_addresses(grpc_port_of(session.viewer_url)) == {"127.0.0.1"}
    finally:
        session.shutdown()
    with pytest.raises(FileNotFoundError, match="missing.rrd"):
        serve_recording(tmp_path / "missing.rrd")


def test_serve_after_close_false_stops_the_server_on_close(tmp_path):
    obs = RerunObserver(VizConfig(mode="serve", serve_after_close=False, announce=False))
    port = grpc_port_of(obs.viewer_url)
    assert listening_addresses(port) == {"127.0.0.1"}
    obs.close()
    assert listening_addresses(port) == set()
