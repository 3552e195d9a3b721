"""Re-attaching a new world segment to an earlier one.

When a window shares no posed frame with the previous one, the aligner starts
a new segment with its own world frame. This module remembers a few
keyframes of every segment (SIFT features, each lifted to a world point by
its aligned depth) and tries, for each window of a segment that is still
detached, to match its frames against the keyframes of earlier segments. A
match lifts both sides to 3D (the keyframe's world and the new segment's
world); a RANSAC similarity on those 3D-3D pairs, whose inliers must also
reproject onto the query's keypoints, is the transform that puts the new
segment into the old world. Work only happens on keyframes (one per
window) and while a segment is detached; memory is bounded by
``keyframes_per_segment x max_segments``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from align.config import ReattachConfig
from recon.features import Features, detect_features, verified_matches
from stream4d.contracts import Reattachment
from stream4d.geometry import Sim3, project_points, umeyama


@dataclass
class Keyframe:
    frame_index: int
    features: Features  # keypoints in model pixels, only those with a trusted world point
    points: np.ndarray  # float64 [N, 3], world points of the keypoints (the segment's world)
    depth: np.ndarray  # float64 [N], camera z-depth of each point (sets the inlier tolerance)
    c2w: np.ndarray | None = None  # float64 [4, 4], the frame's pose in that world (for the reprojection check)
    K: np.ndarray | None = None  # float64 [3, 3], model pixels
    precise: np.ndarray | None = None  # bool [N], the point is a triangulated track of the window model (bundle-
    # adjusted), not dense depth at the keypoint; None: none is

    @property
    def nbytes(self) -> int:
        return (self.features.keypoints.nbytes + self.features.descriptors.nbytes + self.points.nbytes
                + self.depth.nbytes)


def lift_keyframe(image: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                  frame_index: int, max_features: int,
                  anchors: tuple[np.ndarray, np.ndarray] | None = None, anchor_px: float = 1.0) -> Keyframe:
    """Features of ``image [H, W, 3]`` whose pixel has trusted ``depth [H, W]`` (``mask``), lifted to the
    world with ``K [3, 3]`` and ``c2w [4, 4]``.

    ``anchors``: (pixels [M, 2], world points [M, 3]) of the window model's triangulated tracks seen in
    this frame; a keypoint within ``anchor_px`` of one takes that point (``Keyframe.precise``), which
    is more accurate than dense depth at a corner."""
    feats = detect_features(image, max_features)
    H, W = depth.shape
    uv = feats.keypoints
    col = np.clip(np.rint(uv[:, 0]).astype(np.int64), 0, W - 1)
    row = np.clip(np.rint(uv[:, 1]).astype(np.int64), 0, H - 1)
    z = depth[row, col].astype(np.float64)
    keep = mask[row, col] & (z > 0)
    anchored = np.zeros(len(uv), bool)
    anchor_world = np.zeros((len(uv), 3))
    if anchors is not None and len(anchors[0]) and len(uv):
        from scipy.spatial import cKDTree

        dist, nearest = cKDTree(anchors[0]).query(uv, distance_upper_bound=anchor_px)
        anchored = np.isfinite(dist)
        anchor_world[anchored] = anchors[1][nearest[anchored]]
        w2c = np.linalg.inv(c2w)
        z_anchor = anchor_world @ w2c[2, :3] + w2c[2, 3]
        anchored &= z_anchor > 0
        z = np.where(anchored, z_anchor, z)
        keep |= anchored
    uv, z, anchored, anchor_world = uv[keep], z[keep], anchored[keep], anchor_world[keep]
    rays = (np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(K).T) * z[:, None]
    world = rays @ c2w[:3, :3].T + c2w[:3, 3]
    world[anchored] = anchor_world[anchored]
    return Keyframe(frame_index, Features(uv, feats.descriptors[keep]), world, z,
                    np.asarray(c2w, np.float64).copy(), np.asarray(K, np.float64).copy(),
                    anchored if anchors is not None else None)


def reprojection_px(S: Sim3, query: Keyframe, query_idx: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """Pixel error of ``dst_points [M, 3]`` (another world) brought into the query's world by ``S``'s
    inverse and projected into the query frame, against its keypoints ``query_idx [M]`` (inf behind it)."""
    back = S.inverse().apply(dst_points)
    uv, z = project_points(back, query.K, query.c2w)
    err = np.linalg.norm(uv - query.features.keypoints[query_idx], axis=1)
    err[~(z > 0)] = np.inf
    return err


def ransac_sim3(src: np.ndarray, dst: np.ndarray, tol: np.ndarray, iterations: int,
                rng: np.random.Generator) -> tuple[Sim3 | None, np.ndarray]:
    """Similarity taking ``src [N, 3]`` onto ``dst [N, 3]`` with most pairs within ``tol [N]``, refit on them."""
    n = len(src)
    best = np.zeros(n, bool)
    if n < 3:
        return None, best
    for _ in range(iterations):
        pick = rng.choice(n, 3, replace=False)
        try:
            S = umeyama(src[pick], dst[pick])
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not np.isfinite(S.s) or S.s <= 0:
            continue
        inl = np.linalg.norm(S.apply(src) - dst, axis=1) < tol
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < 3:
        return None, best
    S = umeyama(src[best], dst[best])
    inl = np.linalg.norm(S.apply(src) - dst, axis=1) < tol
    return (umeyama(src[inl], dst[inl]) if inl.sum() >= 3 else S), inl


class SegmentLinker:
    """Keyframes per segment, and the attempt to place a detached segment in an earlier one's world."""

    def __init__(self, config: ReattachConfig | None = None):
        self.config = config or ReattachConfig()
        self._keyframes: OrderedDict[int, deque[Keyframe]] = OrderedDict()
        self._rng = np.random.default_rng(self.config.seed)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes for frames in self._keyframes.values() for k in frames)

    def reset(self) -> None:
        self._keyframes.clear()
        self._rng = np.random.default_rng(self.config.seed)

    def remember(self, segment: int, keyframe: Keyframe) -> None:
        frames = self._keyframes.setdefault(segment, deque(maxlen=self.config.keyframes_per_segment))
        self._keyframes.move_to_end(segment)
        frames.append(keyframe)
        while len(self._keyframes) > self.config.max_segments + 1:  # + the current one
            self._keyframes.popitem(last=False)

    def try_link(self, segment: int, queries: list[Keyframe],
                 candidates: list[list[tuple[int, Keyframe]]] | None = None) -> Reattachment | None:
        """Place ``segment`` in an earlier segment's world from its lifted ``queries``, or None.

        ``candidates[q]``: (segment, keyframe) pairs retrieved for query ``q`` from the whole keyframe
        database (``align.placerec``), tried on top of the segments' own recent keyframes."""
        best: tuple[int, Sim3, int, int, int] | None = None  # inliers, sim3, target, keyframe, query
        pairs = [(target, kf, q) for target, frames in self._keyframes.items() if target != segment
                 for kf in frames for q in queries]
        seen = {(t, kf.frame_index, q.frame_index) for t, kf, q in pairs}
        for q, found_for_q in zip(queries, candidates or []):
            pairs += [(t, kf, q) for t, kf in found_for_q
                      if t != segment and (t, kf.frame_index, q.frame_index) not in seen]
        for target, kf, q in pairs:
            found = self._link_pair(q, kf)
            if found is not None and (best is None or found[1] > best[0]):
                best = (found[1], found[0], target, kf.frame_index, q.frame_index)
        if best is None:
            return None
        inliers, sim3, target, kf_index, q_index = best
        return Reattachment(from_segment=segment, to_segment=target, sim3=sim3, inliers=inliers,
                            keyframe_index=kf_index, frame_index=q_index)

    def _link_pair(self, q: Keyframe, kf: Keyframe) -> tuple[Sim3, int] | None:
        cfg = self.config
        m = verified_matches(q.features, kf.features, 0, 1)
        if m is None or len(m.idx_i) < cfg.min_inliers:
            return None
        src, dst = q.points[m.idx_i], kf.points[m.idx_j]
        S, inl = ransac_sim3(src, dst, cfg.inlier_rel * kf.depth[m.idx_j], cfg.ransac_iterations, self._rng)
        n = int(inl.sum())
        if S is None or n < cfg.min_inliers or n < cfg.min_inlier_fraction * len(src):
            return None
        if q.c2w is not None and q.K is not None and cfg.max_reprojection_px > 0:
            # The 3D test tolerates 10 % depth error; the keyframe's points must also land on the query's
            # keypoints, or the similarity is a wrong one that happened to fit noisy depth.
            err = reprojection_px(S, q, m.idx_i[inl], dst[inl])
            if not np.median(err) <= cfg.max_reprojection_px:
                return None
        return S, n

    def merge(self, link: Reattachment) -> None:
        """Move the linked segment's keyframes into the target world."""
        moved = self._keyframes.pop(link.from_segment, deque())
        frames = self._keyframes.setdefault(link.to_segment, deque(maxlen=self.config.keyframes_per_segment))
        for kf in moved:
            frames.append(Keyframe(kf.frame_index, kf.features, link.sim3.apply(kf.points), kf.depth * link.sim3.s,
                                   None if kf.c2w is None else link.sim3.apply_c2w(kf.c2w), kf.K, kf.precise))
        self._keyframes.move_to_end(link.to_segment)
