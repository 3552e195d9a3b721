"""A frame located on known world points (PnP), how precisely, and the depth scale between two views.

Used by loop verification (:mod:`align.loops`) and by re-attachment (:mod:`align.reattach`): both
measure one view against a stored keyframe's lifted points and hand the pose graph that measurement
with its noise.
"""

from __future__ import annotations

import numpy as np

from stream4d.geometry import project_points


def pnp_pose(keypoints: np.ndarray, world: np.ndarray, K: np.ndarray, max_px: float,
             rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Camera-to-world ``[4, 4]`` of a frame from its ``keypoints [N, 2]`` seeing ``world [N, 3]`` (PnP
    RANSAC, then Levenberg-Marquardt on the inliers), its inlier mask and median inlier error (px)."""
    import cv2

    if len(world) < 6:
        return None
    cv2.setRNGSeed(rng_seed)
    ok, rvec, tvec, inl = cv2.solvePnPRansac(world.astype(np.float64), keypoints.astype(np.float64),
                                             K.astype(np.float64), None, iterationsCount=500,
                                             reprojectionError=max_px, confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
    if not ok or inl is None or len(inl) < 6:
        return None
    inl = inl.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(world[inl].astype(np.float64), keypoints[inl].astype(np.float64),
                                      K.astype(np.float64), None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ tvec.ravel()
    uv, z = project_points(world, K, c2w)
    err = np.linalg.norm(uv - keypoints, axis=1)
    err[~(z > 0)] = np.inf
    mask = err <= max_px
    if mask.sum() < 6:
        return None
    return c2w, mask, float(np.median(err[mask]))


def pnp_sigma(c2w: np.ndarray, keypoints: np.ndarray, world: np.ndarray, K: np.ndarray) -> tuple[float, float]:
    """Standard deviations of a PnP pose ``c2w [4, 4]`` fitted to ``keypoints [N, 2]`` seeing ``world [N, 3]``
    (its inliers): (rotation in rad, camera centre in world units), each along its worst direction, from
    the Gauss-Newton covariance ``s^2 (J^T J)^-1`` with ``s`` the RMS reprojection residual. Few points,
    points bunched in the image, or large residuals give a large sigma: how much such a loop may pull."""
    from scipy.spatial.transform import Rotation

    if len(world) < 4:
        return float("inf"), float("inf")
    base, _ = project_points(world, K, c2w)
    residual = (base - keypoints).ravel()
    J = np.empty((residual.size, 6))
    eps = 1e-6
    for d in range(6):  # perturbations: world-frame rotation about the camera centre, then the centre
        moved = np.array(c2w, np.float64, copy=True)
        if d < 3:
            moved[:3, :3] = Rotation.from_rotvec(eps * np.eye(3)[d]).as_matrix() @ moved[:3, :3]
        else:
            moved[d - 3, 3] += eps
        uv, _ = project_points(world, K, moved)
        J[:, d] = ((uv - base) / eps).ravel()
    var = float(residual @ residual) / max(1, residual.size - 6)
    try:
        cov = var * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return float("inf"), float("inf")
    worst = lambda c: float(np.sqrt(max(np.linalg.eigvalsh(c)[-1], 0.0)))  # noqa: E731
    return worst(cov[:3, :3]), worst(cov[3:, 3:])


def pose_change(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rotation in degrees, centre distance) between two camera-to-world poses ``[4, 4]``."""
    R = a[:3, :3].T @ b[:3, :3]
    angle = float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))
    return angle, float(np.linalg.norm(a[:3, 3] - b[:3, 3]))


def depth_ratio(c2w: np.ndarray, world: np.ndarray, query_depth: np.ndarray, prefer: np.ndarray | None,
                min_samples: int = 10) -> tuple[float, float] | None:
    """Median of (depth of ``world [N, 3]`` in the camera ``c2w``) / ``query_depth [N]`` over the pairs that
    project in front and agree within 20 % of that median (``prefer``: use only these when there are
    enough, e.g. triangulated tracks on both sides), and the standard error of its log (robust spread
    of the log ratios over the square root of their count)."""
    w2c = np.linalg.inv(c2w)
    z = world @ w2c[2, :3] + w2c[2, 3]
    ok = (z > 0) & (query_depth > 0)
    if prefer is not None and (ok & prefer).sum() >= min_samples:
        ok &= prefer
    if ok.sum() < min_samples:
        return None
    ratio = z[ok] / query_depth[ok]
    med = float(np.median(ratio))
    close = np.abs(ratio / med - 1.0) < 0.2
    used = ratio[close] if close.sum() >= min_samples else ratio
    logs = np.log(used)
    spread = 1.4826 * float(np.median(np.abs(logs - np.median(logs))))
    return float(np.median(used)), spread / np.sqrt(len(used))
