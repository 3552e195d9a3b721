"""One global bundle adjustment of a finished run's keyframes and sparse tracks (pycolmap).

The windows are adjusted one at a time and chained by Sim(3); what the chaining leaves (scale drift,
small bends between windows) stays in the trajectory. This adjusts every pose and point of one world
segment together, with the loss the window SfM minimises (Huber, ``loss_scale_px``). Intrinsics
stay fixed (the windows' own, as the observations were measured) unless ``refine_focal``: a
self-calibrated stream's one camera then has its focal length adjusted with everything else (the
principal point stays: docs/benchmarks.md, "Principal point"). pycolmap is an optional dependency
(the ``ba`` extra); ``require_pycolmap`` tells early whether it is there.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from stream4d.export.colmap import write_model
from stream4d.export.scene import ExportScene


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
    points: np.ndarray  # float64 [P, 3] scene.points after the adjustment
    reprojection_before_px: float  # mean reprojection error over every observation
    reprojection_after_px: float
    focal_scale: float = 1.0  # adjusted / given focal length of the one camera (1.0 when held fixed)


def bundle_adjust(scene: ExportScene, loss_scale_px: float = 1.5, refine_focal: bool = False) -> AdjustedScene:
    """Adjust every pose and point of ``scene`` (Huber loss at ``loss_scale_px``; intrinsics fixed, or
    the focal length too when ``refine_focal``: every view must then share one K).
    The gauge (world frame and scale) is pycolmap's choice; the caller maps its outputs along."""
    require_pycolmap()
    import pycolmap

    with tempfile.TemporaryDirectory(prefix="stream4d-ba-") as tmp:
        rec = pycolmap.Reconstruction(str(write_model(scene, tmp)))
    if refine_focal and rec.num_cameras() != 1:
        raise ValueError(f"refine_focal needs one shared camera, the scene has {rec.num_cameras()}")
    focal_before = _focal(rec)
    before = float(rec.compute_mean_reprojection_error())
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.refine_focal_length = bool(refine_focal)
    options.refine_principal_point = False
    options.refine_extra_params = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.HUBER
    options.ceres.loss_function_scale = loss_scale_px
    pycolmap.bundle_adjustment(rec, options)
    rec.update_point_3d_errors()
    after = float(rec.compute_mean_reprojection_error())
    c2w = np.tile(np.eye(4), (len(scene.views), 1, 1))
    for k in range(len(scene.views)):  # image ids are 1..N in view order (export.colmap.build_model)
        w2c = np.eye(4)
        w2c[:3] = rec.images[k + 1].cam_from_world().matrix()
        c2w[k] = np.linalg.inv(w2c)
    points = np.array(scene.points, np.float64, copy=True)
    for p in range(scene.num_points):  # point ids are 1..P in point order
        if rec.exists_point3D(p + 1):
            points[p] = rec.points3D[p + 1].xyz
    return AdjustedScene(c2w, points, before, after, _focal(rec) / focal_before)


def _focal(rec) -> float:
    """The first camera's focal length in pixels (fx of PINHOLE, f of SIMPLE_PINHOLE)."""
    return float(next(iter(rec.cameras.values())).params[0])

