"""``stream4d.adjustment_budget``: the points an adjustment over budget holds."""

from __future__ import annotations

import numpy as np

from stream4d.adjustment_budget import budgeted_points


def _observations(tracks: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """point id -> the views that see it, as (obs_point, obs_view)."""
    pairs = [(p, v) for p, views in tracks.items() for v in views]
    return np.array([p for p, _ in pairs]), np.array([v for _, v in pairs])


def test_within_budget_every_point_is_held():
    obs_point, obs_view = _observations({0: [0, 1], 1: [1, 2], 2: [0, 1, 2]})
    assert budgeted_points(obs_point, obs_view, 1, 10, 100).tolist() == [0, 1, 2]


def test_the_longest_tracks_fill_the_budget_after_each_views_own():
    # Points 0-3 are long tracks of views 0-2; view 3 sees only the short tracks 4 and 5.
    tracks = {0: [0, 1, 2], 1: [0, 1, 2], 2: [0, 1, 2], 3: [0, 1], 4: [2, 3], 5: [2, 3]}
    obs_point, obs_view = _observations(tracks)
    # Budget of 8 observations: no view's own track first, the longest overall fill it.
    assert budgeted_points(obs_point, obs_view, 0, 10, 8).tolist() == [0, 1]
    # Each view's longest track first (view 3's: point 4, the lower id of two equal ones), then the rest
    # in order of length while the observations stay within the budget.
    assert budgeted_points(obs_point, obs_view, 1, 10, 7).tolist() == [0, 4]
    assert budgeted_points(obs_point, obs_view, 1, 10, 8).tolist() == [0, 1, 4]
    assert budgeted_points(obs_point, obs_view, 1, 10, 11).tolist() == [0, 1, 2, 4]
    # A point cap as well: two points in all, whatever observations are left.
    assert budgeted_points(obs_point, obs_view, 1, 2, 100).tolist() == [0, 4]
    # Held first whatever their length, counted against the budget.
    assert budgeted_points(obs_point, obs_view, 0, 10, 8, first=np.array([5])).tolist() == [0, 1, 5]
    # At least min_points, longest first, even beyond the budget.
    assert budgeted_points(obs_point, obs_view, 0, 1, 1, min_points=3).tolist() == [0, 1, 2]
