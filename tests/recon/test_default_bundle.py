"""Bundle adjustment of a window on a synthetic scene with exact geometry."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.default.bundle import BundleProblem, bundle_adjust, project, refine_points


def _scene(seed: int = 0, views: int = 8, points: int = 400):
    """Cameras on an arc looking at a box of points; ``[V, 3]`` rotation vectors / translations."""
    rng = np.random.default_rng(seed)
    X = rng.uniform([-2, -1.5, 3], [2, 1.5, 8], size=(points, 3))  # deep: focal is observable
    rvecs, tvecs = [], []
    for k in range(views):
        angle = np.radians(-20 + 6 * k)
        R = Rotation.from_euler("y", angle).as_matrix()  # world-to-camera rotation
        centre = np.array([5 * np.sin(-angle), 0.1 * k, 5 - 5 * np.cos(angle)])
        rvecs.append(Rotation.from_matrix(R).as_rotvec())
        tvecs.append(-R @ centre)
    K = np.array([[400.0, 0, 255.5], [0, 400.0, 191.5], [0, 0, 1]])
    return np.array(rvecs), np.array(tvecs), X, K, rng


def _problem(refine_focal: bool, drop_half: bool = False):
    rvecs, tvecs, X, K, rng = _scene()
    V, P = len(rvecs), len(X)
    view, point = np.meshgrid(np.arange(V), np.arange(P), indexing="ij")
    view, point = view.ravel(), point.ravel()
    if drop_half:  # tracks that skip views, so camera-point blocks are sparse
        keep = rng.random(len(view)) < 0.6
        view, point = view[keep], point[keep]
    order = rng.permutation(len(view))  # the solver must not rely on the caller's order
    view, point = view[order], point[order]
    uv = project(rvecs, tvecs, X, K, view, point) + rng.normal(0, 0.3, (len(view), 2))
    outliers = rng.choice(len(view), len(view) // 50, replace=False)
    uv[outliers] += rng.uniform(20, 40, (len(outliers), 2))
    noisy_r = rvecs + rng.normal(0, 0.01, rvecs.shape)
    noisy_t = tvecs + rng.normal(0, 0.05, tvecs.shape)
    noisy_r[0], noisy_t[0] = rvecs[0], tvecs[0]  # the fixed view carries the true gauge
    start_K = K.copy()
    if refine_focal:
        start_K[0, 0] = start_K[1, 1] = 440.0  # 10 % off
    problem = BundleProblem(noisy_r, noisy_t, X + rng.normal(0, 0.05, X.shape), view, point, uv,
                            start_K, fixed_view=0, refine_focal=refine_focal)
    return problem, (rvecs, tvecs, X, K), outliers


@pytest.mark.parametrize("refine_focal", [False, True])
@pytest.mark.parametrize("drop_half", [False, True])
def test_bundle_adjust_recovers_noisy_scene(refine_focal, drop_half):
    problem, (rvecs, tvecs, X, K), outliers = _problem(refine_focal, drop_half)
    before = np.linalg.norm(project(problem.rvecs, problem.tvecs, problem.points, problem.K,
                                    problem.obs_view, problem.obs_point) - problem.obs_uv, axis=1)
    res = bundle_adjust(problem)
    inliers = np.ones(len(problem.obs_uv), bool)
    inliers[outliers] = False
    # Residuals come back in the caller's observation order: inliers at the noise level, outliers not.
    assert np.median(before[inliers]) > 5
    assert np.median(res.residuals_px[inliers]) < 0.5
    assert np.all(res.residuals_px[outliers] > 10)
    if refine_focal:
        assert res.K[0, 0] == pytest.approx(K[0, 0], rel=0.01)
    else:
        assert np.array_equal(res.K, problem.K)
    # The fixed view stays put; the others approach the truth (scale is free: compare directions).
    assert np.allclose(res.rvecs[0], rvecs[0]) and np.allclose(res.tvecs[0], tvecs[0])
    R = Rotation.from_rotvec(res.rvecs)
    R_true = Rotation.from_rotvec(rvecs)
    assert np.degrees((R * R_true.inv()).magnitude()).max() < 0.2


def test_bundle_adjust_refuses_a_point_seen_twice_in_one_view():
    problem, _, _ = _problem(False)
    problem.obs_view[1] = problem.obs_view[0]
    problem.obs_point[1] = problem.obs_point[0]
    with pytest.raises(ValueError, match="observed twice"):
        bundle_adjust(problem)


def test_refine_points_fits_points_to_fixed_cameras_in_the_callers_order():
    """Points triangulated under another focal are moved onto the given cameras and K; an outlier
    observation keeps its large error, the others come back at the noise level."""
    rvecs, tvecs, X, K, rng = _scene(seed=3, points=300)
    V, P = len(rvecs), len(X)
    view, point = (a.ravel() for a in np.meshgrid(np.arange(V), np.arange(P), indexing="ij"))
    order = rng.permutation(len(view))
    view, point = view[order], point[order]
    uv = project(rvecs, tvecs, X, K, view, point) + rng.normal(0, 0.2, (len(view), 2))
    uv[0] += 30.0
    start = X * 1.08 + rng.normal(0, 0.05, X.shape)  # depths of a 8 % longer focal, and noise
    before = np.linalg.norm(project(rvecs, tvecs, start, K, view, point) - uv, axis=1)
    points, err = refine_points(rvecs, tvecs, start, K, view, point, uv)
    assert np.median(before) > 5
    assert err[0] > 20
    assert np.percentile(err[1:], 95) < 0.6
    np.testing.assert_allclose(err, np.linalg.norm(project(rvecs, tvecs, points, K, view, point) - uv, axis=1))
    assert np.median(np.linalg.norm(points - X, axis=1)) < 0.02
