"""nerfstudio export: transforms.json re-read with nerfstudio's conventions sees what trajectory.json sees."""

from __future__ import annotations

import json

import cv2
import numpy as np
from export_fixtures import exact_run

from stream4d.export import export, load_scene
from stream4d.outputs import read_frame_images, read_points_ply, read_trajectory_json, write_points_ply


def nerfstudio_pixel(frame: dict, X: np.ndarray) -> np.ndarray:
    """Where nerfstudio sees world points ``X`` [N, 3] in a transforms.json frame, in our pixel units.

    nerfstudio (``Cameras.generate_rays``) casts the ray of image coordinate (x, y) along
    ``c2w[:3, :3] @ [(x - cx) / fl_x, -(y - cy) / fl_y, -1]`` from ``c2w[:3, 3]``, and samples
    pixel (row i, column j) at (j + 0.5, i + 0.5); inverting that gives the pixel of a point.
    """
    c2w = np.asarray(frame["transform_matrix"], np.float64)
    local = (X - c2w[:3, 3]) @ c2w[:3, :3]  # camera frame, OpenGL axes
    depth = -local[:, 2]  # the camera looks down -z
    x = frame["cx"] + frame["fl_x"] * local[:, 0] / depth
    y = frame["cy"] - frame["fl_y"] * local[:, 1] / depth
    return np.stack([x, y], axis=1) - 0.5  # pixel centres back at integers


def nerfstudio_ray(frame: dict, pixel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origin [3] and unit directions [N, 3] nerfstudio casts through our pixels [N, 2]."""
    c2w = np.asarray(frame["transform_matrix"], np.float64)
    x, y = pixel[:, 0] + 0.5, pixel[:, 1] + 0.5
    d = np.stack([(x - frame["cx"]) / frame["fl_x"], -(y - frame["cy"]) / frame["fl_y"], -np.ones_like(x)], axis=1)
    d = d @ c2w[:3, :3].T
    return c2w[:3, 3], d / np.linalg.norm(d, axis=1, keepdims=True)


def trajectory_pixel(c2w: np.ndarray, K_input: np.ndarray, pixel_map: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Our own projection: trajectory.json's pose and input-pixel K, mapped to the written image."""
    w2c = np.linalg.inv(c2w)
    pc = X @ w2c[:3, :3].T + w2c[:3, 3]
    uv = pc @ (pixel_map @ K_input).T
    return uv[:, :2] / uv[:, 2:]


def _check_against_trajectory(run, transforms: dict, X: np.ndarray) -> int:
    frames = {f.index: f for f in read_trajectory_json(run / "trajectory.json")}
    images = read_frame_images(run)
    checked = 0
    for frame in transforms["frames"]:
        f = frames[frame["index"]]
        ours = trajectory_pixel(f.c2w, f.K, images[f.index].pixel_map, X)
        np.testing.assert_allclose(nerfstudio_pixel(frame, X), ours, atol=1e-6)
        origin, d = nerfstudio_ray(frame, ours)  # and the ray through that pixel passes through the point
        off = (X - origin) - ((X - origin) * d).sum(1, keepdims=True) * d
        assert np.abs(off).max() < 1e-6 * np.abs(X - origin).max()
        checked += 1
    return checked


def test_transforms_json_projects_points_where_trajectory_json_does(finished_run, tmp_path):
    dst = export(finished_run, "nerfstudio", tmp_path / "ns")
    transforms = json.loads((dst / "transforms.json").read_text())
    scene = load_scene(finished_run)
    assert _check_against_trajectory(finished_run, transforms, scene.points[:500]) == len(scene.views)
    for frame in transforms["frames"]:
        pixels = cv2.imread(str(dst / frame["file_path"]))
        assert pixels.shape == (frame["h"], frame["w"], 3)
    points, _ = read_points_ply(dst / transforms["ply_file_path"])
    np.testing.assert_allclose(points, scene.points, atol=1e-5 * np.abs(scene.points).max())


def test_exact_geometry_lands_on_the_observed_pixels(tmp_path):
    """Exact observations: nerfstudio's projection of each point hits its observation to 1e-9 px, with
    fx != fy and an input twice the size of the written frames."""
    truth = exact_run(tmp_path / "run")
    dst = export(tmp_path / "run", "nerfstudio", tmp_path / "ns")
    transforms = json.loads((dst / "transforms.json").read_text())
    assert "applied_transform" not in transforms  # points and poses share the run's world
    assert _check_against_trajectory(tmp_path / "run", transforms, truth["points"]) == 4
    sparse = truth["sparse"]
    for v, frame in enumerate(transforms["frames"]):
        rows = sparse.obs_view == v
        got = nerfstudio_pixel(frame, truth["points"][sparse.obs_point[rows]])
        np.testing.assert_allclose(got, sparse.obs_xy[rows], atol=1e-9)
        assert (frame["w"], frame["h"]) == (160, 120)


def test_run_without_tracks_points_nerfstudio_at_its_points_ply(tmp_path):
    """A backend without feature tracks (VGGT): the fused points.ply of the same world stands in."""
    truth = exact_run(tmp_path / "run", with_sparse=False)
    dst = export(tmp_path / "run", "nerfstudio", tmp_path / "bare")
    assert "ply_file_path" not in json.loads((dst / "transforms.json").read_text())
    write_points_ply(tmp_path / "run" / "points.ply", truth["points"], np.zeros((len(truth["points"]), 3), np.uint8))
    dst = export(tmp_path / "run", "nerfstudio", tmp_path / "ns")
    transforms = json.loads((dst / "transforms.json").read_text())
    points, _ = read_points_ply(dst / transforms["ply_file_path"])
    np.testing.assert_allclose(points, truth["points"], atol=1e-5)
