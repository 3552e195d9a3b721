"""The final bundle adjustment as a session option: applied to an upload, refused where pycolmap is missing."""

from pathlib import Path

import httpx
from conftest import FAST_OPTIONS, ServerProcess, Sess, assert_error

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo" / "demo.mp4"


def test_an_upload_is_adjusted_by_default_and_its_saved_map_follows(client):
    # 24 frames in windows of 8: the demo's circle closes a loop that moves windows, and the
    # adjustment holds it with the loop's matches (without them it would open the loop again).
    s = Sess(client, {**FAST_OPTIONS, "max_frames": 24})
    assert s.upload(DEMO, filename="demo.mp4").status_code == 202
    assert s.wait()["state"] == "completed"
    run = client.get(f"/sessions/{s.id}/results/run.json", headers=s.headers).json()
    assert run["config"]["final_ba"] is None
    record = run["final_ba"]
    assert any(loop["moved"] for loop in run["loop_closure"]["loops"]), run["loop_closure"]
    assert record["applied"] and record["loops_held"] >= 1 and record["loop_tracks"] >= 6, record
    assert record["reprojection_after_px"] <= record["reprojection_before_px"]
    assert record["map_keyframes_moved"] == run["map"]["saved"]["keyframes"] > 0, (record, run["map"])


def test_final_ba_on_a_server_without_pycolmap_is_refused_at_creation(tmp_path):
    hide = tmp_path / "no_pycolmap"  # a pycolmap that cannot be imported shadows the installed one
    hide.mkdir()
    (hide / "pycolmap.py").write_text("raise ImportError('pycolmap hidden by the test')\n")
    srv = ServerProcess(tmp_path / "data", viewer="none", extra_args=(),
                        env={"PYTHONPATH": f"{hide}:{REPO}"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            r = client.post("/sessions", json={"viewer": False, "final_ba": True})
            assert "pycolmap" in assert_error(r, 400, "final_ba_unavailable")["message"]
            assert client.post("/sessions", json={"viewer": False}).status_code == 201  # the rest still works
    finally:
        srv.stop()
