"""Server-pulled streams, early stop and deletion of running sessions."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import FAST_OPTIONS, VIDEOS, Sess, assert_error

from stream4d.outputs import read_trajectory_json


def _reconstructing(status: dict) -> bool:
    return status["state"] == "running" and status["progress"]["frames_processed"] > 0


@pytest.fixture(scope="module")
def video_http_server():
    """Serves ../shared/data/videos over HTTP on loopback: a network video for the server to pull."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(VIDEOS))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_pulled_http_video_is_reconstructed(client, video_http_server, tmp_path):
    s = Sess(client, {**FAST_OPTIONS, "max_frames": 12, "target_fps": 6})
    url = f"{video_http_server}/great_wall.mp4"
    r = client.post(f"/sessions/{s.id}/source", json={"url": url}, headers=s.headers)
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "pull" and r.json()["source"] == url
    final = s.wait(timeout=240)
    assert final["state"] == "completed", final
    assert final["progress"]["frames_received"] == 12
    assert len(read_trajectory_json(s.download("trajectory.json", tmp_path))) == final["progress"]["frames_posed"]


def test_unreachable_pull_source_fails_with_the_reason(client):
    s = Sess(client, FAST_OPTIONS)
    r = client.post(f"/sessions/{s.id}/source", json={"url": "http://127.0.0.1:9/nothing.mp4"}, headers=s.headers)
    assert r.status_code == 202
    final = s.wait(timeout=120)
    assert final["state"] == "failed" and "IngestError" in final["error"]


def test_stop_ends_a_running_job_early_and_keeps_its_results(client, tmp_path):
    s = Sess(client, {**FAST_OPTIONS, "target_fps": 12})  # 144 frames: far more than we wait for
    assert s.upload(VIDEOS / "great_wall.mp4").status_code == 202
    s.wait_until(_reconstructing, 120, "processed frames")
    r = client.post(f"/sessions/{s.id}/stop", headers=s.headers)
    assert r.status_code == 202
    final = s.wait(timeout=180)
    assert final["state"] == "completed", final
    assert 0 < final["progress"]["frames_received"] < 144
    assert "stopped early" in final["notes"][-1]
    posed = final["progress"]["frames_posed"]
    assert posed > 0 and len(read_trajectory_json(s.download("trajectory.json", tmp_path))) == posed


def test_deleting_a_running_session_stops_it_and_removes_its_files(client, server):
    s = Sess(client, {**FAST_OPTIONS, "target_fps": 12})
    assert s.upload(VIDEOS / "great_wall.mp4").status_code == 202
    s.wait_until(_reconstructing, 120, "processed frames")
    assert client.delete(f"/sessions/{s.id}", headers=s.headers).status_code == 204
    assert not (server.data_dir / "sessions" / s.id).exists()
    assert_error(client.get(f"/sessions/{s.id}/results", headers=s.headers), 404, "session_not_found")
    assert client.get("/health").json()["active_jobs"] == 0
