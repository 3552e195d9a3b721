"""kill -9 of the server mid-job, then a restart: the upload survives and the job resumes."""

import hashlib
import time

import httpx
from conftest import FAST_OPTIONS, VIDEOS, ServerProcess


def test_kill_9_mid_job_keeps_the_upload_and_the_job_resumes(tmp_path):
    srv = ServerProcess(tmp_path / "data", workers=1, viewer="none").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.post("/sessions", json={**FAST_OPTIONS, "target_fps": 2})
            sid, headers = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
            data = (VIDEOS / "great_wall.mp4").read_bytes()
            r = c.post(f"/sessions/{sid}/upload", content=data, headers={**headers, "Content-Type": "video/mp4"})
            assert r.status_code == 202
            deadline = time.monotonic() + 120
            while c.get(f"/sessions/{sid}", headers=headers).json()["state"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.2)
        srv.kill9()

        stored = srv.data_dir / "sessions" / sid / "upload.mp4"
        assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(data).digest()

        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            status = c.get(f"/sessions/{sid}", headers=headers).json()  # the token still works
            assert status["state"] in ("queued", "running", "completed")
            assert "restarted during attempt 1" in status["notes"][0]
            deadline = time.monotonic() + 300
            while status["state"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, status
                time.sleep(0.5)
                status = c.get(f"/sessions/{sid}", headers=headers).json()
            assert status["state"] == "completed", status
            assert status["attempts"] == 2
            names = {f["name"] for f in c.get(f"/sessions/{sid}/results", headers=headers).json()["files"]}
            assert {"trajectory.json", "trajectory.tum", "points.ply", "run.json"} <= names
    finally:
        srv.stop()
