"""The voxel-hash index: frustum queries find every visible id and touch only nearby voxels."""

from __future__ import annotations

import numpy as np
import pytest

from memory.gaussians.spatial_index import VoxelHashIndex
from stream4d.geometry import project_points

W, H = 80, 60
K = np.array([[70.0, 0.0, 39.5], [0.0, 70.0, 29.5], [0.0, 0.0, 1.0]])


def look(yaw_deg: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.radians(yaw_deg)
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    c2w[:3, 3] = centre
    return c2w


def visible(points: np.ndarray, c2w: np.ndarray, z_max: float) -> np.ndarray:
    uv, z = project_points(points, K, c2w)
    return np.flatnonzero((z > 0) & (z <= z_max) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5)
                          & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5))


@pytest.fixture
def cloud() -> np.ndarray:
    return np.random.default_rng(0).uniform(-10, 10, (20000, 3))


def test_frustum_query_returns_every_visible_id_and_few_others(cloud):
    index = VoxelHashIndex(0.5)
    index.set(np.arange(len(cloud)), cloud)
    for yaw in (0, 70, 180):
        c2w = look(yaw, centre=(1.0, -0.5, 2.0))
        got = index.query_frustum(c2w, K, W, H, z_max=6.0)
        want = visible(cloud, c2w, 6.0)
        assert np.isin(want, got).all()
        # Only voxels touching the frustum: a small superset, far from the whole cloud.
        assert len(got) < 2.0 * len(want) + 200 and len(got) < 0.2 * len(cloud)


def test_moves_removals_and_reinsertions_are_seen_before_and_after_a_rebuild(cloud):
    index = VoxelHashIndex(0.5, rebuild_fraction=10.0)  # no automatic rebuild: exercise the change list
    ids = np.arange(len(cloud))
    index.set(ids, cloud)
    index.rebuild()
    c2w = look(0)
    target = np.array([0.0, 0.0, 3.0])
    moved = ids[:50]
    index.set(moved, np.tile(target, (50, 1)))  # move 50 ids in front of the camera
    gone = np.setdiff1d(visible(cloud, c2w, 6.0), moved)[:100]
    index.remove(gone)
    for _ in range(2):
        got = index.query_frustum(c2w, K, W, H, z_max=6.0)
        assert np.isin(moved, got).all()
        assert not np.isin(gone, got).any()
        assert len(index) == len(cloud) - len(gone)
        index.rebuild()
    # A removed id set again comes back.
    index.set(gone[:1], np.tile(target, (1, 1)))
    assert gone[0] in index.query_frustum(c2w, K, W, H, z_max=6.0)


def test_query_voxels_matches_a_brute_force_grouping(cloud):
    index = VoxelHashIndex(2.0)
    index.set(np.arange(len(cloud)), cloud)
    keys = index.keys(cloud)
    chosen = np.unique(keys)[::7]
    np.testing.assert_array_equal(np.sort(index.query_voxels(chosen)), np.flatnonzero(np.isin(keys, chosen)))
    centres = index.voxel_centres(keys[:10])
    assert np.all(np.abs(centres - cloud[:10]) <= 1.0 + 1e-9)  # within half a voxel per axis


def test_index_rejects_a_non_positive_voxel_size():
    with pytest.raises(ValueError, match="voxel_size"):
        VoxelHashIndex(0.0)
