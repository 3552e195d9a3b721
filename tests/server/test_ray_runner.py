"""Uploads run as Ray tasks and live sessions as Ray actors on a real local Ray cluster (a head and
two worker nodes), through the unchanged HTTP/WebSocket API of a real ``stream4d serve --runner ray``:
the results equal the local runner's, a live stream keeps its drop-oldest back-pressure and
counters, a job whose node is killed mid-run completes on the other node, and a long video in
chunks runs on both nodes and is joined."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import websockets.sync.client as ws_client
from conftest import FAST_OPTIONS, ServerProcess, Sess
from ray_cluster import wait_for

from server.frames import encode_frame
from server.storage import SharedDirectory
from stream4d.outputs import read_trajectory_json

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "demo.mp4"
OPTIONS = {**FAST_OPTIONS, "max_frames": 12, "viewer": False}
LONGER = {**OPTIONS, "max_frames": 24}  # long enough to kill its node while it runs
LIVE = {**OPTIONS, "max_frames": None}  # a live run takes every frame sent
LIVE_QUEUE = 64  # more than a test sends while waiting for each ack: no frame is dropped by chance
# A keyframer that falls behind judges every third frame; never here, so that keyframes do not depend
# on how busy the machine is while the two runs are compared.
NEVER_SKIP = ("--live-keyframer-lag", "3600")


@pytest.fixture(scope="module")
def ray_server(cluster, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("ray-serve") / "data", workers=2, viewer="none",
                        live_queue=LIVE_QUEUE, extra_args=("--runner", "ray", "--ray-address", cluster.address,
                                    "--ray-max-retries", "2", *NEVER_SKIP)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    # Threads as in a 1-CPU Ray job (OMP_NUM_THREADS=1, one torch thread): sums differ in their last
    # bits with the thread count, and a self-calibrated focal length carries that up (docs/deploy.md).
    srv = ServerProcess(tmp_path_factory.mktemp("local-serve") / "data", workers=2, viewer="none",
                        live_queue=LIVE_QUEUE, env={"OMP_NUM_THREADS": "1"},
                        extra_args=("--allow-private-sources", *NEVER_SKIP)).start()
    yield srv
    srv.stop()


def _reconstruct(server: ServerProcess, options: dict, dest: Path) -> tuple[Sess, dict, np.ndarray]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        s = Sess(client, options)
        assert s.upload(DEMO, filename="demo.mp4").status_code == 202
        final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        return s, final, _trajectory(s.download("trajectory.json", dest))


def _trajectory(path: Path) -> np.ndarray:
    """[n, 4, 4] camera-to-world poses, stacked in frame order."""
    frames = read_trajectory_json(path)
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    return np.stack([np.asarray(f.c2w, dtype=np.float64) for f in frames])


def test_upload_on_ray_equals_the_local_runner(ray_server, local_server, tmp_path):
    (tmp_path / "ray").mkdir()
    (tmp_path / "local").mkdir()
    s, final, on_ray = _reconstruct(ray_server, OPTIONS, tmp_path / "ray")
    _, _, local = _reconstruct(local_server, OPTIONS, tmp_path / "local")
    assert final["attempts"] == 1
    assert on_ray.shape == local.shape and len(on_ray) > 0
    np.testing.assert_allclose(on_ray, local, atol=1e-6, rtol=0)
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        index = client.get(f"/sessions/{s.id}/results", headers=s.headers).json()
    assert {"trajectory.json", "trajectory.tum", "points.ply", "splats.ply", "run.json"} <= \
        {f["name"] for f in index["files"]}


def _demo_jpegs(n: int) -> list[bytes]:
    """The demo clip's first ``n`` frames as JPEG (what a camera client sends)."""
    capture = cv2.VideoCapture(str(DEMO))
    out = []
    while len(out) < n:
        ok, bgr = capture.read()
        assert ok, f"demo.mp4 has fewer than {n} frames"
        out.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    capture.release()
    return out


def _live(server: ServerProcess, jpegs: list[bytes], dest: Path) -> tuple[Sess, list[dict], dict, dict, np.ndarray]:
    """Stream ``jpegs`` at 10 fps of stream time, each sent once the previous one is acknowledged."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        s = Sess(client, LIVE)
        acks = []
        with ws_client.connect(server.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                               additional_headers=s.headers) as ws:
            for i, jpeg in enumerate(jpegs):
                ws.send(encode_frame(jpeg, i * 0.1))
                acks.append(json.loads(ws.recv(timeout=120)))
            ws.send(json.dumps({"type": "end"}))
            closed = json.loads(ws.recv(timeout=240))
        final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        return s, acks, closed, final, _trajectory(s.download("trajectory.json", dest))


def test_a_live_session_on_a_ray_actor_equals_the_local_runner(cluster, ray_server, local_server, tmp_path):
    jpegs = _demo_jpegs(16)
    (tmp_path / "ray").mkdir()
    (tmp_path / "local").mkdir()
    s, acks, closed, final, on_ray = _live(ray_server, jpegs, tmp_path / "ray")
    _, local_acks, local_closed, local_final, local = _live(local_server, jpegs, tmp_path / "local")
    assert [a["seq"] for a in acks] == list(range(len(jpegs))) and {a["type"] for a in acks} == {"ack"}
    assert (closed["type"], closed["accepted"], closed["dropped"], closed["invalid"]) == ("closed", 16, 0, 0)
    assert (local_closed["accepted"], local_closed["dropped"]) == (16, 0)
    assert final["live"] == local_final["live"] and not final["live"]["connected"]
    assert final["progress"]["frames_received"] == local_final["progress"]["frames_received"] == 16
    assert on_ray.shape == local.shape and len(on_ray) > 0
    np.testing.assert_allclose(on_ray, local, atol=1e-6, rtol=0)
    # the stream's state lived in an actor on a worker node, not in the server
    out_dir = str(ray_server.data_dir / "sessions" / s.id / "out")
    (where,) = SharedDirectory().attempts(out_dir)
    node = cluster.node_of_raylet(where["raylet_pid"])
    assert node is not None and node != cluster.temp_dirs[0], (where, cluster.temp_dirs)


def test_a_live_stream_faster_than_its_ray_actor_drops_the_oldest_frames(cluster, tmp_path_factory):
    """Frames sent without waiting for acks to a queue of 4: the actor's buffer drops the oldest,
    and the acks, the closing message and the session report it as the local runner does."""
    # The idle timeout is also how long the first frame waits for the actor to be placed and start: a
    # busy machine can take longer than the default 30 s, and placement is not what this test is about.
    srv = ServerProcess(tmp_path_factory.mktemp("ray-live-queue") / "data", workers=1, viewer="none", live_queue=4,
                        extra_args=("--runner", "ray", "--ray-address", cluster.address,
                                    "--live-idle-timeout", "180")).start()
    jpegs = _demo_jpegs(48)
    sent = 2 * len(jpegs)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            s = Sess(client, {**LIVE, "gaussians": False})
            acks = []
            with ws_client.connect(srv.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                                   additional_headers=s.headers) as ws:
                def send_all():
                    for i in range(sent):
                        ws.send(encode_frame(jpegs[i % len(jpegs)], i * 0.1))

                sender = threading.Thread(target=send_all)
                sender.start()
                while len(acks) < sent:
                    acks.append(json.loads(ws.recv(timeout=120)))
                sender.join()
                ws.send(json.dumps({"type": "end"}))
                closed = json.loads(ws.recv(timeout=240))
            final = s.wait(timeout=240)
    finally:
        srv.stop()
    assert [a["seq"] for a in acks] == list(range(sent))
    assert closed["type"] == "closed" and closed["accepted"] == sent and closed["dropped"] > 0, closed
    assert [a["dropped"] for a in acks] == sorted(a["dropped"] for a in acks)
    assert max(a["pending"] for a in acks) <= 4
    assert final["state"] == "completed", final
    assert final["live"]["dropped"] == closed["dropped"]
    # every accepted frame was reconstructed or dropped, none lost on the way to the actor
    assert final["progress"]["frames_received"] == sent - closed["dropped"]


def test_a_long_video_in_chunks_on_two_nodes_is_joined_onto_the_anchor_run(cluster, tmp_path):
    """server.ray_chunks on the real cluster: the anchor run and two chunks as Ray tasks on both nodes,
    joined into one trajectory of every frame, close to the reference."""
    import ray

    from server.ray_chunks import reconstruct_chunked
    from stream4d.evaluation.trajectory import evaluate_trajectory
    from stream4d.outputs import read_cameras_json
    from stream4d.pipeline import ReconstructConfig

    config = ReconstructConfig().override({"ingest.resize": 128, "align.window": 8, "align.overlap": 2,
                                           "rrd": False})
    ray.init(address=cluster.address, namespace="stream4d-test", log_to_driver=False)
    try:
        run = reconstruct_chunked(DEMO, tmp_path / "out", config, 48, chunks=2, overlap=8, anchor_stride=4)
    finally:
        ray.shutdown()
    assert len(set(run.nodes)) == 2, run.nodes  # the anchor and the first chunk started at once, one per node
    assert [(c["start"], c["stop"]) for c in run.report["chunks"]] == [(0, 28), (20, 48)]
    assert all(c["fitted_on"] >= 3 for c in run.report["chunks"]), run.report
    joined = read_trajectory_json(tmp_path / "out" / "trajectory.json")
    assert [f.index for f in joined] == list(range(48))
    result = evaluate_trajectory(joined, read_cameras_json(DEMO.parent / "cameras.json"))
    assert result.ate_rmse_rel_extent < 0.03, result.ate_rmse_rel_extent


def test_a_live_session_no_node_has_room_for_is_refused_saying_so(cluster, tmp_path_factory):
    """Each live actor asks for 2 CPUs, and no node has 2: the first frame is refused after the live
    idle timeout, and the session fails with the reason."""
    srv = ServerProcess(tmp_path_factory.mktemp("ray-no-room") / "data", workers=1, viewer="none",
                        extra_args=("--runner", "ray", "--ray-address", cluster.address, "--ray-num-cpus", "2",
                                    "--live-idle-timeout", "3")).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            s = Sess(client, LIVE)
            with ws_client.connect(srv.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                                   additional_headers=s.headers) as ws:
                ws.send(encode_frame(_demo_jpegs(1)[0], 0.0))
                reply = json.loads(ws.recv(timeout=60))
            final = s.wait(timeout=60)
    finally:
        srv.stop()
    assert reply["type"] == "error" and reply["code"] == "stream_closed", reply
    assert "no Ray node had room" in reply["message"], reply
    assert final["state"] == "failed" and "no Ray node had room" in final["error"], final


def test_a_job_whose_node_is_killed_completes_on_the_other_node(cluster, ray_server, local_server, tmp_path):
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        s = Sess(client, LONGER)
        assert s.upload(DEMO, filename="demo.mp4").status_code == 202
        out_dir = str(ray_server.data_dir / "sessions" / s.id / "out")
        attempts_file = Path(out_dir).parent / "job-attempts"
        first = wait_for(lambda: SharedDirectory().attempts(out_dir), 120, "first attempt")[0]
        raylet = first["raylet_pid"]
        node = cluster.node_of_raylet(raylet)
        # a worker node of our cluster, never the head (the server's driver is attached to it)
        assert node is not None and node != cluster.temp_dirs[0], (first, cluster.temp_dirs)
        assert s.status()["state"] == "running", s.status()
        cluster.kill_node(raylet)
        final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        assert final["attempts"] == 2
        assert any("another node" in note for note in final["notes"])
        lines = [json.loads(line) for line in attempts_file.read_text().splitlines()]
        assert len(lines) == 2 and lines[0]["node"] != lines[1]["node"]
        (tmp_path / "ray").mkdir()
        on_ray = _trajectory(s.download("trajectory.json", tmp_path / "ray"))
    (tmp_path / "local").mkdir()
    _, _, local = _reconstruct(local_server, LONGER, tmp_path / "local")
    np.testing.assert_allclose(on_ray, local, atol=1e-6, rtol=0)


def test_a_server_killed_mid_job_requeues_it_on_restart(cluster, tmp_path_factory):
    """kill -9 of the server (the Ray driver, whose tasks Ray ends with it): the restarted server
    runs the job again from the upload on the shared storage."""
    srv = ServerProcess(tmp_path_factory.mktemp("ray-restart") / "data", workers=1, viewer="none",
                        extra_args=("--runner", "ray", "--ray-address", cluster.address)).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            s = Sess(client, LONGER)
            assert s.upload(DEMO, filename="demo.mp4").status_code == 202
            out_dir = str(srv.data_dir / "sessions" / s.id / "out")
            wait_for(lambda: SharedDirectory().attempts(out_dir), 120, "first attempt")
        srv.kill9()
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            s.client = client
            final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        assert final["attempts"] == 2
        assert any("restarted" in note for note in final["notes"]), final["notes"]
    finally:
        srv.stop()


def test_stopping_a_ray_job_ends_it_early_and_keeps_its_outputs(ray_server):
    """A stop reaches the task on its node (the stop file): it ends early and writes what it has."""
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        s = Sess(client, {**OPTIONS, "max_frames": None})  # all 48 frames of the demo
        assert s.upload(DEMO, filename="demo.mp4").status_code == 202
        out_dir = str(ray_server.data_dir / "sessions" / s.id / "out")
        wait_for(lambda: SharedDirectory().attempts(out_dir), 120, "first attempt")
        assert client.post(f"/sessions/{s.id}/stop", headers=s.headers).status_code == 202
        final = s.wait(timeout=120)
        assert final["state"] == "completed", final
        assert "stopped early" in final["notes"][-1], final["notes"]
        assert final["progress"]["frames_processed"] < 48, final["progress"]  # the task itself stopped early
        index = client.get(f"/sessions/{s.id}/results", headers=s.headers).json()
        assert "run.json" in {f["name"] for f in index["files"]}


def test_a_live_session_whose_node_dies_fails_saying_so(cluster, ray_server):
    """The actor held the stream's state: it is not moved; the session fails with the reason and the
    client's next frame is refused. A node is added first, so one is left for the tests after."""
    cluster.add_node()
    jpegs = _demo_jpegs(48)
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        s = Sess(client, LIVE)
        out_dir = str(ray_server.data_dir / "sessions" / s.id / "out")
        with ws_client.connect(ray_server.url.replace("http", "ws") + f"/sessions/{s.id}/live",
                               additional_headers=s.headers) as ws:
            for i in range(4):
                ws.send(encode_frame(jpegs[i], i * 0.1))
                assert json.loads(ws.recv(timeout=120))["type"] == "ack"
            where = wait_for(lambda: SharedDirectory().attempts(out_dir), 120, "the actor's run")[0]
            cluster.kill_node(where["raylet_pid"])
            refused = None
            for i in range(4, len(jpegs)):
                ws.send(encode_frame(jpegs[i], i * 0.1))
                reply = json.loads(ws.recv(timeout=120))
                if reply["type"] == "error":
                    refused = reply
                    break
        assert refused is not None and refused["code"] == "stream_closed", refused
        final = s.wait(timeout=120)
    assert final["state"] == "failed", final
    assert "node running this live session was lost" in final["error"], final["error"]


def test_a_job_fails_with_the_reason_once_its_retries_are_spent(cluster, tmp_path_factory):
    """No retries allowed (--ray-max-retries 0): the node's death fails the session, saying why.
    Runs last: it takes the cluster's last worker node down."""
    srv = ServerProcess(tmp_path_factory.mktemp("ray-no-retry") / "data", workers=1, viewer="none",
                        extra_args=("--runner", "ray", "--ray-address", cluster.address,
                                    "--ray-max-retries", "0")).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            s = Sess(client, LONGER)
            assert s.upload(DEMO, filename="demo.mp4").status_code == 202
            out_dir = str(srv.data_dir / "sessions" / s.id / "out")
            first = wait_for(lambda: SharedDirectory().attempts(out_dir), 120, "first attempt")[0]
            cluster.kill_node(first["raylet_pid"])
            final = s.wait(timeout=120)
        assert final["state"] == "failed", final
        assert "Ray lost the job on each of its 1 attempts" in final["error"], final["error"]
        assert "--ray-max-retries 0" in final["error"]
    finally:
        srv.stop()
