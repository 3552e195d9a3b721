"""A chunked upload on a real local Ray cluster (a head and two worker nodes) through the unchanged
HTTP API of a real ``stream4d serve --runner ray``: the anchor run and the chunks run as Ray tasks
on both nodes, a join task writes the same result files as a normal upload, and run.json says how."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import FAST_OPTIONS, ServerProcess, Sess, assert_error
from ray_cluster import wait_for

from server.storage import SharedDirectory
from stream4d.evaluation.trajectory import evaluate_trajectory
from stream4d.outputs import read_cameras_json, read_trajectory_json

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "demo.mp4"  # 48 frames
CHUNKED = {**FAST_OPTIONS, "chunks": 2, "chunk_overlap": 8, "chunk_anchor_stride": 4}
RESULTS = {"trajectory.json", "trajectory.tum", "points.ply", "splats.ply", "recording.rrd", "run.json"}


@pytest.fixture(scope="module")
def ray_server(cluster, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("ray-chunks") / "data", workers=2, viewer="none",
                        extra_args=("--runner", "ray", "--ray-address", cluster.address)).start()
    yield srv
    srv.stop()


def test_a_chunked_upload_runs_its_parts_on_both_nodes_and_gives_every_result_file(ray_server, tmp_path):
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        s = Sess(client, CHUNKED)
        assert s.upload(DEMO, filename="demo.mp4").status_code == 202
        final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        assert final["attempts"] == 1 and final["progress"]["frames_posed"] == 48
        index = client.get(f"/sessions/{s.id}/results", headers=s.headers).json()
        assert {f["name"] for f in index["files"]} == RESULTS
        frames = read_trajectory_json(s.download("trajectory.json", tmp_path))
        run = json.loads(s.download("run.json", tmp_path).read_text())
    assert [f.index for f in frames] == list(range(48))
    ate = evaluate_trajectory(frames, read_cameras_json(DEMO.parent / "cameras.json")).ate_rmse_rel_extent
    assert ate < 0.03, ate
    chunked = run["chunked"]
    assert (chunked["chunks"], chunked["runner"]) == (2, "ray")
    parts = chunked["parts"]
    assert [(p["part"], p["start"], p["stop"]) for p in parts] == [("anchor", None, None), ("000", 0, 28),
                                                                    ("001", 20, 48)]
    assert len({p["node"] for p in parts}) == 2, parts  # spread: the first two parts started on both nodes
    assert all(p["seconds"] > 0 and p["attempts"] == 1 for p in parts)
    assert run["timings_s"]["chunks"] > 0 and run["timings_s"]["join"] > 0
    # the parts' folders stay out of the session's results
    assert (ray_server.data_dir / "sessions" / s.id / "chunks" / "001" / "out" / "trajectory.json").is_file()


def test_bad_chunk_options_are_a_400_on_the_ray_runner_too(ray_server):
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        assert_error(client.post("/sessions", json={**CHUNKED, "final_ba": True}), 400, "bad_chunk_options")
        s = Sess(client, {**CHUNKED, "chunks": 4, "chunk_overlap": 16})
        assert_error(s.upload(DEMO), 400, "video_too_short_for_chunks")


def test_a_stopped_chunked_upload_on_ray_completes_with_what_its_chunks_reconstructed(ray_server, tmp_path):
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        s = Sess(client, CHUNKED)
        assert s.upload(DEMO, filename="demo.mp4").status_code == 202
        s.wait_until(lambda st: st["progress"]["frames_processed"] > 0, timeout=120, what="the chunks' progress")
        assert client.post(f"/sessions/{s.id}/stop", headers=s.headers).status_code == 202
        final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        frames = read_trajectory_json(s.download("trajectory.json", tmp_path))
        run = json.loads(s.download("run.json", tmp_path).read_text())
    assert 0 < len(frames) <= 48
    assert run["chunked"]["stopped"] is True and "anchor" not in [p["part"] for p in run["chunked"]["parts"]]


def test_a_chunk_whose_node_is_killed_is_retried_and_the_upload_completes(cluster, ray_server, tmp_path):
    """Last in the module: it kills one of the two nodes (and adds a fresh one after)."""
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        s = Sess(client, CHUNKED)
        assert s.upload(DEMO, filename="demo.mp4").status_code == 202
        part = str(ray_server.data_dir / "sessions" / s.id / "chunks" / "000" / "out")
        first = wait_for(lambda: SharedDirectory().attempts(part), 120, "the first chunk's attempt")[0]
        cluster.kill_node(first["raylet_pid"])
        final = s.wait(timeout=240)
        assert final["state"] == "completed", final
        assert final["attempts"] == 2 and any("another node" in note for note in final["notes"]), final
        frames = read_trajectory_json(s.download("trajectory.json", tmp_path))
        run = json.loads(s.download("run.json", tmp_path).read_text())
    assert [f.index for f in frames] == list(range(48))
    retried = next(p for p in run["chunked"]["parts"] if p["part"] == "000")
    assert retried["attempts"] == 2
    lines = SharedDirectory().attempts(part)
    assert len(lines) == 2 and lines[0]["node"] != lines[1]["node"]
    cluster.add_node()
