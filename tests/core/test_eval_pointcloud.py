"""Point-cloud accuracy / completeness / Chamfer with Open3D KD-trees."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stream4d.evaluation import EvaluationError, pointcloud_metrics
from stream4d.geometry import Sim3


def grid(n: int = 12, spacing: float = 1.0) -> np.ndarray:
    """Points [n^3, 3] on a cubic lattice."""
    ax = np.arange(n) * spacing
    return np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)


def test_known_offset_gives_the_offset_as_chamfer():
    gt = grid()
    m = pointcloud_metrics(gt + [0.0, 0.0, 0.05], gt)  # offset well below the lattice spacing
    assert m.accuracy == pytest.approx(0.05) and m.completeness == pytest.approx(0.05)
    assert m.chamfer == pytest.approx(0.05)
    assert m.num_pred == m.num_gt == 12 ** 3


def test_partial_prediction_is_accurate_but_incomplete():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    m = pointcloud_metrics(gt[:2], gt)
    assert m.accuracy == 0.0
    assert m.completeness == pytest.approx((0 + 0 + 1 + 2) / 4)
    assert m.chamfer == pytest.approx(0.375)
    t = pointcloud_metrics(gt[:2], gt, threshold=0.5)
    assert (t.precision, t.recall, t.fscore) == pytest.approx((1.0, 0.5, 2 / 3))


def test_trajectory_sim3_is_applied_to_predicted_points():
    gt = grid(8)
    to_pred = Sim3(0.3, Rotation.from_euler("xyz", [10, 50, -30], degrees=True).as_matrix(), np.array([5.0, 1, 2]))
    pred = to_pred.apply(gt)
    assert pointcloud_metrics(pred, gt).chamfer > 1.0
    assert pointcloud_metrics(pred, gt, sim3=to_pred.inverse()).chamfer == pytest.approx(0.0, abs=1e-9)


def test_voxel_downsampling_reduces_both_clouds():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 1, (20000, 3))
    m = pointcloud_metrics(gt + rng.normal(0, 0.001, gt.shape), gt, voxel_size=0.1)
    # The voxel grid starts at the cloud's min corner, so a unit cube spans at most 11^3 voxels.
    assert m.num_gt <= 11 ** 3 and m.num_pred <= 11 ** 3 and m.voxel_size == 0.1
    assert m.chamfer < 0.05


def test_bad_point_clouds_raise_clear_errors():
    with pytest.raises(ValueError, match="predicted points must be \\[N, 3\\]"):
        pointcloud_metrics(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(EvaluationError, match="reference point cloud has no finite points"):
        pointcloud_metrics(np.zeros((5, 3)), np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        pointcloud_metrics(np.zeros((5, 3)), np.zeros((5, 3)), voxel_size=0.0)
