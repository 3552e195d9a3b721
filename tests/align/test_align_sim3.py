import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from align.sim3 import camera_anchors, kabsch_on_anchors, overlap_noise, register_overlap, robust_scale
from align.synthetic import random_sim3


def random_cameras(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([random_sim3(rng, (1.0, 1.0)).matrix() for _ in range(n)])  # [n, 4, 4], unit scale


def test_robust_scale_is_exact_on_exact_data_without_iterating():
    a = np.random.default_rng(0).uniform(1, 10, 1000)
    fit = robust_scale(a, 2.5 * a)
    assert fit.scale == pytest.approx(2.5, rel=1e-12)
    assert fit.iterations == 0
    assert fit.inlier_fraction == 1.0


@pytest.mark.parametrize("kind", ["uniform garbage", "3-5x too far", "3-10x too near"])
def test_robust_scale_survives_30_percent_outliers(kind):
    rng = np.random.default_rng(1)
    a = rng.uniform(1, 10, 5000)
    b = 2.5 * a * (1 + 0.01 * rng.standard_normal(a.size))
    out = rng.random(a.size) < 0.3
    if kind == "uniform garbage":
        b[out] = rng.uniform(0.1, 60, out.sum())
    elif kind == "3-5x too far":
        b[out] *= rng.uniform(3, 5, out.sum())
    else:
        b[out] /= rng.uniform(3, 10, out.sum())
    least_squares = (a @ b) / (a @ a)
    assert abs(least_squares / 2.5 - 1) > 0.15  # the outliers do matter
    fit = robust_scale(a, b)
    assert fit.scale == pytest.approx(2.5, rel=0.01)
    assert fit.inlier_fraction == pytest.approx(0.7, abs=0.05)


def test_robust_scale_rejects_samples_it_cannot_use():
    with pytest.raises(ValueError, match="non-zero source"):
        robust_scale(np.zeros(10), np.ones(10))
    with pytest.raises(ValueError, match="non-zero source"):
        robust_scale(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="matching samples"):
        robust_scale(np.ones(3), np.ones(4))


def test_anchors_are_centre_view_and_up_in_opencv_axes():
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    anchors = camera_anchors(c2w[None], scale=2.0)
    np.testing.assert_allclose(anchors, [[2, 4, 6], [2, 4, 7], [2, 3, 6]])


@pytest.mark.parametrize("num_cameras", [1, 5])
def test_kabsch_on_anchors_recovers_rotation_and_translation_at_the_given_scale(num_cameras):
    rng = np.random.default_rng(2)
    truth = random_sim3(rng)
    window = random_cameras(rng, num_cameras)
    world = truth.apply_c2w(window)
    got = kabsch_on_anchors(window, world, truth.s)
    np.testing.assert_allclose(got.R, truth.R, atol=1e-10)
    np.testing.assert_allclose(got.t, truth.t, atol=1e-9)
    assert got.s == truth.s


def test_kabsch_uses_cameras_not_points_so_a_wrong_scale_only_moves_the_translation():
    rng = np.random.default_rng(3)
    truth = random_sim3(rng)
    window = random_cameras(rng, 4)
    got = kabsch_on_anchors(window, truth.apply_c2w(window), 1.3 * truth.s)
    # Viewing and up directions do not depend on scale: the rotation stays right.
    np.testing.assert_allclose(got.R, truth.R, atol=0.05)


def test_register_overlap_falls_back_to_camera_spread_then_to_unit_scale():
    rng = np.random.default_rng(4)
    truth = random_sim3(rng)
    window = random_cameras(rng, 3)
    world = truth.apply_c2w(window)
    depth = np.ones((3, 8, 8))
    no_pixels = np.zeros((3, 8, 8), bool)
    reg = register_overlap(depth, depth, no_pixels, world, window)
    assert reg.scale_source == "camera_centres"
    assert reg.sim3.s == pytest.approx(truth.s, rel=1e-9)
    np.testing.assert_allclose(reg.sim3.apply_c2w(window), world, atol=1e-8)
    single = register_overlap(depth[:1], depth[:1], no_pixels[:1], world[:1], window[:1])
    assert single.scale_source == "unit" and single.sim3.s == 1.0
    assert single.overlap_pixels == 0



def test_a_unit_scale_registration_stands_the_window_on_the_last_shared_frame():
    """A window without parallax has its shared cameras on one spot; the world has them a few
    steps apart (the end of a walk before a turn). The window goes where the last of them, next
    to its new frames, stands, not to their centroid."""
    rng = np.random.default_rng(6)
    world = np.repeat(random_cameras(rng, 1), 3, axis=0)
    world[:2, :3, 3] -= np.array([[0.2, 0, 0.1], [0.1, 0, 0.05]])  # the last steps
    truth = random_sim3(rng, (1.0, 1.0))
    window = truth.inverse().apply_c2w(world)
    window[:, :3, 3] = window[-1, :3, 3]  # the window saw no parallax: one spot
    depth = np.ones((3, 8, 8))
    reg = register_overlap(depth, depth, np.zeros((3, 8, 8), bool), world, window)
    assert reg.scale_source == "unit" and reg.sim3.s == 1.0
    placed = reg.sim3.apply_c2w(window)
    np.testing.assert_allclose(placed[:, :3, 3], np.repeat(world[-1:, :3, 3], 3, axis=0), atol=1e-9)
    np.testing.assert_allclose(placed[:, :3, :3], world[:, :3, :3], atol=0.05)


def test_overlap_noise_is_how_far_the_shared_frames_still_disagree():
    """Five shared frames mapped exactly by the registration disagree by nothing; one of them turned
    by 0.5 degrees, moved by 0.02 and seeing 4 % deeper adds exactly that to the RMS over the five."""
    rng = np.random.default_rng(8)
    truth = random_sim3(rng)
    window = random_cameras(rng, 5)
    world = truth.apply_c2w(window)
    window_depth = rng.uniform(1.0, 3.0, (5, 16, 16))
    world_depth = truth.s * window_depth
    mask = np.ones((5, 16, 16), bool)
    assert overlap_noise(truth, world_depth, window_depth, mask, world, window) == pytest.approx((0, 0, 0), abs=1e-9)
    turned = world.copy()
    turned[2, :3, :3] = Rotation.from_rotvec([0.0, np.radians(0.5), 0.0]).as_matrix() @ turned[2, :3, :3]
    turned[2, :3, 3] += [0.02, 0.0, 0.0]
    deeper = world_depth.copy()
    deeper[2] *= 1.04
    rotation, centre, log_scale = overlap_noise(truth, deeper, window_depth, mask, turned, window)
    assert rotation == pytest.approx(np.radians(0.5) / np.sqrt(5), rel=1e-6)
    assert centre == pytest.approx(0.02 / np.sqrt(5), rel=1e-6)
    assert log_scale == pytest.approx(np.log(1.04) / np.sqrt(5), rel=1e-6)  # about the frames' median
    few = mask.copy()
    few[2:] = False  # two frames with confident pixels: too few to tell
    assert overlap_noise(truth, world_depth, window_depth, few, world, window) is None
