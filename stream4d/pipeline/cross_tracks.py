"""Tracks across windows for the final adjustment, from the matches of loops and re-attachment links.

Each window writes its own tracks, so nothing among them ties two windows that share no frame: the
end of a loop to its start, or a segment re-attached after a gap to the world it joined. The loop
closure and the re-attachment each matched two keyframes (``align.globalmap.LoopPairs``: the PnP
inliers); a match whose keypoints are observations of the windows' tracks says that the two tracks
are one point. Merged, that point is triangulated by the views of both windows, which ties their
scale and place; a two-view track between two keyframes would only tie the two cameras' relative
direction, leaving each window's scale free about its camera.

A match enters only when it fits the poses the stream left (triangulated from its two views, it is
in front of both and reprojects within ``max_px``); then, by what its keypoints are:

- both observations of tracks: the tracks become one, when each one's point also reprojects onto
  the other's keypoint within ``max_px`` and the two agree (within ``max_px``) in the views both see;
- one an observation: that track gains the other view, when its point reprojects there;
- neither: a two-view track;
- a track that sees both views already holds the match as it is.

A pair set most of whose matches do not fit is left out whole: the poses disagree with it.

The matches' keypoints are pinhole pixels (``align.reattach.lift_keyframe`` undistorts a lensed
window's); they are tested as such, and enter the tracks as the views' observations are, through
each view's lens (``ExportView.radial_k1``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stream4d.geometry import radial_distorted

SNAP_PX = 0.5  # a keypoint this close to a track's observation in the same view is that observation


@dataclass
class CrossTracks:
    scene: object  # export.scene.ExportScene: the tracks merged, extended and added
    point_window: np.ndarray  # int64 [P], each scene point's window (-1: a two-view track of a match)
    row_of: np.ndarray  # int64 [P0], each input point's row in ``scene`` (a merged point: its union's)
    held: set  # (query frame, match frame) of the pair sets that entered
    merged: int = 0  # matches that made two tracks one
    extended: int = 0  # matches that gave a track one more view
    two_view: int = 0  # matches that became two-view tracks
    shared: int = 0  # matches one track held already

    @property
    def matches(self) -> int:
        """The fitting matches the adjustment holds (whatever they added)."""
        return self.merged + self.extended + self.two_view + self.shared


def with_cross_tracks(scene, point_window: np.ndarray, pairs, max_px: float, min_matches: int,
                      min_fit_share: float) -> CrossTracks:
    """``scene`` (``export.scene.ExportScene``; ``point_window`` int64 [P]: each point's window) with the
    matches of ``pairs`` (``LoopPairs``) between two of its views entered as the module docstring says.
    A pair set enters when at least ``min_matches`` and ``min_fit_share`` of its matches fit."""
    from recon.tracking import triangulate_views

    tracks = _Tracks(scene)
    row = {v.index: k for k, v in enumerate(scene.views)}
    new_points: list[np.ndarray] = []
    out = CrossTracks(scene, point_window, np.arange(scene.num_points), set())
    for lp in pairs:
        a, b = row.get(int(lp.query_frame)), row.get(int(lp.match_frame))
        if a is None or b is None or a == b or len(lp.query_uv) < min_matches:
            continue
        va, vb = scene.views[a], scene.views[b]
        uv_a, uv_b = np.asarray(lp.query_uv, np.float64), np.asarray(lp.match_uv, np.float64)
        X, ok = triangulate_views(va.K, va.c2w, vb.c2w, uv_a, uv_b, max_px, 0.0, K_b=vb.K)
        if ok.sum() < max(min_matches, min_fit_share * len(ok)):
            continue
        out.held.add((int(lp.query_frame), int(lp.match_frame)))
        seen_at_a, seen_at_b = _as_observed(va, uv_a), _as_observed(vb, uv_b)
        at_a, at_b = tracks.point_at(a, seen_at_a), tracks.point_at(b, seen_at_b)
        for i in np.flatnonzero(ok).tolist():
            pa = tracks.find(at_a[i]) if at_a[i] >= 0 else -1
            pb = tracks.find(at_b[i]) if at_b[i] >= 0 else -1
            seen_a = tracks.seen(pa) if pa >= 0 else {}
            seen_b = tracks.seen(pb) if pb >= 0 else {}
            if pa >= 0 and (pa == pb or b in seen_a) or pb >= 0 and a in seen_b:
                out.shared += 1  # one track already, or a track that sees the other view elsewhere
            elif pa >= 0 and pb >= 0:
                agree = all(np.linalg.norm(xy - seen_b[v]) <= max_px for v, xy in seen_a.items() if v in seen_b)
                if agree and _reprojects(scene.points[pa], vb, uv_b[i], max_px) and \
                        _reprojects(scene.points[pb], va, uv_a[i], max_px):
                    tracks.join(pa, pb)
                    out.merged += 1
            elif pa >= 0 or pb >= 0:
                p, view, uv, seen = (pa, vb, uv_b[i], seen_at_b[i]) if pa >= 0 else (pb, va, uv_a[i], seen_at_a[i])
                if _reprojects(scene.points[p], view, uv, max_px):
                    tracks.extend(p, b if pa >= 0 else a, seen)
                    out.extended += 1
            else:
                tracks.add_point(scene.num_points + len(new_points), ((a, seen_at_a[i]), (b, seen_at_b[i])))
                new_points.append(X[i])
                out.two_view += 1
    if out.merged or out.extended or out.two_view:
        _assemble(out, scene, point_window, tracks, new_points)
    return out


def _assemble(out: CrossTracks, scene, point_window, tracks: _Tracks, new_points: list[np.ndarray]) -> None:
    """``out``'s scene: every point renamed to its union's, the added observations in, the points left
    without observations (merged into another) dropped."""
    num = scene.num_points
    roots = np.array([tracks.find(p) for p in range(num)] + list(range(num, num + len(new_points))), np.int64)
    added = tracks.added_observations()
    obs_point = np.concatenate([roots[scene.obs_point], roots[np.array([p for p, _, _ in added], np.int64)]])
    obs_view = np.concatenate([scene.obs_view, np.array([v for _, v, _ in added], np.int64)])
    obs_xy = np.concatenate([scene.obs_xy, np.array([xy for _, _, xy in added], np.float64).reshape(-1, 2)])
    _, first = np.unique(obs_point * len(scene.views) + obs_view, return_index=True)  # one per point and view
    first.sort()
    obs_point, obs_view, obs_xy = obs_point[first], obs_view[first], obs_xy[first]
    points = np.concatenate([scene.points, np.asarray(new_points, np.float64).reshape(-1, 3)])
    colors = np.concatenate([scene.colors, np.zeros((len(new_points), 3), scene.colors.dtype)])
    windows = np.concatenate([point_window, np.full(len(new_points), -1, np.int64)])
    used = np.unique(obs_point)
    renumber = np.full(len(points), -1, np.int64)
    renumber[used] = np.arange(len(used))
    out.scene = replace(scene, points=points[used], colors=colors[used], obs_point=renumber[obs_point],
                        obs_view=obs_view, obs_xy=obs_xy)
    out.point_window = windows[used]
    out.row_of = renumber[roots[:num]]


def _as_observed(view, uv: np.ndarray) -> np.ndarray:
    """Pinhole pixels ``uv`` [N, 2] of ``view`` as its observations are: through its lens, if any."""
    return radial_distorted(uv, view.K, view.radial_k1)


def _reprojects(X: np.ndarray, view, uv: np.ndarray, max_px: float) -> bool:
    from recon.tracking import reprojection_px

    return bool(reprojection_px(view.c2w, view.K, X[None], uv[None])[0] <= max_px)


class _Tracks:
    """The scene's tracks as disjoint sets of its points (a set named by its smallest row: a window's own
    point before a match's), with the observations matches add, looked up by view and pixel."""

    def __init__(self, scene):
        self._scene = scene
        self._order = np.argsort(scene.obs_point, kind="stable")
        self._starts = np.searchsorted(scene.obs_point[self._order], np.arange(scene.num_points + 1))
        self._parent: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}  # root -> its points, for roots that were joined
        self._added: dict[int, dict[int, np.ndarray]] = {}  # root -> view -> pixel, from matches
        self._trees: dict[int, tuple] = {}

    def find(self, p: int) -> int:
        root = p
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while self._parent.get(p, p) != root:
            self._parent[p], p = root, self._parent[p]
        return root

    def seen(self, root: int) -> dict[int, np.ndarray]:
        """view -> pixel of every observation of ``root``'s track (the first per view)."""
        out: dict[int, np.ndarray] = {}
        scene = self._scene
        for p in self._members.get(root, [root]):
            if p < scene.num_points:
                for r in self._order[self._starts[p]:self._starts[p + 1]].tolist():
                    out.setdefault(int(scene.obs_view[r]), scene.obs_xy[r])
        for view, xy in self._added.get(root, {}).items():
            out.setdefault(view, xy)
        return out

    def join(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        keep, gone = min(a, b), max(a, b)
        self._parent[gone] = keep
        self._members[keep] = self._members.get(keep, [keep]) + self._members.pop(gone, [gone])
        for view, xy in self._added.pop(gone, {}).items():
            self._added.setdefault(keep, {}).setdefault(view, xy)

    def extend(self, p: int, view: int, uv: np.ndarray) -> None:
        self._added.setdefault(self.find(p), {})[int(view)] = np.asarray(uv, np.float64)

    def add_point(self, p: int, observations) -> None:
        self._added[p] = {int(v): np.asarray(uv, np.float64) for v, uv in observations}

    def added_observations(self) -> list[tuple[int, int, np.ndarray]]:
        """(root point, view, pixel) of every observation matches added."""
        return [(self.find(p), v, xy) for p, views in self._added.items() for v, xy in views.items()]

    def point_at(self, view: int, uv: np.ndarray) -> np.ndarray:
        """int64 [N]: the scene point observed within ``SNAP_PX`` of each of ``uv`` [N, 2] in ``view``, else -1."""
        from scipy.spatial import cKDTree

        if view not in self._trees:
            rows = np.flatnonzero(self._scene.obs_view == view)
            self._trees[view] = (cKDTree(self._scene.obs_xy[rows]) if len(rows) else None, rows)
        tree, rows = self._trees[view]
        out = np.full(len(uv), -1, np.int64)
        if tree is None:
            return out
        dist, nearest = tree.query(uv, distance_upper_bound=SNAP_PX)
        found = np.isfinite(dist)
        out[found] = self._scene.obs_point[rows[nearest[found]]]
        return out
