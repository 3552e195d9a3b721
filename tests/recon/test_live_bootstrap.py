"""The two-view bootstrap of a live stream's first map (recon/live_bootstrap.py) on rendered frames with
exact geometry: it recovers the relative pose, poses the frames held since the reference, refuses a
camera that only rotates, and the Sim(3) between two worlds is found from cameras posed in both."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.live_bootstrap import BootstrapConfig, TwoViewBootstrap, pose_sim3, two_view
from stream4d.geometry import Sim3, rotation_angle_deg
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

W, H = 320, 240
K = intrinsics_for(W, H)


@pytest.fixture(scope="module")
def scene():
    return make_scene("room", seed=0)


def run(scene, c2w, K_given, images=None):
    boot = TwoViewBootstrap()
    for i, pose in enumerate(c2w):
        image = render_view(scene, pose, K, W, H).rgb if images is None else images[i]
        m = boot.add(image, i, i / 30.0, K_given)
        if m is not None:
            return boot, m
    return boot, None


def relative(c2w, a, b):
    return np.linalg.inv(c2w[a]) @ c2w[b]


def direction_error_deg(t, t_true):
    cos = t @ t_true / (np.linalg.norm(t) * np.linalg.norm(t_true))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


@pytest.mark.parametrize("kind,frames,kw", [("orbit", 60, {"arc_deg": 30}), ("sideways", 40, {"step": 0.02}),
                                            ("forward", 40, {})])
def test_the_relative_pose_is_recovered_and_the_held_frames_are_posed(scene, kind, frames, kw):
    c2w = make_trajectory(kind, frames, seed=0, scene=scene, **kw)
    boot, m = run(scene, c2w, K)
    assert m is not None, boot.report()
    assert m.reference == 0 and m.index < frames - 1 and m.median_angle_deg >= boot.config.min_angle_deg
    truth = relative(c2w, 0, m.index)
    got = m.poses[m.index][1]
    # Within a quarter degree of rotation and 2 degrees of translation direction on exact renders.
    assert rotation_angle_deg(got[:3, :3] @ truth[:3, :3].T) < 0.25
    assert direction_error_deg(got[:3, 3], truth[:3, 3]) < 2.0
    # The scale is the points' median depth in the reference: 1.
    assert np.median(m.X[:, 2]) == pytest.approx(1.0, rel=1e-6)
    # Every frame from the reference to the init frame has a pose, in the same world up to that scale.
    assert sorted(m.poses) == list(range(m.index + 1))
    scale = np.linalg.norm(truth[:3, 3]) / np.linalg.norm(got[:3, 3])
    for i, (_, pose) in m.poses.items():
        true_i = relative(c2w, 0, i)
        assert rotation_angle_deg(pose[:3, :3] @ true_i[:3, :3].T) < 0.3, i
        assert np.linalg.norm(scale * pose[:3, 3] - true_i[:3, 3]) < 0.1 * np.linalg.norm(truth[:3, 3]) + 1e-3, i
    # The map's points are where the init frame sees them.
    w2c = np.linalg.inv(got)
    cam = m.X @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    assert np.median(np.linalg.norm(uv - m.xy, axis=1)) < 0.5


def test_without_intrinsics_the_default_backends_prior_is_used(scene):
    c2w = make_trajectory("orbit", 60, seed=0, scene=scene, arc_deg=30)
    boot, m = run(scene, c2w, None)
    assert m is not None, boot.report()
    assert m.K[0, 0] == pytest.approx(1.0 * max(W, H))  # DefaultModelConfig.focal_prior x longest side
    truth = relative(c2w, 0, m.index)
    got = m.poses[m.index][1]
    # A 15 % wrong focal length: the pose is provisional, but still roughly right.
    assert rotation_angle_deg(got[:3, :3] @ truth[:3, :3].T) < 1.5
    assert direction_error_deg(got[:3, 3], truth[:3, 3]) < 10.0


def test_a_camera_that_only_rotates_is_refused(scene):
    centre = make_trajectory("orbit", 1, seed=0, scene=scene)[0]
    pan = [np.r_[np.c_[centre[:3, :3] @ Rotation.from_euler("yx", [0.25 * i, 0.08 * i], degrees=True).as_matrix(),
                       centre[:3, 3]], [[0, 0, 0, 1]]] for i in range(60)]  # 15 degrees of pan, 5 of tilt
    images = [render_view(scene, pose, K, W, H).rgb for pose in pan]
    for K_given in (K, None):
        boot, m = run(scene, np.stack(pan), K_given, images)
        assert m is None, (m and m.median_angle_deg, boot.report())
        assert boot.references == 1  # the tracks survived: refused for the geometry, not lost


def test_the_two_view_checks_refuse_rotation_and_too_little_translation():
    """Past the parallax gate, the geometry itself refuses: points projected into two views from one
    centre (a rotation: the homography explains them all) or from centres too close for their depth."""
    rng = np.random.default_rng(1)
    X = np.c_[rng.uniform(-2, 2, (300, 2)), rng.uniform(3, 8, 300)]

    def project(R, c):
        cam = (X - c) @ R  # rows: R^T (X - c)
        return cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2] + rng.normal(0, 0.2, (len(X), 2))

    a = project(np.eye(3), np.zeros(3))
    R = Rotation.from_euler("yx", [8, 3], degrees=True).as_matrix()
    cfg = BootstrapConfig()
    assert two_view(a, project(R, np.zeros(3)), K, cfg) in ("homography", "angle")
    assert two_view(a, project(R, np.array([0.02, 0, 0])), K, cfg) in ("homography", "angle")
    moved = two_view(a, project(R, np.array([0.3, 0.05, 0])), K, cfg)
    assert not isinstance(moved, str) and rotation_angle_deg(moved[0][:3, :3] @ R.T) < 0.2


def test_the_similarity_between_two_worlds_comes_from_cameras_posed_in_both():
    rng = np.random.default_rng(0)
    src = np.stack([np.r_[np.c_[Rotation.random(random_state=i).as_matrix(), rng.normal(size=3)], [[0, 0, 0, 1]]]
                    for i in range(5)])
    truth = Sim3(2.5, Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix(), np.array([1.0, 2, 3]))
    dst = truth.apply_c2w(src)
    got = pose_sim3(src, dst)
    assert got is not None and got.s == pytest.approx(2.5) and np.allclose(got.R, truth.R) and np.allclose(got.t, truth.t)
    # Two cameras on a line are enough: the rotations fix what the centres leave free.
    assert pose_sim3(src[:2], dst[:2]) is not None
    bad = dst.copy()
    bad[0, :3, :3] = bad[0, :3, :3] @ Rotation.from_euler("y", 20, degrees=True).as_matrix()
    assert pose_sim3(src, bad) is None  # the worlds disagree on a camera
    assert pose_sim3(src[:1], dst[:1]) is None
