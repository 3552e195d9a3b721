"""The CPU splat renderer against analytic cases (and against gsplat where CUDA exists)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from memory.gaussians.render import render_gaussians
from memory.gaussians.render_torch import project_gaussians, rasterize
from stream4d.geometry import invert_se3

W, H = 64, 48
K = np.array([[80.0, 0.0, 31.0], [0.0, 90.0, 23.0], [0.0, 0.0, 1.0]])


def gaussians(means, scales, opacities, colors, quats=None) -> dict:
    n = len(means)
    return {
        "means": np.asarray(means, np.float64),
        "quats": np.tile([1.0, 0, 0, 0], (n, 1)) if quats is None else np.asarray(quats, np.float64),
        "scales": np.asarray(scales, np.float64),
        "opacities": np.asarray(opacities, np.float64),
        "colors": np.asarray(colors, np.float64),
    }


def analytic_alpha(mean, R, scales, opacity, c2w, K):
    """EWA footprint of one Gaussian written out in numpy: alpha at every pixel centre ``[H, W]``."""
    w2c = invert_se3(c2w)
    p = w2c[:3, :3] @ mean + w2c[:3, 3]
    cov3 = w2c[:3, :3] @ R @ np.diag(np.square(scales)) @ R.T @ w2c[:3, :3].T
    fx, fy = K[0, 0], K[1, 1]
    J = np.array([[fx / p[2], 0, -fx * p[0] / p[2] ** 2], [0, fy / p[2], -fy * p[1] / p[2] ** 2]])
    cov2 = J @ cov3 @ J.T + 0.3 * np.eye(2)
    u = fx * p[0] / p[2] + K[0, 2]
    v = fy * p[1] / p[2] + K[1, 2]
    xs, ys = np.meshgrid(np.arange(W), np.arange(H))
    d = np.stack([xs - u, ys - v], axis=-1)
    m = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov2), d)
    alpha = np.minimum(opacity * np.exp(-0.5 * m), 0.999)
    return np.where(alpha >= 1 / 255, alpha, 0.0), cov2, (u, v)


def test_single_gaussian_peak_and_one_sigma_radius_match_the_analytic_projection():
    z, s, opacity = 2.0, 0.02, 0.8
    g = gaussians([[0.0, 0.0, z]], [[s, s, s]], [opacity], [[1.0, 0.5, 0.25]])
    # Centre it on pixel (31, 23): the principal point.
    rgb, depth, alpha = render_gaussians(g, np.eye(4), K, W, H, backend="torch")
    assert alpha[23, 31] == pytest.approx(opacity, abs=1e-6)
    assert rgb[23, 31] == pytest.approx([0.8, 0.4, 0.2], abs=1e-6)
    assert depth[23, 31] == pytest.approx(z, rel=1e-6)
    # 1-sigma radius in pixels along x and y from the rendered profile: alpha(d) = o exp(-d^2 / 2 sigma^2).
    for axis, f in ((1, K[0, 0]), (0, K[1, 1])):
        d = np.arange(1, 4)
        profile = alpha[23, 31 + d] if axis == 1 else alpha[23 + d, 31]
        sigma_px = np.sqrt(-(d ** 2) / (2 * np.log(profile / opacity)))
        expected = np.sqrt((f * s / z) ** 2 + 0.3)  # EWA footprint plus the 0.3 px^2 low-pass
        np.testing.assert_allclose(sigma_px, expected, rtol=1e-4)
    # Nothing outside the footprint, where alpha would fall below 1/255.
    assert alpha[0, 0] == 0.0 and depth[0, 0] == 0.0


def test_rotated_off_axis_gaussian_matches_the_ewa_formula_at_every_pixel():
    mean = np.array([0.25, -0.1, 2.5])
    R = Rotation.from_euler("xyz", [20, -35, 60], degrees=True).as_matrix()
    scales = np.array([0.06, 0.015, 0.03])
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_euler("y", 5, degrees=True).as_matrix()
    c2w[:3, 3] = [0.05, 0.02, -0.1]
    x, y, zq, w = Rotation.from_matrix(R).as_quat()
    g = gaussians([mean], [scales], [0.9], [[1, 1, 1]], quats=[[w, x, y, zq]])
    _, _, alpha = render_gaussians(g, c2w, K, W, H, backend="torch")
    expected, cov2, (u, v) = analytic_alpha(mean, R, scales, 0.9, c2w, K)
    assert 0 < u < W and 0 < v < H and abs(cov2[0, 1]) > 0.1  # really off-axis and anisotropic
    np.testing.assert_allclose(alpha, expected, atol=2e-5)


def test_near_opaque_gaussian_occludes_a_far_one_whatever_the_input_order():
    near = ([0.0, 0.0, 2.0], [0.05] * 3, 0.95, [1.0, 0.0, 0.0])
    far = ([0.0, 0.0, 4.0], [0.1] * 3, 0.9, [0.0, 1.0, 0.0])
    for order in ((near, far), (far, near)):
        g = gaussians(*[list(col) for col in zip(*order)])
        rgb, depth, alpha = render_gaussians(g, np.eye(4), K, W, H, backend="torch")
        # Front to back: 0.95 red, then the far green gets 0.9 of the remaining 5 %.
        assert rgb[23, 31] == pytest.approx([0.95, 0.05 * 0.9, 0.0], abs=1e-5)
        assert depth[23, 31] == pytest.approx((0.95 * 2.0 + 0.045 * 4.0) / 0.995, rel=1e-5)
        assert alpha[23, 31] == pytest.approx(0.995, abs=1e-6)


def test_two_half_opaque_gaussians_accumulate_to_three_quarters():
    g = gaussians([[0, 0, 2.0], [0, 0, 3.0]], [[0.02] * 3] * 2, [0.5, 0.5], [[1, 0, 0], [0, 0, 1]])
    rgb, depth, alpha = render_gaussians(g, np.eye(4), K, W, H, backend="torch")
    assert alpha[23, 31] == pytest.approx(0.75, abs=1e-6)
    assert rgb[23, 31] == pytest.approx([0.5, 0.0, 0.25], abs=1e-6)
    # Depth is the alpha-normalised expected z (gsplat's "ED").
    assert depth[23, 31] == pytest.approx((0.5 * 2.0 + 0.25 * 3.0) / 0.75, rel=1e-6)
    # Over a background, the remaining quarter shows it.
    rgb_bg, _, _ = render_gaussians(g, np.eye(4), K, W, H, backend="torch", background=[0.0, 1.0, 0.0])
    assert rgb_bg[23, 31] == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)


def test_compositing_stops_before_the_gaussian_that_would_take_transmittance_under_1e4():
    # Like gsplat: 0.999 then 0.95 would leave T = 5e-5 <= 1e-4, so the second is skipped.
    g = gaussians([[0, 0, 2.0], [0, 0, 3.0]], [[0.02] * 3] * 2, [1.0, 0.95], [[1, 0, 0], [0, 1, 0]])
    rgb, _, alpha = render_gaussians(g, np.eye(4), K, W, H, backend="torch")
    assert alpha[23, 31] == pytest.approx(0.999, abs=1e-6)
    assert rgb[23, 31, 1] == 0.0


def random_scene(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    quats = rng.normal(size=(n, 4))
    return gaussians(
        np.c_[rng.uniform(-1.0, 1.0, (n, 2)), rng.uniform(1.5, 4.0, n)],
        rng.uniform(0.005, 0.05, (n, 3)), rng.uniform(0.05, 0.99, n), rng.uniform(0, 1, (n, 3)),
        quats=quats / np.linalg.norm(quats, axis=1, keepdims=True))


def test_rendering_in_small_row_bands_gives_the_same_image_as_one_pass():
    g = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in random_scene(1500).items()}
    proj = project_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                             torch.eye(4), torch.as_tensor(K, dtype=torch.float32), W, H)
    whole = rasterize(proj, W, H, max_pairs=1 << 30)
    banded = rasterize(proj, W, H, max_pairs=2000)  # forces a band per row or two
    for a, b in zip(whole, banded):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_render_rejects_bad_cameras_and_shapes_with_a_named_input():
    g = random_scene(10)
    with pytest.raises(ValueError, match="c2w"):
        render_gaussians(g, np.eye(3), K, W, H)
    with pytest.raises(ValueError, match="K"):
        render_gaussians(g, np.eye(4), np.zeros((3, 3)), W, H)
    with pytest.raises(ValueError, match="size"):
        render_gaussians(g, np.eye(4), K, 0, H)
    with pytest.raises(ValueError, match="quats"):
        render_gaussians({**g, "quats": g["quats"][:, :3]}, np.eye(4), K, W, H)
    with pytest.raises(ValueError, match="backend"):
        render_gaussians(g, np.eye(4), K, W, H, backend="opengl")


def test_empty_scene_renders_background_with_zero_alpha():
    g = gaussians(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)))
    rgb, depth, alpha = render_gaussians(g, np.eye(4), K, W, H, background=[0.2, 0.3, 0.4])
    assert rgb.shape == (H, W, 3) and np.allclose(rgb, [0.2, 0.3, 0.4])
    assert not alpha.any() and not depth.any()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for gsplat")
def test_torch_renderer_matches_gsplat_on_random_gaussians():
    g = random_scene(5000, seed=1)
    c2w = np.eye(4)
    c2w[:3, 3] = [0.05, -0.03, -0.2]
    K4 = np.array([[320.0, 0.0, 127.5], [0.0, 360.0, 95.5], [0.0, 0.0, 1.0]])
    rgb_t, depth_t, alpha_t = render_gaussians(g, c2w, K4, 4 * W, 4 * H, backend="torch")
    rgb_g, depth_g, alpha_g = render_gaussians(g, c2w, K4, 4 * W, 4 * H, backend="gsplat")
    assert np.abs(alpha_t - alpha_g).mean() < 1e-3
    assert np.abs(rgb_t - rgb_g).mean() < 1e-3
    drawn = alpha_g > 0.5
    assert np.median(np.abs(depth_t - depth_g)[drawn] / depth_g[drawn]) < 1e-3
