"""Persistent maps through the service: every session keeps its map, and a session of the same client
(the earlier session's token) starts from it, relocalised in its world."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import av
import pytest
from conftest import Sess, assert_error

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "demo.mp4"
OPTIONS = {"resolution": 256, "window": 8, "overlap": 2, "viewer": False}


def write_clip(frames, path: Path, rate) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "12"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    """The demo clip's frames 0-17 and 12-29: two overlapping visits of the same room."""
    folder = tmp_path_factory.mktemp("halves")
    with av.open(str(DEMO)) as container:
        rate = container.streams.video[0].average_rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return write_clip(frames[:18], folder / "a.mp4", rate), write_clip(frames[12:30], folder / "b.mp4", rate)


def test_a_session_started_from_an_earlier_sessions_map_continues_it(client, halves):
    first = Sess(client, OPTIONS)
    assert first.upload(halves[0], filename="a.mp4").status_code == 202
    assert first.wait()["state"] == "completed"
    r = client.get(f"/sessions/{first.id}/results/map.zip", headers=first.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert {"map.json", "keyframes.npz", "trajectory.json", "gaussians.npz"} <= set(zf.namelist())
        first_map = json.loads(zf.read("map.json"))
    assert first_map["version"] == 1 and first_map["sections"]["keyframes"]["count"] >= 2

    # Another client's request (no token, or another session's token) cannot read the map.
    other = Sess(client, OPTIONS)
    assert_error(client.post("/sessions", json={**OPTIONS, "map_from": first.id}), 401, "missing_token")
    assert_error(client.post("/sessions", json={**OPTIONS, "map_from": first.id}, headers=other.headers),
                 403, "wrong_token")
    assert_error(client.post("/sessions", json={**OPTIONS, "map_from": other.id}, headers=other.headers),
                 409, "map_not_ready")

    r = client.post("/sessions", json={**OPTIONS, "map_from": first.id}, headers=first.headers)
    assert r.status_code == 201, r.text
    second = Sess.__new__(Sess)
    second.client, second.id, second.token = client, r.json()["id"], r.json()["token"]
    second.headers = {"Authorization": f"Bearer {second.token}"}
    assert second.upload(halves[1], filename="b.mp4").status_code == 202
    assert second.wait()["state"] == "completed"
    run = client.get(f"/sessions/{second.id}/results/run.json", headers=second.headers).json()
    assert run["map"]["loaded"]["relocalised"], run["map"]
    assert run["map"]["saved"]["includes_loaded_map"]
    frames = client.get(f"/sessions/{second.id}/results/trajectory.json", headers=second.headers).json()["frames"]
    assert {f["segment"] for f in frames} == {0}  # one world: the first session's
    with zipfile.ZipFile(io.BytesIO(client.get(f"/sessions/{second.id}/results/map.zip",
                                               headers=second.headers).content)) as zf:
        union = json.loads(zf.read("map.json"))
    assert len(union["runs"]) == 2 and union["sections"]["trajectory"]["frames"] == 36
