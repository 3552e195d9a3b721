"""Poses for the frames between keyframes, from the aligned window around them.

A frame that is not a keyframe (``recon.keyframes``) lies between two keyframes
``a`` and ``b`` of one window. Once that window is in the world, the frame is
posed by PnP-RANSAC: the 3D points the window saw in ``a`` and ``b`` (its
triangulated sparse tracks, or else its most confident point-map pixels) are
followed into the frame with pyramidal Lucas-Kanade (forward-backward checked),
and the camera that projects them there is solved for, starting from the pose
interpolated between ``a`` and ``b``. Only when that fails (too few points,
too few inliers, a pose far off the a-b path, or a rotation-only window with
no depth at all) the interpolated pose itself is used, and said so
(``"interpolated"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from stream4d.contracts import POSE_INTERPOLATED, POSE_TRACKED, WindowPrediction
from stream4d.geometry import radial_undistorted

_LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


@dataclass(frozen=True)
class TrackingConfig:
    max_points: int = 1000  # 3D points followed from each keyframe
    fb_error_px: float = 1.0  # forward-backward disagreement that drops a track
    reprojection_px: float = 1.0  # PnP-RANSAC inlier threshold
    anchor_reprojection_px: float = 1.0  # a sparse point is followed only if its keyframe sees it this close
    min_inliers: int = 15
    min_inlier_share: float = 0.4
    max_offpath: float = 1.0  # PnP centre's distance from the interpolated one, in a-b baselines (+ 1 % depth)


@dataclass
class TrackedPose:
    c2w: np.ndarray  # [4, 4], world of the window
    kind: str  # POSE_TRACKED or POSE_INTERPOLATED
    image: np.ndarray  # uint8 [H, W, 3], the frame at the window's model resolution
    inliers: int = 0
    # The PnP inliers that are the window's sparse points: their rows of ``pred.sparse.points`` (int64 [n])
    # and where the frame sees them (float64 [n, 2], model pixels); None without sparse tracks.
    point_ids: np.ndarray | None = None
    point_xy: np.ndarray | None = None


def interpolate_pose(c2w_a: np.ndarray, c2w_b: np.ndarray, t: float) -> np.ndarray:
    """c2w [4, 4] a share ``t`` in [0, 1] of the way from ``c2w_a`` to ``c2w_b`` (SLERP + linear)."""
    rots = Rotation.from_matrix(np.stack([c2w_a[:3, :3], c2w_b[:3, :3]]))
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], rots)([float(np.clip(t, 0.0, 1.0))]).as_matrix()[0]
    out[:3, 3] = (1 - t) * c2w_a[:3, 3] + t * c2w_b[:3, 3]
    return out


def to_model_pixels(image: np.ndarray, frame_pixel_map: np.ndarray, model_pixel_map: np.ndarray,
                    size: tuple[int, int]) -> np.ndarray:
    """A frame's image (pixels of ``frame_pixel_map``: input -> frame) warped to the model pixels of
    ``model_pixel_map`` (input -> model), ``size`` (W, H)."""
    A = model_pixel_map @ np.linalg.inv(frame_pixel_map)
    if np.allclose(A, np.eye(3)) and image.shape[1::-1] == tuple(size):
        return image
    return cv2.warpAffine(image, A[:2], tuple(int(s) for s in size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class BetweenKeyframes:
    """Poses frames lying between views ``a`` and ``b`` of an aligned window (world frame)."""

    def __init__(self, pred: WindowPrediction, a: int, b: int, config: TrackingConfig | None = None) -> None:
        self.pred, self.a, self.b = pred, a, b
        self.cfg = config or TrackingConfig()
        self._greys = {k: cv2.cvtColor(pred.images[k], cv2.COLOR_RGB2GRAY) for k in (a, b)}
        flat = pred.rotation_only_views[a] or pred.rotation_only_views[b]
        self._anchors = {} if flat else {k: anchor_points_with_ids(pred, k, self._greys[k], self.cfg) for k in (a, b)}

    def pose(self, image: np.ndarray, timestamp: float) -> TrackedPose:
        """The pose of a frame (``image`` uint8 [H, W, 3] already at model pixels, ``timestamp`` s)."""
        pred, a, b = self.pred, self.a, self.b
        ta, tb = float(pred.timestamps[a]), float(pred.timestamps[b])
        t = 0.5 if tb <= ta else (timestamp - ta) / (tb - ta)
        guess = interpolate_pose(pred.c2w[a], pred.c2w[b], t)
        solved = self._pnp(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), guess)
        if solved is None:
            return TrackedPose(guess, POSE_INTERPOLATED, image)
        c2w, ids, uv = solved
        sparse = ids >= 0  # their pixels as seen (through the window's lens, when it has one)
        return TrackedPose(c2w, POSE_TRACKED, image, len(ids), ids[sparse], uv[sparse])

    def _follow(self, k: int, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xy, X, ids = self._anchors.get(k, (np.zeros((0, 2), np.float32), None, None))
        if len(xy) == 0:
            return np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0, np.int64)
        uv, ok = follow_points(self._greys[k], grey, xy, self.cfg.fb_error_px)
        return uv[ok], X[ok], ids[ok]

    def _pnp(self, grey: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(c2w [4, 4], the inliers' sparse point ids (-1: a point-map pixel) [n], their pixels [n, 2])."""
        cfg, pred = self.cfg, self.pred
        followed = [self._follow(k, grey) for k in (self.a, self.b)]
        uv, X, ids = (np.concatenate(parts) for parts in zip(*followed))
        K, k1 = pred.K[self.a], lens_of(pred)
        solved = solve_pnp(X, radial_undistorted(uv, K, k1), K, guess, cfg)
        if solved is None:
            return None
        c2w, inl = solved
        # A pose off the a-b path is a bad solve (few points on one plane, a flipped solution).
        baseline = np.linalg.norm(pred.c2w[self.b][:3, 3] - pred.c2w[self.a][:3, 3])
        depth = np.median(np.linalg.norm(X - guess[:3, 3], axis=1))
        if np.linalg.norm(c2w[:3, 3] - guess[:3, 3]) > cfg.max_offpath * baseline + 0.01 * depth:
            return None
        return c2w, ids[inl], uv[inl]


def anchor_points(pred: WindowPrediction, k: int, grey: np.ndarray,
                  cfg: TrackingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(xy float32 [N, 2] model pixels of view k, X float64 [N, 3] world) to follow into frames;
    ``grey`` is view k's image in grey (uint8 [H, W])."""
    xy, X, _ = anchor_points_with_ids(pred, k, grey, cfg)
    return xy, X


def anchor_points_with_ids(pred: WindowPrediction, k: int, grey: np.ndarray,
                           cfg: TrackingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``anchor_points`` and, per point, its row of ``pred.sparse.points`` (int64 [N]; -1 for a
    point-map pixel)."""
    n = cfg.max_points
    sp = pred.sparse
    if sp is not None:
        rows = np.nonzero(sp.obs_view == k)[0]
        # Only points the keyframe's own pose reprojects where they were seen: the rest would
        # pull the PnP away from the window's poses.
        seen = radial_undistorted(sp.obs_xy[rows], pred.K[k], sp.radial_k1)
        rows = rows[reprojection_px(pred.c2w[k], pred.K[k], sp.points[sp.obs_point[rows]], seen)
                    < cfg.anchor_reprojection_px]
        if len(rows) >= cfg.min_inliers:
            rows = rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(np.int64)]
            ids = sp.obs_point[rows].astype(np.int64)
            return sp.obs_xy[rows].astype(np.float32), sp.points[ids].astype(np.float64), ids
    # No sparse tracks (a backend without them): corners on confident point-map pixels.
    none = np.zeros((0, 2), np.float32), np.zeros((0, 3)), np.zeros(0, np.int64)
    conf = pred.points_conf[k]
    good = (conf > 0) & (pred.depth[k] > 0)
    if good.sum() < cfg.min_inliers:
        return none
    mask = (good & (conf >= np.quantile(conf[good], 0.5))).astype(np.uint8)
    corners = cv2.goodFeaturesToTrack(grey, n, 0.01, 5, mask=mask)
    if corners is None:
        return none
    xy = corners[:, 0]
    u, v = np.round(xy).astype(np.int64).T
    return xy.astype(np.float32), pred.points[k][v, u].astype(np.float64), np.full(len(xy), -1, np.int64)


def lens_of(pred: WindowPrediction) -> float:
    """The radial coefficient of the lens ``pred``'s sparse tracks were seen through (0: a pinhole, or
    no tracks)."""
    return float(pred.sparse.radial_k1) if pred.sparse is not None else 0.0


def project_points(c2w: np.ndarray, K: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The world points ``X`` [N, 3] seen by the camera ``c2w`` [4, 4], ``K`` [3, 3]: (pixels float64
    [N, 2], bool [N] which are in front of it with finite pixels)."""
    w2c = np.linalg.inv(c2w)
    cam = X @ w2c[:3, :3].T + w2c[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[:, :2] / cam[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    return uv, (cam[:, 2] > 0) & np.isfinite(uv).all(axis=1)


def reprojection_px(c2w: np.ndarray, K: np.ndarray, X: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Distance (px) from ``xy`` [N, 2] of the world points ``X`` [N, 3] projected by the camera
    ``c2w`` [4, 4], ``K`` [3, 3]; inf behind the camera."""
    uv, seen = project_points(c2w, K, X)
    return np.where(seen, np.linalg.norm(uv - xy, axis=1), np.inf)


def triangulate_views(K: np.ndarray, c2w_a: np.ndarray, c2w_b: np.ndarray, xa: np.ndarray, xb: np.ndarray,
                      max_px: float, min_angle_deg: float, K_b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points seen at ``xa`` and ``xb`` (pixels [N, 2]) by two posed cameras, of ``K`` [3, 3] (the second
    of ``K_b`` when given): (world points float64 [N, 3], bool [N] which are in front of both cameras,
    reproject within ``max_px`` in both and whose two rays meet at ``min_angle_deg`` or more)."""
    if len(xa) == 0:
        return np.zeros((0, 3)), np.zeros(0, bool)
    K_b = K if K_b is None else K_b
    Pa = K @ np.linalg.inv(c2w_a)[:3]
    Pb = K_b @ np.linalg.inv(c2w_b)[:3]
    Xh = cv2.triangulatePoints(Pa, Pb, xa.T.astype(np.float64), xb.T.astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        X = (Xh[:3] / Xh[3]).T
        ra, rb = X - c2w_a[:3, 3], X - c2w_b[:3, 3]
        cos = (ra * rb).sum(axis=1) / (np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1))
    ok = np.isfinite(X).all(axis=1) & (reprojection_px(c2w_a, K, X, xa) < max_px) & \
        (reprojection_px(c2w_b, K_b, X, xb) < max_px) & (cos < np.cos(np.radians(min_angle_deg)))
    return np.where(ok[:, None], X, 0.0), ok


def follow_points(grey0: np.ndarray, grey1: np.ndarray, xy: np.ndarray, fb_error_px: float | None,
                  win: int = 21, guess: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points ``xy`` float32 [N, 2] of ``grey0`` followed into ``grey1`` (pyramidal Lucas-Kanade,
    forward-backward checked unless ``fb_error_px`` is None): (their positions float64 [N, 2], bool [N]
    which were followed); ``win`` is the Lucas-Kanade window side (px); ``guess`` [N, 2], where the
    search in ``grey1`` starts (else at ``xy``)."""
    if len(xy) == 0:
        return np.zeros((0, 2)), np.zeros(0, bool)
    lk = _LK if win == 21 else {**_LK, "winSize": (win, win)}
    src = xy.reshape(-1, 1, 2).astype(np.float32)
    if guess is None:
        fwd, st1, _ = cv2.calcOpticalFlowPyrLK(grey0, grey1, src, None, **lk)
    else:
        start = np.ascontiguousarray(guess, np.float32).reshape(-1, 1, 2)
        fwd, st1, _ = cv2.calcOpticalFlowPyrLK(grey0, grey1, src, start, flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    if fb_error_px is None:
        return fwd[:, 0].astype(np.float64), st1.ravel().astype(bool)
    if guess is None:
        back, st2, _ = cv2.calcOpticalFlowPyrLK(grey1, grey0, fwd, None, **lk)
    else:  # the way back is as long as the way there: it starts where the point came from
        back, st2, _ = cv2.calcOpticalFlowPyrLK(grey1, grey0, fwd, src.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
    ok = st1.ravel().astype(bool) & st2.ravel().astype(bool) & \
        (np.linalg.norm((back - src)[:, 0], axis=1) < fb_error_px)
    return fwd[:, 0].astype(np.float64), ok


def solve_pnp(X: np.ndarray, uv: np.ndarray, K: np.ndarray, guess: np.ndarray, cfg: TrackingConfig,
              iterations: int = 100) -> tuple[np.ndarray, np.ndarray] | None:
    """PnP-RANSAC from the pose ``guess`` (c2w [4, 4]), refined on the inliers: (c2w [4, 4], inlier
    indices) or None when too few points or inliers (``cfg.min_inliers``, ``cfg.min_inlier_share``)."""
    if len(uv) < cfg.min_inliers:
        return None
    rvec0, tvec0 = _pose_vectors(guess)
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(X, uv, K, None, rvec0, tvec0, useExtrinsicGuess=True,
                                                 iterationsCount=iterations, reprojectionError=cfg.reprojection_px,
                                                 confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error:
        return None
    if not ok or inl is None or len(inl) < max(cfg.min_inliers, cfg.min_inlier_share * len(uv)):
        return None
    inl = inl.ravel()
    c2w = _refined(X[inl], uv[inl], K, rvec, tvec)
    return None if c2w is None else (c2w, inl)


def refine_pose(c2w: np.ndarray, K: np.ndarray, X: np.ndarray, uv: np.ndarray) -> np.ndarray | None:
    """The camera (c2w [4, 4]) that Levenberg-Marquardt on the reprojection error of the world points ``X``
    [N, 3] seen at ``uv`` [N, 2] (``K`` [3, 3]) reaches from ``c2w``; None when it is not finite."""
    return _refined(X, uv, K, *_pose_vectors(c2w))


def _pose_vectors(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's (rvec [3, 1], tvec [3, 1]) of the world-to-camera transform of ``c2w`` [4, 4]."""
    w2c = np.linalg.inv(c2w)
    rvec, _ = cv2.Rodrigues(w2c[:3, :3])
    return rvec, w2c[:3, 3].reshape(3, 1).copy()


def _refined(X: np.ndarray, uv: np.ndarray, K: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray | None:
    rvec, tvec = cv2.solvePnPRefineLM(X, uv, K, None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ tvec.ravel()
    return c2w if np.all(np.isfinite(c2w)) else None
