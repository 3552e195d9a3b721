"""Point-cloud accuracy and completeness (nearest-neighbour distances, Open3D KD-trees).

- accuracy: mean distance from each predicted point to the nearest reference point
- completeness: mean distance from each reference point to the nearest predicted point
- chamfer: mean of the two

The prediction is first mapped into the reference frame with the trajectory's
Sim(3); both clouds may be voxel-downsampled first (one point per voxel) to
bound the cost and to even out density differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from stream4d.evaluation.trajectory import EvaluationError
from stream4d.geometry import Sim3

if TYPE_CHECKING:
    import open3d as o3d


@dataclass
class PointCloudMetrics:
    accuracy: float  # mean pred -> GT distance, reference units
    completeness: float  # mean GT -> pred distance
    chamfer: float  # (accuracy + completeness) / 2
    accuracy_median: float
    completeness_median: float
    num_pred: int  # after downsampling
    num_gt: int
    voxel_size: float | None
    threshold: float | None = None
    precision: float | None = None  # fraction of pred points within threshold of GT
    recall: float | None = None  # fraction of GT points within threshold of pred
    fscore: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cloud(name: str, points: np.ndarray, voxel_size: float | None) -> o3d.geometry.PointCloud:
    import open3d as o3d  # imported here: it takes ~2 s and only point-cloud scoring needs it

    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{name} points must be [N, 3], got {pts.shape}")
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        raise EvaluationError(f"{name} point cloud has no finite points")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if voxel_size:
        pcd = pcd.voxel_down_sample(float(voxel_size))
    return pcd


def nearest_distances(src: o3d.geometry.PointCloud, dst: o3d.geometry.PointCloud) -> np.ndarray:
    """Distance ``[N_src]`` from each point of ``src`` to its nearest neighbour in ``dst`` (KD-tree)."""
    return np.asarray(src.compute_point_cloud_distance(dst), np.float64)


def pointcloud_metrics(pred: np.ndarray, gt: np.ndarray, sim3: Sim3 | None = None,
                       voxel_size: float | None = None, threshold: float | None = None) -> PointCloudMetrics:
    """Accuracy, completeness and Chamfer distance of ``pred [N, 3]`` against ``gt [M, 3]``.

    sim3: maps predicted points into the reference frame first (e.g. the trajectory's
    ``TrajectoryResult.sim3``). voxel_size: downsample both clouds, reference units.
    threshold: also report precision / recall / F-score at this distance.
    Non-finite points are dropped.
    """
    if voxel_size is not None and voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    pred = np.asarray(pred, np.float64)
    if sim3 is not None and pred.ndim == 2 and pred.shape[-1] == 3:
        pred = sim3.apply(pred)
    p = _cloud("predicted", pred, voxel_size)
    g = _cloud("reference", gt, voxel_size)
    d_pg = nearest_distances(p, g)
    d_gp = nearest_distances(g, p)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    out = PointCloudMetrics(
        accuracy=acc, completeness=comp, chamfer=0.5 * (acc + comp),
        accuracy_median=float(np.median(d_pg)), completeness_median=float(np.median(d_gp)),
        num_pred=len(d_pg), num_gt=len(d_gp), voxel_size=voxel_size,
    )
    if threshold is not None:
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        prec = float(np.mean(d_pg < threshold))
        rec = float(np.mean(d_gp < threshold))
        out.threshold = float(threshold)
        out.precision, out.recall = prec, rec
        out.fscore = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return out
