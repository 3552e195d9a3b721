"""Trajectory accuracy: frame matching, ATE after Sim(3) alignment, RPE.

The prediction's world frame and scale are arbitrary, so predicted camera
centres are mapped onto the reference with one Umeyama Sim(3) (pred -> GT) and
every distance is in reference units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from stream4d.geometry import Sim3, camera_centres, invert_se3, path_length, rotation_angle_deg, umeyama
from stream4d.outputs import PosedFrame

MATCH_METHODS = ("auto", "image", "index", "timestamp")
MIN_MATCHES = 3  # a Sim(3) needs three non-collinear centres


class EvaluationError(ValueError):
    """The inputs cannot be evaluated (too few matched frames, mismatched shapes...)."""


@dataclass
class FrameMatch:
    """Pairs of (prediction, reference) frames, ordered along the reference."""

    method: str  # "image", "index" or "timestamp"
    pred: np.ndarray  # int64 [M], positions in the prediction list
    gt: np.ndarray  # int64 [M], positions in the reference list, increasing
    ignored: int = 0  # prediction frames that matched an already matched reference frame

    def __len__(self) -> int:
        return int(len(self.gt))


def _basename(name: str) -> str:
    return os.path.basename(name.replace("\\", "/"))


def _unique_lookup(keys: Sequence) -> dict:
    """key -> position, leaving out keys that occur more than once (ambiguous)."""
    seen: dict = {}
    dup = set()
    for pos, key in enumerate(keys):
        if key in seen:
            dup.add(key)
        seen[key] = pos
    return {k: v for k, v in seen.items() if k not in dup}


def _pairs(candidates: list[tuple[int, int, float]], method: str) -> FrameMatch:
    """One-to-one pairs from (pred, gt, cost) candidates: the lowest cost wins each reference frame."""
    best: dict[int, tuple[float, int]] = {}
    for p, g, cost in candidates:
        if g not in best or cost < best[g][0]:
            best[g] = (cost, p)
    gt = np.array(sorted(best), dtype=np.int64)
    pred = np.array([best[g][1] for g in gt], dtype=np.int64)
    return FrameMatch(method, pred, gt, ignored=len(candidates) - len(best))


def _match_image(pred: Sequence[PosedFrame], gt: Sequence[PosedFrame]) -> FrameMatch:
    best = FrameMatch("image", np.zeros(0, np.int64), np.zeros(0, np.int64))
    # Exact names first; the pipeline often records bare file names where the
    # reference lists paths relative to its set ("000001.png" vs "image_l/000001.png").
    for key in (lambda s: s, _basename):
        lookup = _unique_lookup([key(f.image) for f in gt])
        cands = [(p, lookup[key(f.image)], float(p)) for p, f in enumerate(pred)
                 if f.image and key(f.image) in lookup]
        m = _pairs(cands, "image")
        if len(m) > len(best):
            best = m
    return best


def _match_index(pred: Sequence[PosedFrame], gt: Sequence[PosedFrame]) -> FrameMatch:
    lookup = _unique_lookup([f.index for f in gt])
    cands = [(p, lookup[f.index], float(p)) for p, f in enumerate(pred) if f.index >= 0 and f.index in lookup]
    return _pairs(cands, "index")


def default_max_dt(gt: Sequence[PosedFrame]) -> float:
    """Half the median spacing of the reference timestamps (0 when it has < 2 frames)."""
    ts = np.sort(np.array([f.timestamp for f in gt], np.float64))
    steps = np.diff(ts)
    steps = steps[steps > 0]
    return 0.5 * float(np.median(steps)) if len(steps) else 0.0


def _match_timestamp(pred: Sequence[PosedFrame], gt: Sequence[PosedFrame], max_dt: float | None) -> FrameMatch:
    if not gt or not pred:
        return FrameMatch("timestamp", np.zeros(0, np.int64), np.zeros(0, np.int64))
    tol = default_max_dt(gt) if max_dt is None else float(max_dt)
    gts = np.array([f.timestamp for f in gt], np.float64)
    order = np.argsort(gts, kind="stable")
    sorted_ts = gts[order]
    cands = []
    for p, f in enumerate(pred):
        j = int(np.searchsorted(sorted_ts, f.timestamp))
        nearest = [k for k in (j - 1, j) if 0 <= k < len(sorted_ts)]
        k = min(nearest, key=lambda k: abs(sorted_ts[k] - f.timestamp))
        dt = abs(sorted_ts[k] - f.timestamp)
        if dt <= tol + 1e-9:
            cands.append((p, int(order[k]), float(dt)))
    return _pairs(cands, "timestamp")


def match_frames(pred: Sequence[PosedFrame], gt: Sequence[PosedFrame], method: str = "auto",
                 max_dt: float | None = None) -> FrameMatch:
    """Pair predicted frames with reference frames.

    method: "image" (same names, or same base names), "index" (``PosedFrame.index``),
    "timestamp" (nearest reference timestamp within ``max_dt`` seconds, default half
    the median reference spacing), or "auto": image names when at least half the
    predicted frames match by name, else indices, else timestamps.
    Raises EvaluationError when fewer than 3 pairs are found.
    """
    if method not in MATCH_METHODS:
        raise ValueError(f"match method must be one of {MATCH_METHODS}, got {method!r}")
    if not pred:
        raise EvaluationError("the prediction has no posed frames")
    if not gt:
        raise EvaluationError("the reference has no frames")
    if method == "image":
        m = _match_image(pred, gt)
    elif method == "index":
        m = _match_index(pred, gt)
    elif method == "timestamp":
        m = _match_timestamp(pred, gt, max_dt)
    else:
        tried = []
        m = _match_image(pred, gt)
        tried.append(m)
        if len(m) < max(MIN_MATCHES, 0.5 * len(pred)):
            m = _match_index(pred, gt)
            tried.append(m)
            if len(m) < MIN_MATCHES:
                m = _match_timestamp(pred, gt, max_dt)
                tried.append(m)
        if len(m) < MIN_MATCHES:
            counts = ", ".join(f"{t.method}: {len(t)}" for t in tried)
            raise EvaluationError(f"only {len(m)} predicted frames match the reference ({counts} matches); "
                                  f"at least {MIN_MATCHES} are needed (see --match)")
        return m
    if len(m) < MIN_MATCHES:
        raise EvaluationError(f"only {len(m)} predicted frames match the reference by {method}; "
                              f"at least {MIN_MATCHES} are needed")
    return m


def trajectory_extent(centres: np.ndarray) -> float:
    """Largest distance between two of the points ``[N, 3]`` (chunked, O(N^2) time, O(N) memory)."""
    c = np.asarray(centres, np.float64)
    best = 0.0
    for start in range(0, len(c), 1024):
        block = c[start:start + 1024]
        d2 = ((block[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def position_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray, sim3: Sim3) -> np.ndarray:
    """Per-frame camera-centre error ``[M]`` (reference units) of predicted poses ``[M, 4, 4]``
    mapped by ``sim3`` onto reference poses ``[M, 4, 4]``."""
    return np.linalg.norm(sim3.apply(camera_centres(pred_c2w)) - camera_centres(gt_c2w), axis=1)


def pose_sim3(pred_c2w: np.ndarray, gt_c2w: np.ndarray, centres_sim3: Sim3, axis_fraction: float = 0.1) -> Sim3:
    """Sim(3) pred -> GT fitted on camera centres and camera axes, for mapping scene points.

    Camera centres alone leave the roll about a nearly straight path undetermined
    (KITTI: 3 deg from a single 0.5 m outlier), which moves points metres off the
    path. Each camera therefore adds three points at ``axis_fraction`` of the
    reference extent along its x, y, z axes; the scale is kept from ``centres_sim3``.
    """
    s = centres_sim3.s
    length = axis_fraction * max(trajectory_extent(camera_centres(gt_c2w)), 1e-12)

    def with_axes(c2w: np.ndarray, axis_len: float) -> np.ndarray:  # [4M, 3]
        ends = camera_centres(c2w)[:, None, :] + axis_len * np.swapaxes(c2w[:, :3, :3], -1, -2)
        return np.concatenate([camera_centres(c2w), ends.reshape(-1, 3)])

    rigid = umeyama(s * with_axes(pred_c2w, length / s), with_axes(gt_c2w, length), with_scale=False)
    return Sim3(s, rigid.R, rigid.t)


def orientation_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> np.ndarray:
    """Per-frame rotation error ``[M]`` (degrees) after the rotation that best maps the
    predicted orientations onto the reference ones (SVD of sum G_i P_i^T).

    Fitted on orientations rather than taken from the position Sim(3): on a nearly
    straight path the positions leave the roll about the path axis undetermined.
    """
    Rp, Rg = pred_c2w[:, :3, :3], gt_c2w[:, :3, :3]
    U, _, Vt = np.linalg.svd((Rg @ np.swapaxes(Rp, -1, -2)).sum(axis=0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    return rotation_angle_deg(np.swapaxes(Rg, -1, -2) @ R @ Rp)


def relative_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray, scale: float | np.ndarray,
                    pairs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RPE between frames ``i`` and ``i+1`` of poses ``[M, 4, 4]``.

    The predicted relative translation is multiplied by ``scale`` (the Sim(3)
    scale, per pair when an array ``[M-1]``); the Sim(3) rotation cancels in
    relative poses. ``pairs`` (bool ``[M-1]``) selects which consecutive pairs count.
    Returns translation errors (reference units) and rotation errors (degrees), one per pair.
    """
    rel_gt = invert_se3(gt_c2w[:-1]) @ gt_c2w[1:]  # [M-1, 4, 4]
    rel_pred = invert_se3(pred_c2w[:-1]) @ pred_c2w[1:]
    rel_pred[:, :3, 3] *= np.reshape(scale, (-1, 1)) if np.ndim(scale) else scale
    err = invert_se3(rel_gt) @ rel_pred
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = rotation_angle_deg(err[:, :3, :3])
    if pairs is not None:
        trans, rot = trans[pairs], rot[pairs]
    return trans, rot


def project_rotations(c2w: np.ndarray) -> np.ndarray:
    """Poses ``[M, 4, 4]`` with rotations projected onto SO(3).

    Reference files store rotations with ~7 digits; unprojected, that rounding alone
    reads as ~0.02 deg through the trace-based angle.
    """
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:, :3, :3] = Rotation.from_matrix(out[:, :3, :3]).as_matrix()
    return out


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else float("nan")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


@dataclass
class TrajectoryResult:
    """Trajectory metrics; distances in reference units, angles in degrees."""

    match: str
    num_pred: int
    num_gt: int
    num_matched: int
    coverage: float  # fraction of reference frames that received a pose
    sim3: Sim3  # prediction -> reference, Umeyama on camera centres (defines ATE)
    ate_rmse: float
    ate_mean: float
    ate_median: float
    ate_max: float
    gt_path_length: float  # of the matched reference frames, in order
    gt_extent: float  # largest distance between two matched reference centres
    ate_rmse_rel_path: float  # ate_rmse / gt_path_length
    ate_rmse_rel_extent: float  # ate_rmse / gt_extent
    rot_err_mean_deg: float  # orientation error after the best-fit rotation (orientation_errors)
    rpe_pairs: int
    rpe_trans_rmse: float
    rpe_trans_mean: float
    rpe_rot_rmse_deg: float
    rpe_rot_mean_deg: float
    segments: int = 1
    ate_rmse_per_segment: dict[int, float] = field(default_factory=dict)  # only with > 1 segment
    ignored_duplicates: int = 0
    per_frame: list[dict] = field(default_factory=list)  # gt/pred index, image, position error
    # prediction -> reference fitted on centres and camera axes (pose_sim3): maps scene points
    points_sim3: Sim3 | None = None

    def to_dict(self, per_frame: bool = True) -> dict:
        skip = ("sim3", "points_sim3", "per_frame")
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
        for name in ("sim3", "points_sim3"):
            sim = getattr(self, name)
            out[name] = None if sim is None else {"scale": sim.s, "R": sim.R.tolist(), "t": sim.t.tolist()}
        out["ate_rmse_per_segment"] = {str(k): v for k, v in self.ate_rmse_per_segment.items()}
        if per_frame:
            out["per_frame"] = self.per_frame
        return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def evaluate_trajectory(pred: Sequence[PosedFrame], gt: Sequence[PosedFrame], match: str = "auto",
                        max_dt: float | None = None) -> TrajectoryResult:
    """ATE, RPE and coverage of predicted poses against reference poses.

    One Sim(3) (Umeyama, pred -> GT camera centres) is fitted over all matched
    frames. When the prediction has several world segments, each segment with
    >= 3 matched frames also gets its own Sim(3) (``ate_rmse_per_segment``), and
    RPE skips pairs that cross a segment boundary and uses the pair's segment scale.
    """
    m = match_frames(pred, gt, match, max_dt)
    P = project_rotations(np.stack([pred[i].c2w for i in m.pred]))  # [M, 4, 4]
    G = project_rotations(np.stack([gt[i].c2w for i in m.gt]))  # [M, 4, 4]
    seg = np.array([pred[i].segment for i in m.pred])  # [M]
    sim3 = umeyama(camera_centres(P), camera_centres(G))
    pos_err = position_errors(P, G, sim3)
    rot_err = orientation_errors(P, G)

    seg_ids = sorted(set(seg.tolist()))
    per_segment: dict[int, float] = {}
    pair_scale = np.full(len(m) - 1, sim3.s)
    pair_ok = seg[:-1] == seg[1:]
    if len(seg_ids) > 1:
        for s in seg_ids:
            sel = seg == s
            if sel.sum() < MIN_MATCHES:
                pair_ok &= ~sel[:-1]  # no scale for this segment: its pairs cannot be scored
                continue
            sim_s = umeyama(camera_centres(P[sel]), camera_centres(G[sel]))
            per_segment[s] = _rmse(position_errors(P[sel], G[sel], sim_s))
            pair_scale[sel[:-1]] = sim_s.s
    rpe_t, rpe_r = relative_errors(P, G, pair_scale, pair_ok)

    centres = camera_centres(G)
    length = path_length(G)
    extent = trajectory_extent(centres)
    ate = _rmse(pos_err)
    per_frame = [
        {"gt_index": gt[g].index, "pred_index": pred[p].index, "image": pred[p].image,
         "position_error": float(e), "rotation_error_deg": float(r)}
        for p, g, e, r in zip(m.pred, m.gt, pos_err, rot_err)
    ]
    return TrajectoryResult(
        match=m.method, num_pred=len(pred), num_gt=len(gt), num_matched=len(m),
        coverage=len(m) / len(gt), sim3=sim3,
        ate_rmse=ate, ate_mean=_mean(pos_err), ate_median=float(np.median(pos_err)), ate_max=float(pos_err.max()),
        gt_path_length=length, gt_extent=extent,
        ate_rmse_rel_path=_ratio(ate, length), ate_rmse_rel_extent=_ratio(ate, extent),
        rot_err_mean_deg=_mean(rot_err),
        rpe_pairs=len(rpe_t), rpe_trans_rmse=_rmse(rpe_t), rpe_trans_mean=_mean(rpe_t),
        rpe_rot_rmse_deg=_rmse(rpe_r), rpe_rot_mean_deg=_mean(rpe_r),
        segments=len(seg_ids), ate_rmse_per_segment=per_segment, ignored_duplicates=m.ignored,
        per_frame=per_frame, points_sim3=pose_sim3(P, G, sim3),
    )
