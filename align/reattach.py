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
from align.pnp import depth_ratio, pnp_pose, pnp_sigma, pose_change
from recon.features import Features, detect_features, verified_matches
from stream4d.contracts import Reattachment
from stream4d.geometry import Sim3, invert_se3, project_points, radial_undistorted, umeyama
from stream4d.geometry import similarity_from_poses as poses_similarity


@dataclass
class Keyframe:
    frame_index: int
    features: Features  # keypoints in model pixels of the pinhole K (undistorted), only those with a trusted world point
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


@dataclass
class LinkNoise:
    """What a link's query view and matched keyframe measured of it (``SegmentLinker.measure``)."""

    sigma: tuple[float, float, float]  # rotation (rad), centre (target-world units), log scale
    centre: np.ndarray  # float64 [3], the query camera's centre in the target world
    query_uv: np.ndarray  # float32 [M, 2], the PnP inliers' keypoints in the query frame (model pixels)
    match_uv: np.ndarray  # float32 [M, 2], the same matches' keypoints in the keyframe


def lift_keyframe(image: np.ndarray, depth: np.ndarray, mask: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                  frame_index: int, max_features: int, radial_k1: float = 0.0, *,
                  anchors: tuple[np.ndarray, np.ndarray] | None = None, anchor_px: float = 1.0) -> Keyframe:
    """Features of ``image [H, W, 3]`` whose pixel has trusted ``depth [H, W]`` (``mask``), lifted to the
    world with ``K [3, 3]`` and ``c2w [4, 4]``. A window seen through a lens (``radial_k1``,
    ``SparseTracks.radial_k1``) has its keypoints undistorted: the keyframe's pixels are the pinhole
    ``K``'s, so that PnP and reprojection checks on them hold at the image's edges too.

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
    uv = radial_undistorted(uv, K, radial_k1)
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


MIN_LOCATED_VIEWS = 3  # query views located by PnP before their poses may set a similarity
BRIDGE_MIN_SPREAD = 0.01  # x the scene depth: camera centres a bridge's pose fit needs (the multi-view
# reprojection check, not this bound, decides between it and the 3D-3D fit)


def locate_view(world_points: np.ndarray, pixels: np.ndarray, K: np.ndarray, min_inliers: int,
                max_error_px: float = 2.0) -> np.ndarray | None:
    """Camera-to-world ``[4, 4]`` of a view seeing ``world_points [N, 3]`` at ``pixels [N, 2]`` (PnP,
    RANSAC), or None with fewer than ``min_inliers`` agreeing points."""
    import cv2

    if len(world_points) < max(min_inliers, 6):
        return None
    ok, rvec, tvec, inl = cv2.solvePnPRansac(world_points.astype(np.float64), pixels.astype(np.float64),
                                             np.asarray(K, np.float64), None, reprojectionError=max_error_px,
                                             iterationsCount=500, confidence=0.999)
    if not ok or inl is None or len(inl) < min_inliers:
        return None
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
    return invert_se3(w2c)


def similarity_from_poses(own: list[np.ndarray], target: list[np.ndarray], min_spread: float) -> Sim3 | None:
    """``stream4d.geometry.similarity_from_poses`` of camera poses ``own`` (c2w [4, 4] each) onto the
    same cameras' ``target`` poses; None also when the target centres' RMS spread is below
    ``min_spread`` (the scale would rest on noise)."""
    if len(own) < 2:
        return None
    B = np.array(target)
    if np.sqrt(((B[:, :3, 3] - B[:, :3, 3].mean(0)) ** 2).sum(1).mean()) < min_spread:
        return None
    return poses_similarity(np.array(own), B)


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

    def has_structure(self, segment: int) -> bool:
        """Whether ``segment`` keeps a keyframe with enough lifted points for a link to land on."""
        return any(len(kf.points) >= self.config.min_inliers for kf in self._keyframes.get(segment, ()))

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

    def keyframes(self, segment: int) -> list[Keyframe]:
        """The keyframes kept for ``segment`` (oldest first; empty when it has none)."""
        return list(self._keyframes.get(segment, ()))

    def add_segment(self, segment: int, keyframes: list[Keyframe]) -> None:
        """An earlier segment given whole (a saved map): all its keyframes are kept, whatever
        ``keyframes_per_segment`` says, since a new stream may start anywhere in it."""
        if segment in self._keyframes:
            raise ValueError(f"segment {segment} already has keyframes")
        self._keyframes[segment] = deque(keyframes, maxlen=max(len(keyframes), 1) + self.config.keyframes_per_segment)
        self._keyframes.move_to_end(segment, last=False)  # oldest: the stream's own segments come after it

    def refine_link(self, link: Reattachment, queries: list[Keyframe],
                    views: list[tuple[np.ndarray, np.ndarray]] | None = None, rounds: int = 3) -> Reattachment:
        """``link`` refitted on every query against every keyframe of its target segment (not only the
        best pair). First on the 3D-3D pairs within ``inlier_rel`` x depth of the current similarity,
        weighted by 1 / depth^2 (lifted depth errors grow with depth). Then, given the queries' ``views``
        (``(c2w [4, 4], K [3, 3])`` in the detached world), from poses: each query is located in the
        target world by PnP on the target keyframes' points, and the similarity is the one that maps
        the queries' own poses onto those. Dense depth may be biased against the poses it came with
        (layer scales touch depth only), and a similarity of the points carries that bias into every
        pose; the cameras' own positions do not. Needs ``MIN_LOCATED_VIEWS`` such poses whose centres
        spread, and a fit that keeps 90 % of the 3D-3D inliers; else the 3D-3D fit stands."""
        cfg = self.config
        src, dst, z, per_query = [], [], [], [([], []) for _ in queries]
        for kf in self._keyframes.get(link.to_segment, ()):
            for qi, q in enumerate(queries):
                m = verified_matches(q.features, kf.features, 0, 1)
                if m is not None:
                    src.append(q.points[m.idx_i])
                    dst.append(kf.points[m.idx_j])
                    z.append(kf.depth[m.idx_j])
                    per_query[qi][0].append(kf.points[m.idx_j])
                    per_query[qi][1].append(q.features.keypoints[m.idx_i])
        if not src:
            return link
        src, dst, z = np.concatenate(src), np.concatenate(dst), np.concatenate(z)
        sim3, inliers = link.sim3, link.inliers
        for _ in range(rounds):
            inl = np.linalg.norm(sim3.apply(src) - dst, axis=1) < cfg.inlier_rel * z
            if inl.sum() < max(cfg.min_inliers, 3):
                break
            sim3, inliers = umeyama(src[inl], dst[inl], weights=1.0 / z[inl] ** 2), int(inl.sum())
        if views is not None:
            located = [(views[qi][0], c2w) for qi, (obj, img) in enumerate(per_query) if obj
                       for c2w in [locate_view(np.concatenate(obj), np.concatenate(img), views[qi][1],
                                               cfg.min_inliers)] if c2w is not None]
            # Centres closer than 2 % of the scene depth give no usable scale (a camera turning on the spot).
            from_poses = None if len(located) < MIN_LOCATED_VIEWS else similarity_from_poses(
                [a for a, _ in located], [b for _, b in located], 0.02 * float(np.median(z)))
            # Two or three located views can still carry one bad PnP: the pose fit stands only if it
            # keeps nearly all the 3D-3D pairs the point fit explained.
            if from_poses is not None:
                kept = int((np.linalg.norm(from_poses.apply(src) - dst, axis=1) < cfg.inlier_rel * z).sum())
                if kept >= 0.9 * inliers:
                    sim3 = from_poses
        return Reattachment(link.from_segment, link.to_segment, sim3, inliers, link.keyframe_index, link.frame_index)

    def bridge(self, link: Reattachment, queries: list[Keyframe]) -> tuple[Reattachment, float] | None:
        """``link`` checked on every query view at once, for a window that lost its overlap with the
        window just before it (a bridge): the target segment's keyframe points must reproject onto the
        queries' keypoints with the queries' own poses mapped by the similarity. One view cannot see
        a wrong scale (its points slide along their rays); several views at their poses can.

        Candidates: the 3D-3D fit of ``link``, the same refitted on every query's pairs, and the fit of the queries' poses onto their PnP poses
        in the target world (``similarity_from_poses``); the one with the smaller median reprojection
        wins and must be within ``max_reprojection_px``, else None. Returns the link and the factor
        its depth needs on top of ``link.sim3.s`` (the 3D-3D scale over the pose scale when the pose fit wins: the window's
        depth may disagree with its own poses, and the world needs both right), else 1.0."""
        cfg = self.config
        obs = []  # (query, its keypoint indices, the target world points they matched)
        for kf in self._keyframes.get(link.to_segment, ()):
            for q in queries:
                if q.c2w is None or q.K is None:
                    continue
                m = verified_matches(q.features, kf.features, 0, 1)
                if m is not None and len(m.idx_i) >= cfg.min_inliers:
                    obs.append((q, m.idx_i, kf.points[m.idx_j], kf.depth[m.idx_j]))
        if len({q.frame_index for q, *_ in obs}) < 2:
            return link, 1.0  # one view: the pair's own reprojection check is all there is
        located = []
        for q in queries:
            mine = [(idx, pts) for qq, idx, pts, _ in obs if qq is q]
            if mine:
                c2w = locate_view(np.concatenate([p for _, p in mine]),
                                  np.concatenate([q.features.keypoints[i] for i, _ in mine]), q.K, cfg.min_inliers)
                if c2w is not None:
                    located.append((q.c2w, c2w))
        src = np.concatenate([q.points[idx] for q, idx, _, _ in obs])  # the window's world
        dst = np.concatenate([pts for _, _, pts, _ in obs])  # the target world
        z = np.concatenate([z for *_, z in obs])
        from_poses = None if len(located) < MIN_LOCATED_VIEWS else similarity_from_poses(
            [a for a, _ in located], [b for _, b in located], BRIDGE_MIN_SPREAD * float(np.median(z)))

        def error(S: Sim3) -> float:
            return float(np.median(np.concatenate([reprojection_px(S, q, idx, pts) for q, idx, pts, _ in obs])))

        # The 3D-3D fit again on every query's pairs (not one pair's), weighted by 1 / depth^2 as refine_link.
        joint = link.sim3
        for _ in range(3):
            inl = np.linalg.norm(joint.apply(src) - dst, axis=1) < cfg.inlier_rel * z
            if inl.sum() < max(cfg.min_inliers, 3):
                break
            joint = umeyama(src[inl], dst[inl], weights=1.0 / z[inl] ** 2)
        best, factor, err = link.sim3, 1.0, error(link.sim3)
        if (joint_err := error(joint)) < err:
            best, err = joint, joint_err
        if from_poses is not None and (pose_err := error(from_poses)) < err:
            best, factor, err = from_poses, best.s / from_poses.s, pose_err
        if not err <= cfg.max_reprojection_px:
            return None
        return Reattachment(link.from_segment, link.to_segment, best, link.inliers, link.keyframe_index,
                            link.frame_index), float(factor)

    def measure(self, link: Reattachment, queries: list[Keyframe]) -> LinkNoise | None:
        """The noise of ``link`` (before :meth:`merge`), measured as a loop's is: its query view located by
        PnP on the matched keyframe's points, rotation and centre sigmas from that pose's covariance, log
        scale from the spread of the depth ratios between the two. The link was not fitted by that PnP (a
        3D-3D or pose fit), so how far its own placement of the view is from the PnP pose, and its scale
        from the depth ratio, are added in quadrature. The PnP inliers come along as image matches (a final
        adjustment makes tracks across the link of them). None when the pair gives no PnP pose or ratio."""
        cfg = self.config
        q = next((q for q in queries if q.frame_index == link.frame_index), None)
        kf = next((k for k in self._keyframes.get(link.to_segment, ()) if k.frame_index == link.keyframe_index), None)
        if q is None or kf is None or q.c2w is None or q.K is None:
            return None
        m = verified_matches(q.features, kf.features, 0, 1)
        if m is None or len(m.idx_i) < cfg.min_inliers:
            return None
        keypoints, world = q.features.keypoints[m.idx_i], kf.points[m.idx_j]
        pnp = pnp_pose(keypoints, world, q.K, cfg.max_reprojection_px, cfg.seed)
        if pnp is None:
            return None
        c2w, inl, _ = pnp
        if inl.sum() < cfg.min_inliers:
            return None
        rotation, centre = pnp_sigma(c2w, keypoints[inl], world[inl], q.K)
        both = None if q.precise is None or kf.precise is None else q.precise[m.idx_i] & kf.precise[m.idx_j]
        ratio = depth_ratio(c2w, world, q.depth[m.idx_i], both)
        if ratio is None:
            return None
        placed = link.sim3.apply_c2w(q.c2w)
        angle, shift = pose_change(placed, c2w)
        sigma = (float(np.hypot(rotation, np.radians(angle))), float(np.hypot(centre, shift)),
                 float(np.hypot(ratio[1], np.log(ratio[0] / link.sim3.s))))
        return LinkNoise(sigma, placed[:3, 3].copy(), keypoints[inl].astype(np.float32),
                         kf.features.keypoints[m.idx_j][inl].astype(np.float32))

    def merge(self, link: Reattachment) -> None:
        """Move the linked segment's keyframes into the target world."""
        moved = self._keyframes.pop(link.from_segment, deque())
        frames = self._keyframes.setdefault(link.to_segment, deque(maxlen=self.config.keyframes_per_segment))
        for kf in moved:
            frames.append(Keyframe(kf.frame_index, kf.features, link.sim3.apply(kf.points), kf.depth * link.sim3.s,
                                   None if kf.c2w is None else link.sim3.apply_c2w(kf.c2w), kf.K, kf.precise))
        self._keyframes.move_to_end(link.to_segment)
