"""Which points a bundle adjustment holds when there are more than it can afford.

Both adjustments (a window's, ``recon/default/sfm.py``, and the finished run's, ``stream4d/pipeline/
final_ba.py``) cost time with every observation. When over budget they hold, in this order: the points
they must (``first``), each view's longest tracks (a view that sees only short tracks, as the views last
registered in a turn or joined across a gap do, would otherwise be held by none and swing freely), then
the longest tracks overall, which tie the most views together.
"""

from __future__ import annotations

import numpy as np


def budgeted_points(obs_point: np.ndarray, obs_view: np.ndarray, per_view: int, max_points: int,
                    max_observations: int, min_points: int = 0, first: np.ndarray | None = None) -> np.ndarray:
    """Sorted ids of the points to hold (values of ``obs_point``).

    obs_point, obs_view: int [O], each observation's point id and view id (any non-negative ints).
    per_view: each view's this many longest tracks (most observations; ties by point id) are held,
        even where they alone exceed the budget.
    max_points, max_observations: then the longest tracks overall while both stay within these.
    min_points: at least this many points in all (longest first), whatever the budget.
    first: point ids held before anything else (they count towards the budget).
    """
    obs_point, obs_view = np.asarray(obs_point, np.int64), np.asarray(obs_view, np.int64)
    if len(obs_point) == 0:
        return np.zeros(0, np.int64)
    seen = np.bincount(obs_point)  # observations of each point
    order = np.lexsort((obs_point, -seen[obs_point], obs_view))  # per view, longest tracks first
    view, point = obs_view[order], obs_point[order]
    rank_in_view = np.arange(len(view)) - np.searchsorted(view, view, side="left")
    held = [point[rank_in_view < per_view]]
    if first is not None:
        held.append(np.asarray(first, np.int64))
    covering = np.unique(np.concatenate(held))
    candidates = np.unique(obs_point)
    room = max_observations - int(seen[covering[covering < len(seen)]].sum())
    longest = candidates[np.argsort(-seen[candidates], kind="stable")]
    rest = longest[~np.isin(longest, covering)]
    within = int((np.cumsum(seen[rest]) <= room).sum())
    extra = max(min(max_points - len(covering), within), min_points - len(covering), 0)
    return np.sort(np.concatenate([covering, rest[:extra]]))
