"""The parallax decision on exact correspondences: rotation (any focal), noise, real translation."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.spatial.transform import Rotation

from recon.default.parallax import (
    ParallaxConfig,
    RotationOnlyFit,
    epipolar_noise_px,
    fit_rotation,
    judge_parallax,
    rotation_residual_px,
)

W, H, F = 512, 384, 450.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])


def _scene(rng, n=600, near=2.0, far=8.0):
    """Points in front of a camera at the origin looking down +z."""
    uv = rng.uniform([0, 0], [W, H], (n, 2))
    z = rng.uniform(near, far, n)
    return np.c_[(uv[:, 0] - K[0, 2]) / F * z, (uv[:, 1] - K[1, 2]) / F * z, z]


def _project(X, R, t, K_=K):
    pc = X @ R.T + t
    return pc[:, :2] / pc[:, 2:3] * [K_[0, 0], K_[1, 1]] + K_[:2, 2]


def _pair(rng, R, t, noise_px=0.3):
    X = _scene(rng)
    ui = _project(X, np.eye(3), np.zeros(3)) + rng.normal(0, noise_px, (len(X), 2))
    uj = _project(X, R, t) + rng.normal(0, noise_px, (len(X), 2))
    return ui, uj


def test_a_pure_rotation_has_no_parallax_even_with_a_wrong_focal_guess():
    rng = np.random.default_rng(0)
    R = Rotation.from_euler("yx", [4.0, 1.0], degrees=True).as_matrix()
    ui, uj = _pair(rng, R, np.zeros(3))
    guess = K.copy()
    guess[0, 0] = guess[1, 1] = 1.25 * F  # the prior of unknown intrinsics is rarely right
    ev = judge_parallax([(0, 1, ui, uj)], guess, fit_focal=True)
    assert not ev.has_parallax, ev
    assert ev.ratio < 3


def test_a_static_camera_has_no_parallax():
    rng = np.random.default_rng(1)
    ui, uj = _pair(rng, np.eye(3), np.zeros(3), noise_px=0.5)
    assert not judge_parallax([(0, 1, ui, uj)], K, fit_focal=False).has_parallax


@pytest.mark.parametrize("t", [(0.05, 0, 0), (0, 0, 0.15), (0.03, 0.02, 0.05)], ids=["sideways", "forward", "mixed"])
def test_small_translations_are_parallax(t):
    rng = np.random.default_rng(2)
    R = Rotation.from_euler("y", 2.0, degrees=True).as_matrix()
    ui, uj = _pair(rng, R, np.array(t))
    ev = judge_parallax([(0, 1, ui, uj)], K, fit_focal=True)
    assert ev.has_parallax, ev


def test_matching_noise_is_measured_in_pixels():
    rng = np.random.default_rng(3)
    ui, uj = _pair(rng, np.eye(3), np.array([0.2, 0.0, 0.0]), noise_px=1.0)
    # distance to an epipolar line is one component of 2-D noise of sigma 1 on each image:
    # |N(0, sqrt(2))| has median 0.95 (the fit absorbs a little of it)
    assert 0.6 < epipolar_noise_px(ui, uj) < 1.1
    assert rotation_residual_px(ui, uj, K, fit_focal=False) > 5


def test_the_widest_pair_decides_first_and_too_few_matches_are_not_judged():
    rng = np.random.default_rng(4)
    still = _pair(rng, np.eye(3), np.zeros(3))
    moved = _pair(rng, np.eye(3), np.array([0.1, 0, 0]))
    ev = judge_parallax([(0, 1, *still), (0, 3, *moved)], K, fit_focal=False)
    assert ev.has_parallax and ev.pairs_judged == 1
    few = (moved[0][:5], moved[1][:5])
    assert not judge_parallax([(0, 3, *few)], K, fit_focal=False, config=ParallaxConfig()).has_parallax


def test_a_window_that_turns_on_the_spot_then_moves_is_judged_on_its_neighbours_too():
    """Fifteen views of a turn on the spot, then one step: every pair among the widest twelve is a
    pure rotation, and only the last neighbours moved. They are judged too, and decide."""
    rng = np.random.default_rng(5)
    pairs = []
    for i in range(15):
        for j in range(i + 1, min(i + 4, 16)):
            if j < 15:
                R = Rotation.from_euler("y", 2.0 * (j - i), degrees=True).as_matrix()
                pairs.append((i, j, *_pair(rng, R, np.zeros(3))))
    pairs.append((15, 16, *_pair(rng, np.eye(3), np.array([0.1, 0, 0]))))
    ev = judge_parallax(pairs, K, fit_focal=True)
    assert ev.has_parallax and ev.pair == (15, 16), ev
    assert ev.pairs_judged > ParallaxConfig().max_pairs


def test_the_rotation_fit_returns_the_turn():
    rng = np.random.default_rng(6)
    R = Rotation.from_euler("yx", [25.0, 3.0], degrees=True).as_matrix()
    ui, uj = _pair(rng, R, np.zeros(3))
    found, residual = fit_rotation(ui, uj, K, fit_focal=False)
    assert residual < 1.0
    assert np.degrees(Rotation.from_matrix(found @ R.T).magnitude()) < 0.05


@pytest.mark.parametrize("fit_focal", [True, False])
def test_the_rotation_fit_s_jacobian_is_the_derivative_of_its_residual(fit_focal):
    """The analytic Jacobian the solver is given, against finite differences, at rotations up to
    about 30 degrees, a focal off by 20 %, a non-square pixel and a ray turned behind the camera."""
    rng = np.random.default_rng(3)
    ui, uj = _pair(rng, Rotation.from_euler("yx", [6.0, 2.0], degrees=True).as_matrix(), np.array([0.1, 0, 0]))
    K_ = K.copy()
    K_[1, 1] = 1.1 * F
    model = RotationOnlyFit(ui, uj, K_, fit_focal)
    for w in (np.zeros(3), np.array([0.02, -0.1, 0.05]), np.array([0.3, 0.4, -0.2])):
        params = np.r_[w, np.log(1.2)] if fit_focal else w
        J = model.jacobian(params)
        numeric = approx_fprime(params, model.residual, 1e-7)
        assert J.shape == (2 * len(ui), 4 if fit_focal else 3)
        assert np.allclose(J, numeric, rtol=1e-4, atol=1e-5), np.abs(J - numeric).max()
    behind = RotationOnlyFit(np.array([[K[0, 2], K[1, 2]], [0.0, 0.0]]), np.zeros((2, 2)), K, fit_focal)
    J = behind.jacobian(np.r_[np.pi / 2 * 1.2, 0, 0, 0.0][: 4 if fit_focal else 3])
    assert np.isfinite(J).all()
