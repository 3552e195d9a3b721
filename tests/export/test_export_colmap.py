"""COLMAP export: pycolmap reads it back with our poses, intrinsics, points and observations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
from export_fixtures import exact_run

from stream4d.export import ExportError, export, load_scene
from stream4d.geometry import Sim3
from stream4d.outputs import OutputWriter, PosedFrame, read_frame_images, read_sparse, read_trajectory_json

REPO = Path(__file__).resolve().parents[2]


def _w2c(image) -> np.ndarray:
    T = np.eye(4)
    T[:3] = image.cam_from_world().matrix()
    return T


def test_run_exports_a_model_pycolmap_reads_with_our_poses_intrinsics_and_points(finished_run, tmp_path):
    model = export(finished_run, "colmap", tmp_path / "colmap") / "sparse" / "0"
    rec = pycolmap.Reconstruction(str(model))
    scene = load_scene(finished_run)
    frames = {f.index: f for f in read_trajectory_json(finished_run / "trajectory.json")}
    images = read_frame_images(finished_run)

    assert rec.num_images() == len(frames) == len(scene.views)
    assert rec.num_points3D() == scene.num_points > 500
    assert sum(p.track.length() for p in rec.points3D.values()) == len(scene.obs_point)
    for im in rec.images.values():
        index = int(Path(im.name).stem)
        f = frames[index]
        np.testing.assert_allclose(_w2c(im), np.linalg.inv(f.c2w), atol=1e-6)
        K = images[index].pixel_map @ f.K  # trajectory.json's K is in input pixels
        cam = rec.cameras[im.camera_id]
        assert cam.model == pycolmap.CameraModelId.SIMPLE_PINHOLE  # the clip's K has fx == fy
        np.testing.assert_allclose(cam.params, [K[0, 0], K[0, 2] + 0.5, K[1, 2] + 0.5], atol=1e-9)
        pixels = cv2.imread(str(model.parent.parent / "images" / im.name))
        assert pixels.shape == (cam.height, cam.width, 3)
    xyz = np.array([rec.points3D[k + 1].xyz for k in range(scene.num_points)])
    np.testing.assert_allclose(xyz, scene.points, atol=1e-9)
    assert rec.compute_mean_reprojection_error() <= 1.5


def test_text_model_holds_the_same_reconstruction(finished_run, tmp_path):
    binary = pycolmap.Reconstruction(str(export(finished_run, "colmap", tmp_path / "b") / "sparse" / "0"))
    text_dir = export(finished_run, "colmap", tmp_path / "t", text=True) / "sparse" / "0"
    assert sorted(p.name for p in text_dir.iterdir()) == ["cameras.txt", "images.txt", "points3D.txt"]
    text = pycolmap.Reconstruction(str(text_dir))
    assert (text.num_images(), text.num_points3D()) == (binary.num_images(), binary.num_points3D())
    for k, im in binary.images.items():
        np.testing.assert_allclose(_w2c(text.images[k]), _w2c(im), atol=1e-12)
    assert text.compute_mean_reprojection_error() == pytest.approx(binary.compute_mean_reprojection_error(), rel=1e-9)


def test_exact_geometry_reprojects_to_zero_with_pinhole_and_half_pixel_centres(tmp_path):
    """Exact projections stay exact through the export: any pixel-centre or pose convention slip shows."""
    truth = exact_run(tmp_path / "run")
    rec = pycolmap.Reconstruction(str(export(tmp_path / "run", "colmap", tmp_path / "colmap") / "sparse" / "0"))
    assert rec.num_images() == 4 and rec.num_points3D() == len(truth["points"])
    cam = next(iter(rec.cameras.values()))
    assert cam.model == pycolmap.CameraModelId.PINHOLE and (cam.width, cam.height) == (160, 120)
    K = truth["K"]
    np.testing.assert_allclose(cam.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
    assert rec.compute_mean_reprojection_error() < 1e-9
    for im in rec.images.values():
        for p2d in im.points2D:  # COLMAP's own projection lands on our pixel + 0.5
            proj = cam.img_from_cam(im.cam_from_world() * rec.points3D[p2d.point3D_id].xyz)
            np.testing.assert_allclose(proj, p2d.xy, atol=1e-9)


def test_run_without_sparse_points_exports_cameras_and_images_only(tmp_path):
    exact_run(tmp_path / "run", with_sparse=False)
    dst = export(tmp_path / "run", "colmap", tmp_path / "colmap")
    rec = pycolmap.Reconstruction(str(dst / "sparse" / "0"))
    assert (rec.num_images(), rec.num_points3D()) == (4, 0)
    assert sorted(p.name for p in (dst / "images").iterdir()) == [f"{k:06d}.jpg" for k in range(4)]


def test_observations_beyond_the_reprojection_bound_are_dropped(tmp_path):
    truth = exact_run(tmp_path / "run")
    sparse = read_sparse(tmp_path / "run")
    full = load_scene(tmp_path / "run")
    assert len(full.obs_point) == len(sparse.obs_point)
    c2w = truth["c2w"][2].copy()
    c2w[:3, 3] += [0.05, 0, 0]  # move one camera: its observations go several px off
    frames = read_trajectory_json(tmp_path / "run" / "trajectory.json")
    frames[2].c2w = c2w
    out = tmp_path / "moved"
    with OutputWriter(out) as w:
        for f in frames:
            w.add_frame(f)
            w.write_frame_image(f.index, np.zeros((120, 160, 3), np.uint8), np.diag([0.5, 0.5, 1.0]))
        w.write_sparse(0, 0, np.arange(4), truth["sparse"])
    scene = load_scene(out, max_reproj_px=1.0)
    assert 2 not in scene.obs_view.tolist()
    assert scene.reprojection_errors().max() < 1e-6


def test_reattached_segment_moves_its_sparse_points(tmp_path):
    truth = exact_run(tmp_path / "unused")
    with OutputWriter(tmp_path / "run") as w:
        w.write_sparse(0, 0, np.arange(4), truth["sparse"])
        w.write_sparse(1, 1, np.arange(4), truth["sparse"])
        link = Sim3(2.0, np.eye(3), np.array([1.0, 0, 0]))
        w.remap_segment(1, 0, link)
    assert len(read_sparse(tmp_path / "run", segment=1).points) == 0
    both = read_sparse(tmp_path / "run", segment=0)
    P = len(truth["points"])
    np.testing.assert_allclose(both.points[:P], truth["points"])
    np.testing.assert_allclose(both.points[P:], link.apply(truth["points"]))
    assert both.obs_point.max() == 2 * P - 1


def test_folder_without_frames_is_a_clear_error(tmp_path):
    with OutputWriter(tmp_path / "run") as w:  # a run made with save_frames=False
        w.add_frame(PosedFrame(0, 0.0, "a.png", np.eye(4), np.diag([100.0, 100.0, 1.0]), 64, 48))
    with pytest.raises(ExportError, match="frames"):
        load_scene(tmp_path / "run")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream4d.cli", "export", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_export_command_writes_both_formats_and_refuses_bad_input(tmp_path):
    exact_run(tmp_path / "run")
    proc = _cli(str(tmp_path / "run"), "--format", "colmap,nerfstudio", "--to", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "colmap" / "sparse" / "0" / "points3D.bin").is_file()
    assert (tmp_path / "out" / "nerfstudio" / "transforms.json").is_file()
    proc = _cli(str(tmp_path / "run"), "--format", "ply")
    assert proc.returncode == 2 and "unknown export format" in proc.stderr
    proc = _cli(str(tmp_path / "nowhere"), "--format", "colmap")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_default_segment_is_the_one_the_map_files_show(tmp_path):
    # Tracking lost late leaves a small last world; points.ply / splats.ply show the largest one
    # (run.json "map": {"segment"}), and so must the export, not the world the stream ended in.
    exact_run(tmp_path / "run")
    run_json = tmp_path / "run" / "run.json"
    run_json.write_text(json.dumps({"stats": {"segment": 1}, "map": {"segment": 0}}))
    scene = load_scene(tmp_path / "run")
    assert scene.segment == 0 and len(scene.views) == 4
    run_json.write_text(json.dumps({"stats": {"segment": 1}, "map": {}}))
    with pytest.raises(ExportError, match="segment 1"):
        load_scene(tmp_path / "run")
