"""nerfstudio export: ``transforms.json``, the images and a point cloud for ``ply_file_path``.

Layout written under ``dst``::

    dst/transforms.json
    dst/images/000042.jpg
    dst/sparse_pc.ply        the sparse points (or the run's points.ply without them)

nerfstudio's conventions (its ``nerfstudio-data`` parser and ``Cameras.generate_rays``):
``transform_matrix`` is camera-to-world with OpenGL camera axes (x right, y up, z back),
i.e. ours with the y and z columns negated; a pixel (row i, column j) is sampled at
(j + 0.5, i + 0.5) and its ray direction is ((x - cx) / fl_x, -(y - cy) / fl_y, -1), so
``cx``, ``cy`` are ours + 0.5. Points in ``ply_file_path`` are in the same world as the
poses (no ``applied_transform`` is written: the world is the run's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from stream4d.export.colmap import copy_images
from stream4d.export.scene import ExportScene, run_segment
from stream4d.outputs import POINTS_PLY, json_default, read_points_ply, read_trajectory_json, write_points_ply

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # flips the camera's y and z axes
PIXEL_CENTRE = 0.5
PLY_NAME = "sparse_pc.ply"


def opengl_c2w(c2w: np.ndarray) -> np.ndarray:
    """nerfstudio's ``transform_matrix`` of our camera-to-world (OpenCV axes)."""
    return np.asarray(c2w, np.float64) @ OPENCV_TO_OPENGL


def transforms_json(scene: ExportScene, image_dir: str = "images", ply_file: str | None = PLY_NAME) -> dict:
    """The ``transforms.json`` document of ``scene`` (per-frame intrinsics; the run's radial coefficient,
    ``k1`` of nerfstudio's OPENCV model, when its final adjustment estimated one)."""
    frames = []
    for v in scene.views:
        frames.append({
            "file_path": f"{image_dir}/{v.name}",
            "transform_matrix": opengl_c2w(v.c2w).tolist(),
            "fl_x": float(v.K[0, 0]), "fl_y": float(v.K[1, 1]),
            "cx": float(v.K[0, 2]) + PIXEL_CENTRE, "cy": float(v.K[1, 2]) + PIXEL_CENTRE,
            "w": int(v.width), "h": int(v.height),
            "source": v.source, "index": int(v.index),  # ours, ignored by nerfstudio
        })
    k1 = float(scene.views[0].radial_k1) if scene.views else 0.0  # one lens: a run's segment has one
    doc = {"camera_model": "OPENCV", "k1": k1, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames}
    if ply_file is not None:
        doc["ply_file_path"] = ply_file
    return doc


def write_nerfstudio(scene: ExportScene, dst: str | Path) -> Path:
    """Write ``dst/transforms.json``, ``dst/images`` and ``dst/sparse_pc.ply``; returns transforms.json.

    The point cloud is the sparse points when the run has them, else the run's ``points.ply``
    (same world frame) when it belongs to the exported segment, else none is referenced."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    ply = dst / PLY_NAME
    ply.unlink(missing_ok=True)
    if scene.num_points:
        write_points_ply(ply, scene.points, scene.colors)
    elif (scene.out_dir / POINTS_PLY).is_file() and _points_ply_in(scene):
        shutil.copyfile(scene.out_dir / POINTS_PLY, ply)
    copy_images(scene, dst / "images")
    doc = transforms_json(scene, ply_file=PLY_NAME if ply.is_file() else None)
    path = dst / "transforms.json"
    path.write_text(json.dumps(doc, indent=1, default=json_default), encoding="utf-8")
    return path


def _points_ply_in(scene: ExportScene) -> bool:
    """Whether points.ply holds points of the exported segment (it holds the run's final one)."""
    frames = read_trajectory_json(scene.out_dir / "trajectory.json")
    return run_segment(scene.out_dir, frames) == scene.segment and len(read_points_ply(scene.out_dir / POINTS_PLY)[0]) > 0
