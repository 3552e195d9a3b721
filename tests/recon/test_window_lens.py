"""A window's adjustment through a lens: one radial coefficient next to the focal length.

The Jacobians are checked against finite differences, the adjustment against a synthetic problem
with a known lens, and the window model end to end on rendered frames: through a barrel lens its
self-calibrated focal length comes out near the truth only when the lens is adjusted with it, and a
pinhole window keeps no lens.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.default.bundle import BundleProblem, _jacobians, _project, bundle_adjust, project
from recon.default.calibration import StreamFocal, StreamFocalConfig
from recon.default.model import DefaultModelConfig, DefaultWindowModel
from recon.default.sfm import SfmConfig
from stream4d.contracts import Frame
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view


def _ring(views: int = 8, points: int = 400, seed: int = 0):
    """Cameras on an arc looking at a cloud around the origin (world-to-camera rvecs, tvecs) and the points."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.8, 1.8, (points, 3))
    rvecs, tvecs = [], []
    for a in np.linspace(-0.6, 0.6, views):
        centre = np.array([4.0 * np.sin(a), 0.3 * np.cos(3 * a), -4.0 * np.cos(a)])
        forward = -centre / np.linalg.norm(centre)
        right = np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        R = np.stack([right, np.cross(forward, right), forward])  # rows: camera axes in the world
        rvecs.append(Rotation.from_matrix(R).as_rotvec())
        tvecs.append(-R @ centre)
    return np.array(rvecs), np.array(tvecs), X


def test_the_lens_jacobians_match_finite_differences():
    rvecs, tvecs, X = _ring(views=3, points=20)
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    k1 = -0.2
    view = np.repeat(np.arange(3), 20)
    point = np.tile(np.arange(20), 3)
    R = Rotation.from_rotvec(rvecs).as_matrix()
    uv, RX, pc, z = _project(R, tvecs, X, K, view, point, k1)
    Jc, Jp = _jacobians(R[view], RX, pc, z, K[0, 0], K[1, 1], True, k1, True)
    eps = 1e-6

    def numeric(change):
        return (change(eps) - change(-eps)) / (2 * eps)

    for axis in range(3):
        d = np.eye(3)[axis]
        num = numeric(lambda e, d=d: _project(Rotation.from_rotvec(e * d).as_matrix() @ R, tvecs, X, K, view, point, k1)[0])
        assert np.allclose(Jc[:, :, axis], num, atol=1e-4)
        num = numeric(lambda e, d=d: _project(R, tvecs + e * d, X, K, view, point, k1)[0])
        assert np.allclose(Jc[:, :, 3 + axis], num, atol=1e-4)
        num = numeric(lambda e, d=d: _project(R, tvecs, X + e * d, K, view, point, k1)[0])
        assert np.allclose(Jp[:, :, axis], num, atol=1e-4)

    def focal_scaled(e):
        Kf = K.copy()
        Kf[0, 0] *= np.exp(e)
        Kf[1, 1] *= np.exp(e)
        return Kf

    num = numeric(lambda e: _project(R, tvecs, X, focal_scaled(e), view, point, k1)[0])
    assert np.allclose(Jc[:, :, 6], num, atol=1e-4)
    num = numeric(lambda e: _project(R, tvecs, X, K, view, point, k1 + e)[0])
    assert np.allclose(Jc[:, :, 7], num, atol=1e-4)


def test_adjustment_recovers_the_focal_and_the_lens_a_pinhole_misreads():
    rvecs, tvecs, X = _ring()
    K_true = np.array([[320.0, 0, 255.5], [0, 320.0, 143.5], [0, 0, 1]])
    k1 = -0.18
    view = np.repeat(np.arange(len(rvecs)), len(X))
    point = np.tile(np.arange(len(X)), len(rvecs))
    rng = np.random.default_rng(1)
    uv = project(rvecs, tvecs, X, K_true, view, point, k1) + rng.normal(0, 0.3, (len(view), 2))
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 512) & (uv[:, 1] >= 0) & (uv[:, 1] < 288)
    K0 = K_true.copy()
    K0[0, 0] = K0[1, 1] = 360.0  # a guess 12 % long
    noisy = X + rng.normal(0, 0.02, X.shape)
    problem = BundleProblem(rvecs + rng.normal(0, 0.01, rvecs.shape), tvecs, noisy, view[inside], point[inside],
                            uv[inside], K0, refine_focal=True, image_size=(512, 288))
    pinhole = bundle_adjust(problem)
    lens = bundle_adjust(replace(problem, refine_radial=True))
    assert abs(lens.K[0, 0] / 320.0 - 1) < 0.005, lens.K[0, 0]
    assert lens.radial_k1 == pytest.approx(k1, abs=0.01)
    assert abs(pinhole.K[0, 0] / 320.0 - 1) > 3 * abs(lens.K[0, 0] / 320.0 - 1)  # the pinhole reads it off
    assert np.median(lens.residuals_px) < np.median(pinhole.residuals_px)
    evidence = lens.focal_evidence
    assert evidence is not None and evidence.radial_sigma is not None
    assert abs(lens.radial_k1) > 20 * evidence.radial_sigma  # a lens this strong is determined


W, H = 384, 216


def _orbit(radial: float, n: int = 12) -> list[Frame]:
    scene = make_scene("room", seed=4)
    K = intrinsics_for(W, H, 80.0)
    c2w = make_trajectory("orbit", 60, seed=4, scene=scene)[:n]
    return [Frame(index=i, timestamp=i / 10, image=render_view(scene, c, K, W, H, radial_k1=radial).rgb,
                  source=f"{i:03d}.png") for i, c in enumerate(c2w)]


@pytest.fixture(scope="module")
def true_focal() -> float:
    return float(intrinsics_for(W, H, 80.0)[0, 0])


def test_a_window_through_a_barrel_lens_reads_its_focal_through_it(true_focal):
    frames = _orbit(-0.15)
    with_lens = DefaultWindowModel()
    with_lens.reset()
    pred = with_lens.predict(frames)
    report = with_lens.intrinsics_report()["windows"][0]
    assert report["lens"]["kept"], report
    assert report["lens"]["radial_k1"] == pytest.approx(-0.15, abs=0.03)
    assert abs(report["focal_rel"] * W / true_focal - 1) < 0.03, report
    assert pred.sparse is not None and pred.sparse.radial_k1 == pytest.approx(report["lens"]["radial_k1"], abs=1e-6)
    assert abs(pred.K[0, 0, 0] / true_focal - 1) < 0.03

    pinhole = DefaultWindowModel(DefaultModelConfig(sfm=SfmConfig(lens_min_corner_px=0.0)))
    pinhole.reset()
    pinhole.predict(frames)
    off = pinhole.intrinsics_report()["windows"][0]
    assert off["lens"] is None
    assert abs(off["focal_rel"] * W / true_focal - 1) > 2 * abs(report["focal_rel"] * W / true_focal - 1)


def test_a_pinhole_window_keeps_no_lens(true_focal):
    model = DefaultWindowModel()
    model.reset()
    pred = model.predict(_orbit(0.0))
    lens = model.intrinsics_report()["windows"][0]["lens"]
    assert lens is not None and not lens["kept"], lens
    assert pred.sparse.radial_k1 == 0.0


def _fixing_model(**sfm) -> DefaultWindowModel:
    """A model whose stream focal is fixed by its first self-calibrated window."""
    config = DefaultModelConfig(sfm=SfmConfig(**sfm), stream_focal=StreamFocalConfig(min_windows=1, fix_sigma=0.05))
    model = DefaultWindowModel(config)
    model.reset()
    return model


def test_a_window_solved_with_the_streams_fixed_focal_adjusts_through_the_streams_lens():
    frames = _orbit(-0.15, n=22)
    model = _fixing_model()
    model.predict(frames[:12])
    report = model.intrinsics_report()
    assert report["fixed"] and report["windows"][0]["lens"]["kept"], report
    assert report["lens_k1"] == pytest.approx(report["windows"][0]["lens"]["radial_k1"])
    second = model.predict(frames[10:])
    lens = second.info["lens"]
    assert lens["stream"] and lens["kept"], lens
    assert second.sparse.radial_k1 == pytest.approx(report["lens_k1"])
    assert lens["median_reproj_px"] < lens["pinhole_median_reproj_px"]

    pinhole = _fixing_model()
    pinhole.predict([replace(f, image=g.image) for f, g in zip(frames[:12], _orbit(0.0, n=12))])
    assert pinhole.intrinsics_report()["lens_k1"] == 0.0  # no lens kept: the next windows stay pinholes


def test_the_streams_lens_needs_half_of_the_windows():
    focal = StreamFocal(StreamFocalConfig())
    lens = {"kept": True, "radial_k1": -0.1, "radial_sigma": 0.01}
    focal.add(0, (640, 480), np.log(500.0), 0.05, 0.1, lens=lens)
    assert focal.lens_k1() == pytest.approx(-0.1)
    focal.add(1, (640, 480), np.log(505.0), 0.05, 0.1, lens={**lens, "radial_k1": -0.13, "radial_sigma": 0.02})
    assert focal.lens_k1() == pytest.approx((-0.1 / 0.01 ** 2 - 0.13 / 0.02 ** 2) / (1 / 0.01 ** 2 + 1 / 0.02 ** 2))
    focal.add(2, (640, 480), np.log(502.0), 0.05, 0.1, lens={"kept": False, "radial_k1": 0.001})
    focal.add(3, (640, 480), np.log(501.0), 0.05, 0.1)
    assert focal.lens_k1() != 0.0  # two of four
    focal.add(4, (640, 480), np.log(503.0), 0.05, 0.1)
    assert focal.lens_k1() == 0.0  # two of five: most windows are pinholes
