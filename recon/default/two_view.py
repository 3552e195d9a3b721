"""The essential matrix of two views, chosen among several local minima of its fit.

On a small baseline over a nearly planar scene, RANSAC's essential matrix can sit in a wrong
basin of the epipolar fit: every match an inlier at a 1 px threshold, the direction of travel
tens of degrees off, and a median triangulation angle inflated by the error, which is what ranks
initial pairs (docs/default_backend.md, "Initial pairs"). Refining the motion on the Sampson
error from RANSAC's solution, from every solution OpenCV's five-point solver returned, and from
each motion a homography of the same matches decomposes into (near-planar scenes are where that
model holds), and keeping the fit with the lowest truncated cost, finds the true basin.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation


@dataclass
class TwoViewConfig:
    threshold_px: float = 1.0  # RANSAC's inlier distance, and where the selection cost saturates
    confidence: float = 0.999
    start_points: int = 200  # inliers (evenly picked) each start is refined on ...
    final_points: int = 600  # ... and the winner then (its cost grows with them, its accuracy barely)
    min_travel: float = 1e-6  # homography motions with a shorter translation (a rotation) are no start


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])


def fundamental_of(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The fundamental matrix [3, 3] of two views of one camera ``K`` whose motion takes view a's
    coordinates to view b's as x_b = R x_a + t."""
    return _fundamental(np.linalg.inv(K), R, t)


def _fundamental(Kinv: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return Kinv.T @ _skew(t) @ R @ Kinv


def sampson_px(F: np.ndarray, ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """First-order distance [N] in pixels of matches ``ua`` -> ``ub`` ([N, 2]) to the epipolar
    geometry of the fundamental matrix ``F`` (x_b^T F x_a = 0)."""
    xa = np.c_[ua, np.ones(len(ua))]
    xb = np.c_[ub, np.ones(len(ub))]
    Fxa = xa @ F.T
    Ftxb = xb @ F
    den = Fxa[:, 0] ** 2 + Fxa[:, 1] ** 2 + Ftxb[:, 0] ** 2 + Ftxb[:, 1] ** 2
    return np.abs(np.sum(xb * Fxa, axis=1)) / np.sqrt(np.maximum(den, 1e-300))


class _EpipolarFit:
    """Refines a motion (R, unit t), x_b ~ R x_a + s t, on the Sampson distance of matches."""

    def __init__(self, K: np.ndarray, ua: np.ndarray, ub: np.ndarray, threshold_px: float):
        self.Kinv = np.linalg.inv(K)  # once: the refinement evaluates the fundamental matrix many times
        self.ua, self.ub = ua, ub
        self.threshold = threshold_px

    def fundamental(self, R: np.ndarray, t: np.ndarray) -> np.ndarray:
        return _fundamental(self.Kinv, R, t)

    def cost(self, R: np.ndarray, t: np.ndarray, rows: np.ndarray) -> float:
        """Truncated squared distance: an outlier costs threshold^2 whatever the motion."""
        d = sampson_px(self.fundamental(R, t), self.ua[rows], self.ub[rows])
        return float(np.sum(np.minimum(d, self.threshold) ** 2))

    def refine(self, R0: np.ndarray, t0: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0 = t0 / np.linalg.norm(t0)
        # two directions orthogonal to t0 span the unit sphere's tangent plane there
        b1 = np.cross(t0, [1.0, 0.0, 0.0] if abs(t0[0]) < 0.9 else [0.0, 1.0, 0.0])
        b1 /= np.linalg.norm(b1)
        b2 = np.cross(t0, b1)
        ua, ub = self.ua[rows], self.ub[rows]

        def motion(p):
            t = t0 + p[3] * b1 + p[4] * b2
            return Rotation.from_rotvec(p[:3]).as_matrix() @ R0, t / np.linalg.norm(t)

        def residuals(p):
            return sampson_px(self.fundamental(*motion(p)), ua, ub)

        sol = least_squares(residuals, np.zeros(5), loss="soft_l1", f_scale=self.threshold / 2, max_nfev=50)
        return motion(sol.x)


def _evenly(rows: np.ndarray, n: int) -> np.ndarray:
    return rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]


def _homography_motions(ua: np.ndarray, ub: np.ndarray, K: np.ndarray, cfg: TwoViewConfig) -> list:
    """Motions (R, t) a homography of the matches decomposes into, one per rotation: its motions
    come in pairs of opposite travel, which the epipolar fit cannot tell apart."""
    try:
        H, _ = cv2.findHomography(ua, ub, cv2.RANSAC, cfg.threshold_px)
        if H is None:
            return []
        _, Rs, ts, _ = cv2.decomposeHomographyMat(H, K)
    except cv2.error:
        return []
    motions = []
    for R, t in zip(Rs, ts):
        if np.linalg.norm(t) > cfg.min_travel and not any(np.allclose(R, R0, atol=1e-9) for R0, _ in motions):
            motions.append((R, t.ravel()))
    return motions


def essential_matrix(ua: np.ndarray, ub: np.ndarray, K: np.ndarray,
                     cfg: TwoViewConfig | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Essential matrix [3, 3] of pixels ``ua`` -> ``ub`` ([N, 2], intrinsics ``K`` [3, 3]) and its
    inlier mask (uint8 [N, 1], as OpenCV gives it), or None when the matches fit none. OpenCV's
    solver raises on degenerate pairs (a repeated image, no motion at all, tracks on a line): that
    costs the pair, not the window."""
    cfg = cfg or TwoViewConfig()
    try:
        E, mask = cv2.findEssentialMat(ua, ub, K, cv2.RANSAC, cfg.confidence, cfg.threshold_px)
    except cv2.error:
        return None
    if E is None or E.shape[1:] != (3,) or E.shape[0] % 3 or mask is None:
        return None
    inliers = np.nonzero(mask.ravel())[0]
    if len(inliers) < 8:
        return None
    starts = []
    for k in range(0, E.shape[0], 3):
        _, R, t, _ = cv2.recoverPose(E[k:k + 3], ua, ub, K, mask=mask.copy())
        starts.append((R, t.ravel()))
    starts += _homography_motions(ua[inliers], ub[inliers], K, cfg)
    fit = _EpipolarFit(K, ua, ub, cfg.threshold_px)
    sample, final = _evenly(inliers, cfg.start_points), _evenly(inliers, cfg.final_points)
    refined = [fit.refine(R, t, sample) for R, t in starts]
    R, t = min(refined, key=lambda m: fit.cost(*m, final))
    R, t = fit.refine(R, t, final)
    E = _skew(t) @ R
    inlier = sampson_px(fit.fundamental(R, t), ua, ub) <= cfg.threshold_px
    return E / np.linalg.norm(E), inlier.astype(np.uint8)[:, None]
