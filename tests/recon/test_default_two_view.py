"""Essential matrices of small-baseline pairs over nearly planar scenes (recon/default/two_view.py)."""

import cv2
import numpy as np

from recon.default.two_view import essential_matrix, sampson_px

K = np.array([[443.4, 0.0, 255.5], [0.0, 443.4, 191.5], [0.0, 0.0, 1.0]])
SIZE = (512, 384)


def _pair(seed: int, relief_m: float, travel_m: float, noise_px: float, depth_m: float = 2.0):
    """Matches of points on a tilted wall ``depth_m`` away (with ``relief_m`` of normal relief)
    seen from two views ``travel_m`` apart, rotated 0.5-2 degrees: (ua, ub [N, 2], R, unit t)."""
    rng = np.random.default_rng(seed)
    n = 1500
    X = np.c_[rng.uniform(-1.5, 1.5, n), rng.uniform(-1.1, 1.1, n), depth_m + relief_m * rng.standard_normal(n)]
    X[:, 2] += 0.3 * X[:, 0]
    axis = rng.standard_normal(3)
    R = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(rng.uniform(0.5, 2.0)))[0]
    d = rng.standard_normal(3) * [1.0, 1.0, 0.3]
    t = travel_m * d / np.linalg.norm(d)

    def project(P):
        uv = P @ K.T
        return uv[:, :2] / uv[:, 2:]

    ua = project(X) + noise_px * rng.standard_normal((n, 2))
    ub = project(X @ R.T + t) + noise_px * rng.standard_normal((n, 2))
    inside = np.all((ua > 0) & (ua < SIZE) & (ub > 0) & (ub < SIZE), axis=1)
    return ua[inside], ub[inside], R, t / np.linalg.norm(t)


def _travel_error_deg(E, mask, ua, ub, t_true) -> float:
    _, _, t, _ = cv2.recoverPose(E, ua, ub, K, mask=mask.copy())
    return float(np.degrees(np.arccos(np.clip(t.ravel() @ t_true, -1.0, 1.0))))


def test_a_near_planar_small_baseline_pair_gets_its_direction_of_travel():
    # 5 cm of travel 2 m from a wall with 5 cm of relief: the triangulation angle is under 1.5 degrees
    ours, ransac = [], []
    for seed in range(12):
        ua, ub, _, t = _pair(seed, relief_m=0.05, travel_m=0.05, noise_px=0.2)
        E, mask = essential_matrix(ua, ub, K)
        ours.append(_travel_error_deg(E, mask, ua, ub, t))
        E0, mask0 = cv2.findEssentialMat(ua, ub, K, cv2.RANSAC, 0.999, 1.0)
        ransac.append(_travel_error_deg(E0[:3], mask0, ua, ub, t))
    assert max(ours) < 5.0, ours
    # the case is one where the first RANSAC solution is usually in a wrong basin
    assert np.median(ransac) > 10.0, ransac


def test_a_well_conditioned_pair_keeps_its_accuracy_and_its_inliers():
    ua, ub, R, t = _pair(3, relief_m=0.5, travel_m=0.3, noise_px=0.3)
    rng = np.random.default_rng(7)
    wrong = rng.choice(len(ub), 100, replace=False)
    ub[wrong] = rng.uniform((0, 0), SIZE, (100, 2))  # mismatches
    E, mask = essential_matrix(ua, ub, K)
    assert _travel_error_deg(E, mask, ua, ub, t) < 1.0
    inlier = mask.ravel().astype(bool)
    assert inlier[wrong].mean() < 0.1
    keep = np.setdiff1d(np.arange(len(ua)), wrong)
    assert inlier[keep].mean() > 0.95
    Kinv = np.linalg.inv(K)
    assert np.median(sampson_px(Kinv.T @ E @ Kinv, ua[keep], ub[keep])) < 0.5


def test_a_repeated_image_gives_no_matrix():
    ua = np.random.default_rng(0).uniform((0, 0), SIZE, (200, 2))
    assert essential_matrix(ua, ua.copy(), K) is None
