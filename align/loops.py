"""Loop closure: a keyframe of the new window seen again in an earlier, non-neighbouring window.

For each query keyframe (lifted to the current world, :func:`align.reattach.lift_keyframe`):

1. **Retrieval**: the ``top_k`` most similar keyframes of the same segment in the
   :class:`align.placerec.KeyframeDatabase` whose window is at least ``min_window_gap`` windows
   older or whose frame is at least ``min_frame_gap`` frames away (recent neighbours share
   frames with it anyway and say nothing new).
2. **Matches**: RootSIFT matches verified by a fundamental matrix (``recon.features``).
3. **3D-3D Sim(3)**: RANSAC similarity between the query's world points and the candidate's
   (``align.reattach.ransac_sim3``), enough inliers and inlier share.
4. **Reprojection check**: the candidate's inlier points, brought into the query's world by the
   similarity's inverse, must land on the query's keypoints (median error below
   ``max_reprojection_px`` model pixels): depth at keypoints is good to ~10 %, which lets a
   wrong similarity through the 3D test but not through this one.
5. **Scale check**: ``|log s|`` of the similarity at most ``log(max_scale_change)``, and, when
   the window already has accepted loop matches, within ``scale_agreement`` of their median.

A frame its window model placed on little evidence (``weak_frames``: few of the window's
triangulated points seen in it; in practice the frame that closes a loop, whose only strong
overlap is with the start of the stream) may have a wrong pose *and* wrong depth: then the 3D-3D
test fails or asks for a large move, while PnP of its keypoints on the stored world points (all
inliers within half the reprojection bound) gives its pose. Such a frame is **relocated** (its pose
replaced, its depth not trusted) instead of bending the graph. When it also makes a loop that passes
the tests above, it is relocated only when the two poses differ by more than ``relocate_min_deg`` /
``relocate_min_shift`` (less, and the loop corrects its whole window); else at any difference: PnP on
many stored points places it better than its window did.

An accepted match gives a constraint: the similarity ``S`` maps what the query's window emitted
onto the candidate's world, so the pose graph's loop edge is ``T_a^-1 S T_b``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from align.placerec import KeyframeDatabase, StoredKeyframe
from align.pnp import depth_ratio, pnp_pose, pnp_sigma, pose_change
from align.reattach import Keyframe, ransac_sim3, reprojection_px
from recon.features import verified_matches
from stream4d.geometry import Sim3


@dataclass(frozen=True)
class LoopMatch:
    """A verified loop between a query keyframe (window ``query_window``) and a stored one."""

    query_window: int
    query_frame: int
    match_window: int
    match_frame: int
    sim3: Sim3  # query window's world -> the matched keyframe's world (the correction the loop asks for)
    inliers: int  # 3D-3D pairs agreeing with sim3
    matches: int  # verified 2D matches
    reprojection_px: float  # median, of the inliers, in the query image
    similarity: float  # retrieval score
    # The measurement's noise: rotation (rad) and centre (world units) of the query camera from the PnP
    # covariance, log scale from the spread of the depth ratios; and the query camera's centre [3].
    sigma: tuple[float, float, float] | None = None  # None: unknown (the graph's sequential sigmas)
    query_centre: np.ndarray | None = None
    # The PnP inliers as image pairs: float32 [M, 2] keypoints of the query frame and [M, 2] of the
    # matched frame, model pixels (a final adjustment can hold the loop with them as tracks).
    pairs: tuple[np.ndarray, np.ndarray] | None = None

    def summary(self) -> dict:
        out = {"query_window": self.query_window, "query_frame": self.query_frame,
               "match_window": self.match_window, "match_frame": self.match_frame,
               "inliers": self.inliers, "matches": self.matches,
               "reprojection_px": round(self.reprojection_px, 3), "scale": round(float(self.sim3.s), 5),
               "shift": round(float(np.linalg.norm(self.sim3.t)), 5), "similarity": round(self.similarity, 4)}
        if self.sigma is not None:
            out.update(sigma_deg=round(float(np.degrees(self.sigma[0])), 5), sigma_centre=round(float(self.sigma[1]), 6),
                       sigma_log_scale=round(float(self.sigma[2]), 6))
        return out


@dataclass(frozen=True)
class Relocation:
    """A weakly placed query frame found again by PnP on a stored keyframe's world points, away from
    where its window model put it: the PnP pose replaces the window's."""

    window: int
    frame_index: int
    c2w: np.ndarray  # float64 [4, 4], the frame's pose by PnP, in the matched keyframe's world as it was stored
    match_frame: int
    inliers: int
    reprojection_px: float
    match_window: int = -1  # the matched keyframe's window (a loop that moves it moves this pose with it)
    gross: bool = True  # off by relocate_min_deg / relocate_min_shift or more (else kept only without a loop)
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # (query, stored) keypoints [M, 2] of the PnP inliers

    def summary(self) -> dict:
        return {"window": self.window, "frame": self.frame_index, "match_frame": self.match_frame,
                "inliers": self.inliers, "reprojection_px": round(self.reprojection_px, 3)}


@dataclass
class Rejection:
    query_frame: int
    match_frame: int
    reason: str


@dataclass
class Verified:
    """What geometric verification found for a query / stored keyframe pair."""

    matches: int
    sim3: Sim3 | None = None  # the 3D-3D similarity, when it passed (with its reprojection check)
    inliers: int = 0
    reprojection_px: float = float("inf")
    pnp_c2w: np.ndarray | None = None  # the query frame's pose by PnP on the stored world points
    pnp_inliers: int = 0
    pnp_px: float = float("inf")
    pnp_pairs: tuple[np.ndarray, np.ndarray] | None = None  # (query, stored) keypoints [M, 2] of the PnP inliers
    sigma: tuple[float, float, float] | None = None  # of the loop measurement (LoopMatch.sigma)
    reason: str = ""  # why the similarity failed ("" when it passed)


def verify(query: Keyframe, query_c2w: np.ndarray, query_K: np.ndarray, stored: StoredKeyframe,
           min_inliers: int, min_inlier_fraction: float, inlier_rel: float, ransac_iterations: int,
           max_reprojection_px: float, rng: np.random.Generator) -> Verified:
    """Match a query against a stored keyframe: 3D-3D similarity with its reprojection check, and the
    query frame's PnP pose on the stored points (used when the frame's own geometry is broken)."""
    kf = stored.keyframe()
    m = verified_matches(query.features, kf.features, 0, 1)
    if m is None or len(m.idx_i) < min_inliers:
        return Verified(0 if m is None else len(m.idx_i), reason=f"{0 if m is None else len(m.idx_i)} verified matches")
    out = Verified(len(m.idx_i))
    # PnP on the stored frame's triangulated tracks when there are enough of them among the matches:
    # dense depth at corners is biased by a percent or so, which a loop would carry into the graph.
    on_tracks = kf.precise[m.idx_j] if kf.precise is not None else np.zeros(len(m.idx_j), bool)
    use = on_tracks if on_tracks.sum() >= min_inliers else np.ones(len(m.idx_j), bool)
    pnp = pnp_pose(query.features.keypoints[m.idx_i[use]], kf.points[m.idx_j[use]], query_K, max_reprojection_px,
                   int(rng.integers(1 << 30)))
    if pnp is not None:
        out.pnp_c2w, mask, out.pnp_px = pnp
        out.pnp_inliers = int(mask.sum())
        pnp_keypoints, pnp_world = query.features.keypoints[m.idx_i[use]][mask], kf.points[m.idx_j[use]][mask]
        out.pnp_pairs = (pnp_keypoints.astype(np.float32), kf.features.keypoints[m.idx_j[use]][mask].astype(np.float32))
    m_all, on_tracks_all = m, on_tracks
    both = on_tracks & (query.precise[m.idx_i] if query.precise is not None else False)
    if both.sum() >= min_inliers:  # the scale from tracks on both sides, when they share enough
        m = replace(m, idx_i=m.idx_i[both], idx_j=m.idx_j[both])
    src, dst = query.points[m.idx_i], kf.points[m.idx_j]
    S, inl = ransac_sim3(src, dst, inlier_rel * kf.depth[m.idx_j], ransac_iterations, rng)
    n = int(inl.sum())
    if S is None or n < min_inliers or n < min_inlier_fraction * len(src):
        out.reason = f"3D-3D similarity: {n} of {len(src)} pairs agree"
        return out
    q = Keyframe(query.frame_index, query.features, query.points, query.depth, query_c2w, query_K, query.precise)
    err = reprojection_px(S, q, m.idx_i[inl], dst[inl])
    median = float(np.median(err))
    if not median <= max_reprojection_px:
        out.reason = f"reprojection: median {median:.1f} px over {n} inliers"
        return out
    if out.pnp_c2w is None or out.pnp_inliers < min_inliers:
        out.reason = f"PnP on the stored points: {out.pnp_inliers} inliers"
        return out
    # The rigid part from PnP (2D-3D: only the stored side's depth enters); the scale as the median
    # ratio of the stored points' depths in the PnP camera to the query's own depths at the same
    # keypoints (as the sequential alignment measures scale: a robust depth ratio); a least-squares
    # 3D-3D scale drifted by a few percent with noisy far points.
    ratio = depth_ratio(out.pnp_c2w, kf.points[m_all.idx_j], query.depth[m_all.idx_i],
                        None if query.precise is None else query.precise[m_all.idx_i] & on_tracks_all)
    if ratio is None:
        out.reason = "no depth ratio for the loop's scale"
        return out
    scale, scale_sigma = ratio
    anchored = anchor_on_pose(scale, query_c2w, out.pnp_c2w)
    angle, shift = pose_change(S.apply_c2w(query_c2w), out.pnp_c2w)
    if angle > 5.0 or shift > 0.1 * float(np.median(kf.depth[m.idx_j][inl])):
        out.reason = f"3D-3D and PnP disagree by {angle:.1f} deg, {shift:.3g} units"
        return out
    out.sim3, out.inliers, out.reprojection_px = anchored, n, out.pnp_px
    out.sigma = (*pnp_sigma(out.pnp_c2w, pnp_keypoints, pnp_world, query_K), scale_sigma)
    return out


def anchor_on_pose(scale: float, c2w_from: np.ndarray, c2w_to: np.ndarray) -> Sim3:
    """The similarity of scale ``scale`` that takes camera pose ``c2w_from [4, 4]`` exactly onto ``c2w_to``."""
    R = c2w_to[:3, :3] @ c2w_from[:3, :3].T
    t = c2w_to[:3, 3] - scale * R @ c2w_from[:3, 3]
    return Sim3(float(scale), R, t)


class LoopDetector:
    """Finds and verifies loops for the keyframes of each new window (see the module docstring)."""

    def __init__(self, database: KeyframeDatabase, top_k: int = 3, min_window_gap: int = 3, min_frame_gap: int = 20,
                 min_similarity: float = 0.0, min_inliers: int = 30, min_inlier_fraction: float = 0.3,
                 inlier_rel: float = 0.1, ransac_iterations: int = 300, max_reprojection_px: float = 3.0,
                 max_scale_change: float = 1.5, scale_agreement: float = 0.1, relocate_min_deg: float = 5.0,
                 relocate_min_shift: float = 0.1, seed: int = 0):
        self.database = database
        self.top_k = top_k
        self.min_window_gap = min_window_gap
        self.min_frame_gap = min_frame_gap
        self.relocate_min_deg = relocate_min_deg
        self.relocate_min_shift = relocate_min_shift
        self.min_similarity = min_similarity
        self.min_inliers = min_inliers
        self.min_inlier_fraction = min_inlier_fraction
        self.inlier_rel = inlier_rel
        self.ransac_iterations = ransac_iterations
        self.max_reprojection_px = max_reprojection_px
        self.max_scale_change = max_scale_change
        self.scale_agreement = scale_agreement
        self._rng = np.random.default_rng(seed)

    def detect(self, window: int, segment: int, queries: list[tuple[Keyframe, np.ndarray, np.ndarray]],
               weak_frames: frozenset[int] = frozenset()
               ) -> tuple[list[LoopMatch], list[Rejection], list[Relocation], list[LoopMatch]]:
        """Verified loop matches of a window's ``queries`` ((keyframe, c2w [4, 4], K [3, 3]) each; one per
        pair of windows), the refusals, relocations of ``weak_frames`` (frames its window model placed on
        little evidence) whose PnP pose on an old keyframe contradicts where the window put them, and
        every keyframe-level match that passed (several per pair of windows: which query keyframes
        found their place already stored)."""
        accepted: list[LoopMatch] = []
        rejected: list[Rejection] = []
        relocations: dict[int, Relocation] = {}

        def far(e: StoredKeyframe) -> bool:  # a loop: windows apart, so a chain of alignments lies between
            return e.window <= window - self.min_window_gap

        def eligible(e: StoredKeyframe) -> bool:  # ... or, for a weak frame, far enough in the stream
            return e.segment == segment and (far(e) or (kf.frame_index in weak_frames and
                                                         abs(e.frame_index - kf.frame_index) >= self.min_frame_gap))

        for kf, c2w, K in queries:
            for stored, score in self.database.query(kf.features.descriptors, self.top_k, eligible):
                if score < self.min_similarity:
                    break
                v = verify(kf, c2w, K, stored, self.min_inliers, self.min_inlier_fraction, self.inlier_rel,
                           self.ransac_iterations, self.max_reprojection_px, self._rng)
                reason = v.reason if v.sim3 is None else self._scale_problem(v.sim3, accepted)
                if kf.frame_index in weak_frames:
                    self._maybe_relocate(window, kf, c2w, stored, v, relocations, far(stored) and not reason)
                if not far(stored):
                    continue
                if reason:
                    rejected.append(Rejection(kf.frame_index, stored.frame_index, reason))
                    continue
                accepted.append(LoopMatch(window, kf.frame_index, stored.window, stored.frame_index, v.sim3,
                                          v.inliers, v.matches, v.reprojection_px, score, v.sigma,
                                          np.asarray(c2w[:3, 3], np.float64).copy(), v.pnp_pairs))
        looped = {m.query_frame for m in accepted}  # a frame a little off with a loop: the loop corrects it
        relocations = {f: r for f, r in relocations.items() if r.gross or f not in looped}
        moved = set(relocations)
        accepted = [m for m in accepted if m.query_frame not in moved]  # its own geometry was the problem
        best: dict[int, LoopMatch] = {}  # one edge per pair of windows: the same loop seen twice is not twice
        for m in accepted:  # the evidence
            if m.match_window not in best or m.inliers > best[m.match_window].inliers:
                best[m.match_window] = m
        return list(best.values()), rejected, list(relocations.values()), accepted

    def _maybe_relocate(self, window: int, kf: Keyframe, c2w: np.ndarray, stored: StoredKeyframe, v: Verified,
                        relocations: dict[int, Relocation], loop_possible: bool) -> None:
        if v.pnp_c2w is None or v.pnp_inliers < self.min_inliers or v.pnp_inliers < 0.5 * v.matches:
            return
        if v.pnp_px > 0.5 * self.max_reprojection_px:
            return
        angle, shift = pose_change(c2w, v.pnp_c2w)
        gross = angle >= self.relocate_min_deg or shift >= self.relocate_min_shift * float(np.median(stored.depth))
        if loop_possible and not gross:
            return  # not far off: the loop it makes corrects its whole window instead
        best = relocations.get(kf.frame_index)
        if best is None or v.pnp_inliers > best.inliers:
            relocations[kf.frame_index] = Relocation(window, kf.frame_index, v.pnp_c2w, stored.frame_index,
                                                     v.pnp_inliers, v.pnp_px, stored.window,
                                                     gross or (best is not None and best.gross), v.pnp_pairs)
        elif gross:
            relocations[kf.frame_index] = replace(best, gross=True)

    def _scale_problem(self, S: Sim3, accepted: list[LoopMatch]) -> str:
        log_s = abs(np.log(S.s))
        if log_s > np.log(self.max_scale_change):
            return f"scale {S.s:.3f} beyond the allowed change {self.max_scale_change}"
        if accepted:
            ref = float(np.median([np.log(m.sim3.s) for m in accepted]))
            if abs(np.log(S.s) - ref) > self.scale_agreement:
                return f"scale {S.s:.3f} disagrees with the window's other loops ({np.exp(ref):.3f})"
        return ""
