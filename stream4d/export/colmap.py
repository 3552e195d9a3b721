"""COLMAP sparse model export: ``cameras``, ``images``, ``points3D`` (.bin or .txt) and the images.

Layout written under ``dst``::

    dst/images/000042.jpg             the model-resolution frames the poses refer to
    dst/sparse/0/cameras.bin          (or .txt with text=True)
    dst/sparse/0/images.bin
    dst/sparse/0/points3D.bin

This is the folder 3DGS training and ``pycolmap.Reconstruction(dst / "sparse/0")`` read.
Conventions (COLMAP's "Output Format" documentation): little-endian binary; poses are
world-to-camera as a unit quaternion (w, x, y, z) and a translation, with the same camera
axes as ours (x right, y down, z forward); pixel coordinates put the centre of the top-left
pixel at (0.5, 0.5), so every principal point and observation is ours + 0.5.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream4d.export.scene import ExportScene
from stream4d.geometry import quat_wxyz

SIMPLE_PINHOLE = 0  # COLMAP camera model ids and their parameters
PINHOLE = 1
SIMPLE_RADIAL = 2
OPENCV = 4
_MODEL_NAMES = {SIMPLE_PINHOLE: "SIMPLE_PINHOLE", PINHOLE: "PINHOLE", SIMPLE_RADIAL: "SIMPLE_RADIAL", OPENCV: "OPENCV"}
PIXEL_CENTRE = 0.5  # our pixel centres are at integers, COLMAP's at half-integers


@dataclass
class ColmapCamera:
    camera_id: int
    model: int
    width: int
    height: int
    # SIMPLE_PINHOLE: f, cx, cy; PINHOLE: fx, fy, cx, cy; SIMPLE_RADIAL: f, cx, cy, k;
    # OPENCV: fx, fy, cx, cy, k1, k2, p1, p2 (COLMAP pixels)
    params: tuple[float, ...]


@dataclass
class ColmapImage:
    image_id: int
    qvec: np.ndarray  # [4] w, x, y, z of the world-to-camera rotation, w >= 0
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str
    xy: np.ndarray  # float64 [N, 2] observations, COLMAP pixels
    point3d_ids: np.ndarray  # int64 [N], -1 for none


@dataclass
class ColmapPoint:
    point3d_id: int
    xyz: np.ndarray  # [3]
    rgb: np.ndarray  # uint8 [3]
    error: float  # mean reprojection error of the track, px
    track: np.ndarray  # int64 [T, 2] (image_id, point2D_idx)


def camera_params(K: np.ndarray, radial_k1: float = 0.0) -> tuple[int, tuple[float, ...]]:
    """COLMAP model id and parameters of our ``K`` (pixel centres at integers) and radial coefficient
    (``geometry.radial_distorted``): SIMPLE_PINHOLE when fx == fy as estimated, else PINHOLE; with a
    radial coefficient SIMPLE_RADIAL, or OPENCV when fx != fy. Raises ValueError on a real skew."""
    fx, fy = float(K[0, 0]), float(K[1, 1])
    cx, cy = float(K[0, 2]) + PIXEL_CENTRE, float(K[1, 2]) + PIXEL_CENTRE
    # A skew that moves no pixel by a hundredth (calibration files carry such round-off) is dropped.
    if abs(float(K[0, 1])) * 2.0 * cy / fy > 0.01:
        raise ValueError(f"K has skew {K[0, 1]}: COLMAP's pinhole models have none")
    k1 = float(radial_k1)
    if fx == fy:
        return (SIMPLE_RADIAL, (fx, cx, cy, k1)) if k1 else (SIMPLE_PINHOLE, (fx, cx, cy))
    return (OPENCV, (fx, fy, cx, cy, k1, 0.0, 0.0, 0.0)) if k1 else (PINHOLE, (fx, fy, cx, cy))


def w2c_qvec_tvec(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's (qvec w, x, y, z with w >= 0; tvec) of a camera-to-world pose."""
    R = c2w[:3, :3].T
    t = -R @ c2w[:3, 3]
    return quat_wxyz(R), t


def build_model(scene: ExportScene) -> tuple[list[ColmapCamera], list[ColmapImage], list[ColmapPoint]]:
    """The COLMAP records of a scene: one camera per distinct (size, intrinsics), image ids 1..N in
    view order, point ids 1..P in point order; each observation is its own 2D point."""
    cameras: dict[tuple, ColmapCamera] = {}
    images: list[ColmapImage] = []
    xy = scene.obs_xy + PIXEL_CENTRE
    by_view = np.argsort(scene.obs_view, kind="stable")
    starts = np.searchsorted(scene.obs_view[by_view], np.arange(len(scene.views) + 1))
    point2d_idx = np.empty(len(scene.obs_view), np.int64)  # position of each observation in its image
    for k, v in enumerate(scene.views):
        model, params = camera_params(v.K, v.radial_k1)
        key = (model, v.width, v.height, params)
        if key not in cameras:
            cameras[key] = ColmapCamera(len(cameras) + 1, model, v.width, v.height, params)
        rows = by_view[starts[k]:starts[k + 1]]
        point2d_idx[rows] = np.arange(len(rows))
        q, t = w2c_qvec_tvec(v.c2w)
        images.append(ColmapImage(k + 1, q, t, cameras[key].camera_id, v.name, xy[rows], scene.obs_point[rows] + 1))
    errors = scene.reprojection_errors()
    by_point = np.argsort(scene.obs_point, kind="stable")
    pstarts = np.searchsorted(scene.obs_point[by_point], np.arange(scene.num_points + 1))
    points = []
    for p in range(scene.num_points):
        rows = by_point[pstarts[p]:pstarts[p + 1]]
        track = np.stack([scene.obs_view[rows] + 1, point2d_idx[rows]], axis=1)
        points.append(ColmapPoint(p + 1, scene.points[p], scene.colors[p], float(errors[rows].mean()), track))
    return list(cameras.values()), images, points


# ---- binary ------------------------------------------------------------------------------

def _write_cameras_bin(path: Path, cameras: list[ColmapCamera]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(cameras)))
        for c in cameras:
            f.write(struct.pack("<iiQQ", c.camera_id, c.model, c.width, c.height))
            f.write(struct.pack(f"<{len(c.params)}d", *c.params))


def _write_images_bin(path: Path, images: list[ColmapImage]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for im in images:
            f.write(struct.pack("<i4d3di", im.image_id, *im.qvec, *im.tvec, im.camera_id))
            f.write(im.name.encode("utf-8") + b"\x00")
            f.write(struct.pack("<Q", len(im.xy)))
            rec = np.empty(len(im.xy), dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
            rec["x"], rec["y"], rec["id"] = im.xy[:, 0], im.xy[:, 1], im.point3d_ids
            f.write(rec.tobytes())


def _write_points_bin(path: Path, points: list[ColmapPoint]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(points)))
        for p in points:
            f.write(struct.pack("<Q3d3Bd", p.point3d_id, *p.xyz, *(int(c) for c in p.rgb), p.error))
            f.write(struct.pack("<Q", len(p.track)))
            f.write(np.ascontiguousarray(p.track, dtype="<i4").tobytes())


# ---- text --------------------------------------------------------------------------------

def _write_cameras_txt(path: Path, cameras: list[ColmapCamera]) -> None:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]", f"# Number of cameras: {len(cameras)}"]
    lines += [" ".join([str(c.camera_id), _MODEL_NAMES[c.model], str(c.width), str(c.height),
                        *(repr(float(p)) for p in c.params)]) for c in cameras]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_images_txt(path: Path, images: list[ColmapImage]) -> None:
    n_obs = sum(len(im.xy) for im in images)
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(images)}, mean observations per image: {n_obs / max(len(images), 1)}"]
    for im in images:
        lines.append(" ".join([str(im.image_id), *(repr(float(v)) for v in (*im.qvec, *im.tvec)),
                               str(im.camera_id), im.name]))
        lines.append(" ".join(f"{x!r} {y!r} {int(i)}" for (x, y), i in zip(im.xy.tolist(), im.point3d_ids)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_points_txt(path: Path, points: list[ColmapPoint]) -> None:
    mean_track = sum(len(p.track) for p in points) / max(len(points), 1)
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(points)}, mean track length: {mean_track}"]
    for p in points:
        lines.append(" ".join([str(p.point3d_id), *(repr(float(v)) for v in p.xyz), *(str(int(c)) for c in p.rgb),
                               repr(p.error), *(f"{int(i)} {int(j)}" for i, j in p.track)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def copy_images(scene: ExportScene, images_dir: Path) -> None:
    """The views' frames under ``images_dir`` with their export names (hard links when possible)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for v in scene.views:
        dst = images_dir / v.name
        dst.unlink(missing_ok=True)
        try:
            dst.hardlink_to(v.image_path)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(v.image_path, dst)


def write_colmap(scene: ExportScene, dst: str | Path, text: bool = False) -> Path:
    """Write the COLMAP model of ``scene`` to ``dst/sparse/0`` and its images to ``dst/images``;
    returns the model folder."""
    dst = Path(dst)
    model_dir = write_model(scene, dst / "sparse" / "0", text)
    copy_images(scene, dst / "images")
    return model_dir


def write_model(scene: ExportScene, model_dir: str | Path, text: bool = False) -> Path:
    """Write only the COLMAP model files (cameras, images, points3D) of ``scene`` to ``model_dir``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    cameras, images, points = build_model(scene)
    ext = "txt" if text else "bin"
    for name in ("cameras", "images", "points3D"):  # a stale model of the other kind would be read first
        (model_dir / f"{name}.{'bin' if text else 'txt'}").unlink(missing_ok=True)
    writers = ((_write_cameras_txt, _write_images_txt, _write_points_txt) if text
               else (_write_cameras_bin, _write_images_bin, _write_points_bin))
    for write, name, records in zip(writers, ("cameras", "images", "points3D"), (cameras, images, points)):
        write(model_dir / f"{name}.{ext}", records)
    return model_dir
