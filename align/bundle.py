"""One global bundle adjustment of a finished run's keyframes and sparse tracks (pycolmap).

The windows are adjusted one at a time and chained by Sim(3); what the chaining leaves (scale drift,
small bends between windows) stays in the trajectory. This adjusts every pose and point of one world
segment together, with the loss the window SfM minimises (Huber, ``loss_scale_px``). Intrinsics
stay fixed (the windows' own, as the observations were measured) unless ``refine_focal``: a
self-calibrated stream's one camera then has its focal length adjusted with everything else (the
principal point stays: docs/benchmarks.md, "Principal point"), and with ``refine_radial`` one radial
distortion coefficient too (COLMAP's SIMPLE_RADIAL, ``geometry.radial_distorted``). pycolmap is an optional dependency
(the ``ba`` extra); ``require_pycolmap`` tells early whether it is there.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from stream4d.export.colmap import write_model
from stream4d.export.scene import ExportScene

FUNCTION_TOLERANCE = 1e-6  # relative cost change that ends the adjustment
MAX_ITERATIONS = 100  # pycolmap's default, kept as the bound


class BundleAdjustmentUnavailable(RuntimeError):
    """pycolmap is not installed."""


def require_pycolmap() -> None:
    """Raise BundleAdjustmentUnavailable now rather than at the end of a run."""
    import cv2  # noqa: F401 - before pycolmap: pycolmap loaded first breaks cv2's PNG writer

    try:
        import pycolmap  # noqa: F401
    except ImportError as exc:
        raise BundleAdjustmentUnavailable(
            "--final-ba needs pycolmap: pip install 'stream4d[ba]' (or pycolmap>=3.12,<5)") from exc


@dataclass
class AdjustedScene:
    c2w: np.ndarray  # float64 [N, 4, 4] camera-to-world of scene.views, after the adjustment
    points: np.ndarray  # float64 [P, 3] scene.points after the adjustment; NaN rows: lost (below)
    reprojection_before_px: float  # mean reprojection error over the observations of the points kept
    reprojection_after_px: float
    focal_scale: float = 1.0  # adjusted / given focal length of the one camera (1.0 when held fixed)
    points_lost: int = 0  # points the adjustment sent off (beyond ``max_point_error_px``)
    radial_k1: float = 0.0  # the one camera's radial coefficient (0.0 unless refined)


def bundle_adjust(scene: ExportScene, loss_scale_px: float = 1.5, refine_focal: bool = False,
                  max_point_error_px: float = 4.0, refine_radial: bool = False) -> AdjustedScene:
    """Adjust every pose and point of ``scene`` (Huber loss at ``loss_scale_px``; intrinsics fixed, or
    the focal length too when ``refine_focal``, and a radial coefficient starting from the views'
    ``radial_k1`` when ``refine_radial``: every view must then share one K).
    The gauge (world frame and scale) is pycolmap's choice; the caller maps its outputs along.

    A point seen with little parallax can run off towards infinity (or behind a camera) while the
    rest converges; its mean error beyond ``max_point_error_px`` marks it lost (a NaN row in
    ``points``), and the errors before and after are compared over the points kept."""
    require_pycolmap()
    import pycolmap

    with tempfile.TemporaryDirectory(prefix="stream4d-ba-") as tmp:
        rec = pycolmap.Reconstruction(str(write_model(scene, tmp)))
    if (refine_focal or refine_radial) and rec.num_cameras() != 1:
        raise ValueError(f"refining the camera needs one shared camera, the scene has {rec.num_cameras()}")
    if refine_radial:
        _with_radial(rec, pycolmap)
    focal_before = _focal(rec)
    rec.update_point_3d_errors()
    error_before = {pid: (p.error, p.track.length()) for pid, p in rec.points3D.items()}
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.refine_focal_length = bool(refine_focal)
    options.refine_principal_point = False
    options.refine_extra_params = bool(refine_radial)
    options.ceres.loss_function_type = pycolmap.LossFunctionType.HUBER
    options.ceres.loss_function_scale = loss_scale_px
    # One thread: Ceres' threads sum in no fixed order, and a run given its own run.json must repeat
    # exactly (the final adjustment runs by default).
    options.ceres.solver_options.num_threads = 1
    # pycolmap's options stop only on a small gradient, so most runs take every iteration allowed while
    # the cost no longer moves; stop once an iteration changes it by less than this share (Ceres' default).
    options.ceres.solver_options.function_tolerance = FUNCTION_TOLERANCE
    options.ceres.solver_options.max_num_iterations = MAX_ITERATIONS
    pycolmap.bundle_adjustment(rec, options)
    rec.update_point_3d_errors()
    error_after = {pid: (p.error, p.track.length()) for pid, p in rec.points3D.items()}
    lost = {pid for pid, (e, _) in error_after.items() if not e <= max_point_error_px}
    kept = [pid for pid in error_after if pid not in lost]
    before, after = (_mean_error([errors[pid] for pid in kept]) for errors in (error_before, error_after))
    c2w = np.tile(np.eye(4), (len(scene.views), 1, 1))
    for k in range(len(scene.views)):  # image ids are 1..N in view order (export.colmap.build_model)
        w2c = np.eye(4)
        w2c[:3] = rec.images[k + 1].cam_from_world().matrix()
        c2w[k] = np.linalg.inv(w2c)
    points = np.array(scene.points, np.float64, copy=True)
    for p in range(scene.num_points):  # point ids are 1..P in point order
        if p + 1 in lost:
            points[p] = np.nan
        elif rec.exists_point3D(p + 1):
            points[p] = rec.points3D[p + 1].xyz
    camera = next(iter(rec.cameras.values()))
    radial = float(camera.params[3]) if camera.model == pycolmap.CameraModelId.SIMPLE_RADIAL else 0.0
    return AdjustedScene(c2w, points, before, after, _focal(rec) / focal_before, len(lost), radial)


def _with_radial(rec, pycolmap) -> None:
    """``rec``'s one camera as SIMPLE_RADIAL (a pinhole's becomes one with no distortion yet)."""
    camera_id, camera = next(iter(rec.cameras.items()))
    if camera.model == pycolmap.CameraModelId.SIMPLE_RADIAL:
        return
    if camera.model != pycolmap.CameraModelId.SIMPLE_PINHOLE:
        raise ValueError(f"a radial coefficient is refined for one focal length, not a {camera.model} camera")
    f, cx, cy = (float(p) for p in camera.params)
    camera.model = pycolmap.CameraModelId.SIMPLE_RADIAL
    camera.params = [f, cx, cy, 0.0]
    rec.cameras[camera_id] = camera


def _mean_error(errors: list[tuple[float, int]]) -> float:
    """Mean reprojection error over observations from (point mean error, track length) pairs; NaN if none."""
    if not errors:
        return float("nan")
    e, n = np.array(errors, np.float64).T
    return float((e * n).sum() / n.sum())


def _focal(rec) -> float:
    """The first camera's focal length in pixels (fx of PINHOLE, f of SIMPLE_PINHOLE and SIMPLE_RADIAL)."""
    return float(next(iter(rec.cameras.values())).params[0])

