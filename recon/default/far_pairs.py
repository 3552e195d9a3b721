"""Far pairs checked against the structure the near pairs grow.

A window matches each view with its next few (near pairs) and, further along, keeps a pair verified
on many matches (far pairs: longer baselines, tracks that span the window). A far pair's
fundamental matrix can be fitted by the same texture seen on two different surfaces (a street's
repeated facades, tiles, a printed pattern) together with some true matches: seven degrees of
freedom absorb a consistent shift of one texture. Grown on such matches, a window's views split
into groups whose rotations disagree by degrees.

So the window is grown on its near pairs alone too, and when the structure with far pairs turns a
view more than ``DefaultModelConfig.far_split_deg`` from where the near pairs put it
(``rotation_split_deg``), it is grown again on the far matches the near structure agrees with. Only
then: the near structure is less exact than the full one, and checking every window's far pairs
moved the shared sets both ways (docs/benchmarks.md, "Far pairs that turn a window"). The near
structure starts from the initial pair the full one started from, when that is a near pair, and
holds the camera the full one calibrated (``DefaultWindowModel._checked_far``): it only answers
whether the far pairs turned the views, for less than half of a growth's time, and is not grown at
all when the near pairs' own two-view rotations, chained, already agree with the full structure
within the gate (``chained_split_deg``). Should the growth on
the admitted far pairs fail, or place fewer views than the near structure, the near structure is the
window's (``FarPairCheck.kept_near``): the turned one is known wrong.

A far match agrees with the near structure when its Sampson distance to the epipolar geometry of
the two placed views is within a tolerance (``DefaultModelConfig.far_agree_px``), and so is the
reprojection of the point either keypoint's track already has, that tolerance times how much wider
the far pair's rays meet at the point than the near views' did (its depth, so its place along the
far view's epipolar line, is that much less certain). A pair keeps its agreeing matches when they
are at least half of its matches; a pair with a view the near structure did not place is kept as
verified (nothing to check it against).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recon.default.sfm import SfmResult, ray_angle_deg
from recon.default.tracks import Tracks
from recon.default.two_view import fundamental_of, sampson_px
from recon.features import Features, PairMatches
from stream4d.geometry import radial_distorted, radial_undistorted, rotation_angle_deg


@dataclass
class FarPairCheck:
    """What checking far pairs against the near structure did (``DefaultWindowModel._structure``)."""

    checked: int = 0  # far pairs with both views placed by the near structure
    dropped: int = 0  # ... left out: under half of their matches agree with it
    matches_dropped: int = 0  # disagreeing matches left out of the far pairs that were kept
    unchecked: int = 0  # far pairs with a view the near structure did not place (kept as verified)
    split_deg: float | None = None  # rotation_split_deg between the structures with and without far pairs
    chained_deg: float | None = None  # chained_split_deg: under the gate, the near structure is not grown
    kept_near: bool = False  # the regrowth on the admitted far pairs failed or placed fewer views: near one kept

    def as_info(self) -> dict:
        return {"split_deg": None if self.split_deg is None else round(self.split_deg, 3),
                "chained_deg": None if self.chained_deg is None else round(self.chained_deg, 3), "checked": self.checked,
                "dropped": self.dropped, "matches_dropped": self.matches_dropped, "unchecked": self.unchecked,
                "kept_near": self.kept_near}


def rotation_split_deg(a: SfmResult, b: SfmResult) -> float:
    """The largest angle (deg) by which a view's rotation relative to the first view both structures
    placed differs between ``a`` and ``b`` (0 with fewer than two common views). Only views both hold
    with points count (``SfmResult.held_views``): a rotation-only view says nothing of how the
    structures' views turned."""
    common = sorted(a.held_views & b.held_views)
    if len(common) < 2:
        return 0.0
    ra, rb = a.w2c[common[0]][:3, :3], b.w2c[common[0]][:3, :3]
    return max(float(rotation_angle_deg((a.w2c[v][:3, :3] @ ra.T) @ (b.w2c[v][:3, :3] @ rb.T).T))
               for v in common[1:])


def _pair_rotation(m: PairMatches, feats: list[Features], K: np.ndarray, k1: float) -> np.ndarray | None:
    """The rotation [3, 3] from view ``m.i`` to view ``m.j`` (world-to-camera: R_j R_i^T) that the pair's
    fundamental matrix gives through ``K`` and the lens ``k1``, or None when it does not decompose."""
    if m.F is None:
        return None
    a = radial_undistorted(feats[m.i].keypoints[m.idx_i], K, k1)
    b = radial_undistorted(feats[m.j].keypoints[m.idx_j], K, k1)
    try:
        _, R, _, _ = cv2.recoverPose(K.T @ m.F @ K, a, b, K)
    except cv2.error:
        return None
    return R


def chained_split_deg(feats: list[Features], near_pairs: list[PairMatches], sfm: SfmResult) -> float:
    """How far (deg) ``sfm`` turns a view from where the near pairs' own two-view rotations, chained view
    to view from the first view it holds, put it: the largest such angle over the views it holds with
    points, or infinity when the chain does not reach every one of them.

    A cheap stand-in for growing the near structure (``rotation_split_deg``): each pair's rotation comes
    from its fundamental matrix, so the chain carries every pair's error and tends to overstate the
    split (docs/default_backend.md). Under the split gate, growing the near structure is skipped."""
    held = sorted(sfm.held_views)
    if len(held) < 2:
        return 0.0
    step = {(m.i, m.j): m for m in near_pairs}
    chain = {held[0]: np.eye(3)}
    for v in range(held[0] + 1, held[-1] + 1):
        for i in range(v - 1, held[0] - 1, -1):  # the shortest step from a chained view
            m = step.get((i, v))
            if m is None or i not in chain:
                continue
            R = _pair_rotation(m, feats, sfm.K, sfm.radial_k1)
            if R is not None:
                chain[v] = R @ chain[i]
                break
    if not set(held) <= set(chain):
        return float("inf")
    r0 = sfm.w2c[held[0]][:3, :3]
    return max(float(rotation_angle_deg((sfm.w2c[v][:3, :3] @ r0.T) @ chain[v].T)) for v in held[1:])


class _TrackPoints:
    """The triangulated point (window frame) each keypoint's track has in a structure, if any, and the
    angle it was triangulated at (between the rays of the first and last placed views that see it)."""

    def __init__(self, tracks: Tracks, sfm: SfmResult):
        slot = np.full(tracks.num_tracks, -1, np.int64)
        slot[sfm.point_track] = np.arange(len(sfm.point_track))
        self.points = sfm.points
        self.centres = {v: -w2c[:3, :3].T @ w2c[:3, 3] for v, w2c in sfm.w2c.items()}
        rows = np.nonzero((slot[tracks.track] >= 0) & np.isin(tracks.view, list(sfm.w2c)))[0]
        first = np.full(len(self.points), np.iinfo(np.int64).max)
        last = np.full(len(self.points), -1)
        np.minimum.at(first, slot[tracks.track[rows]], tracks.view[rows])
        np.maximum.at(last, slot[tracks.track[rows]], tracks.view[rows])
        seen = last >= 0
        self.angle = np.zeros(len(self.points))
        self.angle[seen] = ray_angle_deg(self.points[seen], self._centres(first[seen]), self._centres(last[seen]))
        self.by_view: dict[int, dict[tuple[float, float], int]] = {}
        for v in np.unique(tracks.view):
            rows = tracks.in_view(int(v))
            self.by_view[int(v)] = {(float(u), float(w)): int(p) for (u, w), p
                                    in zip(tracks.uv[rows], slot[tracks.track[rows]]) if p >= 0}

    def _centres(self, views: np.ndarray) -> np.ndarray:
        return np.array([self.centres[int(v)] for v in views]).reshape(-1, 3)

    def tolerance_px(self, idx: np.ndarray, view_a: int, view_b: int, tol_px: float) -> np.ndarray:
        """How far [N] points ``idx`` may reproject from a far match between ``view_a`` and ``view_b``:
        ``tol_px``, times the pair's ray angle over the angle the point was triangulated at when that is
        larger (a point triangulated on a short baseline has its depth, so its place along the far
        view's epipolar line, that much less certain)."""
        far = ray_angle_deg(self.points[idx], self.centres[view_a], self.centres[view_b])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(self.angle[idx] > 0, far / self.angle[idx], np.inf)
        return tol_px * np.maximum(ratio, 1.0)

    def of(self, view: int, keypoints: np.ndarray) -> np.ndarray:
        """Point index ``[N]`` of each keypoint ``[N, 2]`` of ``view``; -1 where its track has none."""
        table = self.by_view.get(view, {})
        return np.array([table.get((float(u), float(w)), -1) for u, w in keypoints], np.int64)


def _reprojection_px(points: np.ndarray, w2c: np.ndarray, K: np.ndarray, k1: float,
                     seen: np.ndarray) -> np.ndarray:
    """Distance [N] px between where ``points`` [N, 3] project in a view (``w2c`` [4, 4], through the
    lens) and the keypoints ``seen`` [N, 2]; infinite behind the camera."""
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc @ K.T)[:, :2] / pc[:, 2:3]
    err = np.linalg.norm(radial_distorted(uv, K, k1) - seen, axis=1)
    return np.where(pc[:, 2] > 0, err, np.inf)


def agreeing_matches(pair: PairMatches, feats: list[Features], sfm: SfmResult, points: _TrackPoints,
                     tol_px: float) -> np.ndarray | None:
    """bool [M]: which of ``pair``'s matches agree with ``sfm`` (see the module docstring), or None when
    ``sfm`` did not place both of its views."""
    if pair.i not in sfm.w2c or pair.j not in sfm.w2c:
        return None
    K, k1 = sfm.K, sfm.radial_k1
    ua, ub = feats[pair.i].keypoints[pair.idx_i], feats[pair.j].keypoints[pair.idx_j]
    rel = sfm.w2c[pair.j] @ np.linalg.inv(sfm.w2c[pair.i])
    F = fundamental_of(K, rel[:3, :3], rel[:3, 3])
    ok = sampson_px(F, radial_undistorted(ua, K, k1), radial_undistorted(ub, K, k1)) <= tol_px
    for view, mine, other, seen in ((pair.i, ua, pair.j, ub), (pair.j, ub, pair.i, ua)):
        has = points.of(view, mine)
        rows = np.nonzero(ok & (has >= 0))[0]
        err = _reprojection_px(points.points[has[rows]], sfm.w2c[other], K, k1, seen[rows])
        ok[rows[~(err <= points.tolerance_px(has[rows], pair.i, pair.j, tol_px))]] = False
    return ok


def checked_far_pairs(far: list[PairMatches], feats: list[Features], tracks: Tracks, sfm: SfmResult,
                      tol_px: float) -> tuple[list[PairMatches], FarPairCheck]:
    """The far pairs ``far`` as the near structure ``sfm`` (grown on ``tracks``) admits them: each with
    only its agreeing matches, a pair dropped where fewer than half of its matches agree."""
    points = _TrackPoints(tracks, sfm)
    kept, report = [], FarPairCheck()
    for pair in far:
        ok = agreeing_matches(pair, feats, sfm, points, tol_px)
        if ok is None:
            report.unchecked += 1
            kept.append(pair)
            continue
        report.checked += 1
        if 2 * ok.sum() < len(ok):
            report.dropped += 1
            continue
        report.matches_dropped += int((~ok).sum())
        kept.append(PairMatches(pair.i, pair.j, pair.idx_i[ok], pair.idx_j[ok], pair.F))
    return kept, report
