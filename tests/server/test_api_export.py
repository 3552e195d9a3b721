"""Exports through the service: colmap.zip and transforms.json built from a finished session."""

from __future__ import annotations

import io
import zipfile

import cv2  # noqa: F401 - before pycolmap, whose own zlib otherwise breaks PNG writes in this process
import numpy as np
import pycolmap
from conftest import FAST_OPTIONS, VIDEOS, Sess, assert_error


def test_finished_session_offers_a_colmap_zip_and_transforms_json(client, tmp_path):
    s = Sess(client, {**FAST_OPTIONS, "target_fps": 2})
    r = s.upload(VIDEOS / "great_wall.mp4", filename="great_wall.mp4")
    assert r.status_code == 202, r.text
    assert s.wait()["state"] == "completed"
    trajectory = client.get(f"/sessions/{s.id}/results/trajectory.json", headers=s.headers).json()["frames"]
    run = client.get(f"/sessions/{s.id}/results/run.json", headers=s.headers).json()
    # The exports hold the world the map files show (one world unless tracking was lost on the way).
    shown = (run.get("map") or {}).get("segment", run["stats"]["segment"])
    trajectory = [f for f in trajectory if f["segment"] == shown]
    assert len(trajectory) >= 8

    r = client.get(f"/sessions/{s.id}/results/colmap.zip", headers=s.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "colmap")
    assert {"sparse/0/cameras.bin", "sparse/0/images.bin", "sparse/0/points3D.bin"} <= names
    rec = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    assert rec.num_images() == len(trajectory) and rec.num_points3D() > 0
    assert {f"images/{im.name}" for im in rec.images.values()} <= names
    by_index = {f["index"]: f for f in trajectory}
    for im in rec.images.values():
        c2w = np.asarray(by_index[int(im.name.split(".")[0])]["c2w"])
        np.testing.assert_allclose(im.cam_from_world().matrix(), np.linalg.inv(c2w)[:3], atol=1e-6)

    r = client.get(f"/sessions/{s.id}/results/transforms.json", headers=s.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    frames = r.json()["frames"]
    assert len(frames) == len(trajectory)
    opengl = np.diag([1.0, -1.0, -1.0, 1.0])  # nerfstudio's camera axes: ours with y and z flipped
    for f in frames:
        np.testing.assert_allclose(f["transform_matrix"], np.asarray(by_index[f["index"]]["c2w"]) @ opengl, atol=1e-12)
        assert f"images/{f['file_path'].split('/')[-1]}" in names


def test_exports_wait_for_the_session_to_end_and_need_its_token(client):
    s = Sess(client, FAST_OPTIONS)
    for name in ("colmap.zip", "transforms.json"):
        assert_error(client.get(f"/sessions/{s.id}/results/{name}", headers=s.headers), 409, "results_not_ready")
        assert client.get(f"/sessions/{s.id}/results/{name}").status_code == 401
