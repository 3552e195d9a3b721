"""SparseTracks: shape checks, view subsets, and moving with a Sim(3)."""

from __future__ import annotations

import numpy as np
import pytest

from stream4d.contracts import SparseTracks
from stream4d.geometry import Sim3


def _tracks() -> SparseTracks:
    points = np.array([[0.0, 0, 1], [1, 0, 2], [0, 1, 3]])
    obs_point = np.array([0, 0, 1, 1, 1, 2, 2])
    obs_view = np.array([0, 1, 0, 1, 2, 1, 2])
    obs_xy = np.arange(14, dtype=np.float64).reshape(7, 2)
    return SparseTracks(points, np.zeros((3, 3), np.uint8), obs_point, obs_view, obs_xy,
                        np.repeat(np.eye(3)[None], 3, axis=0))


def test_subset_renumbers_views_and_drops_points_seen_once():
    sub = _tracks().subset_views([2, 1])  # view 2 becomes 0, view 1 becomes 1; view 0 goes
    np.testing.assert_array_equal(sub.points, [[1, 0, 2], [0, 1, 3]])  # point 0 is left with one view
    np.testing.assert_array_equal(sub.obs_point, [0, 0, 1, 1])
    np.testing.assert_array_equal(sub.obs_view, [1, 0, 1, 0])
    np.testing.assert_array_equal(sub.obs_xy, [[6, 7], [8, 9], [10, 11], [12, 13]])
    assert sub.K.shape == (2, 3, 3)


def test_transformed_moves_points_only():
    t = _tracks()
    sim3 = Sim3(2.0, np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), np.array([1.0, 2, 3]))
    moved = t.transformed(sim3)
    np.testing.assert_allclose(moved.points, sim3.apply(t.points))
    np.testing.assert_array_equal(moved.obs_xy, t.obs_xy)


def test_bad_shapes_and_indices_are_refused():
    t = _tracks()
    with pytest.raises(ValueError, match="obs_xy"):
        SparseTracks(t.points, t.colors, t.obs_point, t.obs_view, t.obs_xy[:3], t.K)
    with pytest.raises(ValueError, match="obs_point"):
        SparseTracks(t.points, t.colors, t.obs_point + 5, t.obs_view, t.obs_xy, t.K)
    with pytest.raises(ValueError, match="obs_view"):
        SparseTracks(t.points, t.colors, t.obs_point, t.obs_view + 3, t.obs_xy, t.K)
