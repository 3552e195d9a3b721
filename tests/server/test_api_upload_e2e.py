"""Upload a real video, follow the progress events, download and check every result."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import FAST_OPTIONS, VIDEOS, Sess
from plyfile import PlyData

from stream4d.outputs import read_points_ply, read_trajectory_json, read_tum

RESULTS = {"trajectory.json", "trajectory.tum", "points.ply", "splats.ply", "recording.rrd", "run.json"}


def _events(client: httpx.Client, s: Sess):
    """(event, data) pairs of the session's SSE stream until it ends."""
    with client.stream("GET", f"/sessions/{s.id}/events", headers=s.headers, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])
                if event in ("end", "deleted"):
                    return


def test_uploaded_video_is_reconstructed_and_every_result_downloads(client, server, tmp_path):
    s = Sess(client, {**FAST_OPTIONS, "target_fps": 2, "viewer": True})
    r = s.upload(VIDEOS / "great_wall.mp4", filename="great_wall.mp4")
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["state"] == "queued" and accepted["filename"] == "great_wall.mp4"
    assert (accepted["probe"]["frames"], accepted["probe"]["width"], accepted["probe"]["height"]) == (288, 640, 360)
    stored = server.data_dir / "sessions" / s.id / "upload.mp4"  # a fixed name, not the client's
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(
        (VIDEOS / "great_wall.mp4").read_bytes()).digest()

    events = list(_events(client, s))
    assert events[-1][0] == "end"
    final = events[-1][1]
    assert final["state"] == "completed", final
    processed = [d["progress"]["frames_processed"] for e, d in events if e == "progress"]
    assert processed == sorted(processed)  # progress only moves forward
    progress = final["progress"]
    assert 23 <= progress["frames_received"] <= 25  # 12 s at 2 fps
    assert progress["frames_posed"] > 0 and progress["windows"] > 0 and progress["fps"] > 0

    index = client.get(f"/sessions/{s.id}/results", headers=s.headers).json()
    assert {f["name"] for f in index["files"]} == RESULTS
    assert index["viewer_url"] and index["viewer_url"].startswith("http://127.0.0.1:")
    assert httpx.get(index["viewer_url"], timeout=30).status_code == 200  # the web viewer answers

    files = {name: s.download(name, tmp_path) for name in RESULTS}
    trajectory = read_trajectory_json(files["trajectory.json"])
    assert len(trajectory) == progress["frames_posed"]
    assert len(read_tum(files["trajectory.tum"])) == len(trajectory)
    points, colors = read_points_ply(files["points.ply"])
    assert len(points) > 0 and colors.shape == (len(points), 3)
    splats = PlyData.read(str(files["splats.ply"]))["vertex"]
    assert splats.count > 0 and {"x", "y", "z", "opacity"} <= {p.name for p in splats.properties}
    run = json.loads(files["run.json"].read_text())
    assert run["stats"]["frames_posed"] == progress["frames_posed"] and run["error"] is None
    rerun = Path(sys.executable).parent / "rerun"
    verify = subprocess.run([str(rerun), "rrd", "verify", str(files["recording.rrd"])], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
