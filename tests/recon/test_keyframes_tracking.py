"""Keyframes by parallax (recon.keyframes) and poses for the frames between them (recon.tracking)."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.keyframes import KeyframeConfig, ParallaxKeyframer
from recon.live_tracking import MapTracker
from recon.tracking import BetweenKeyframes, follow_points, interpolate_pose, triangulate_views
from stream4d.contracts import POSE_INTERPOLATED, POSE_TRACKED, SparseTracks, WindowPrediction
from stream4d.geometry import radial_distorted
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

W, H = 256, 192


@lru_cache(maxsize=None)
def _orbit_views(n: int, arc_deg: float):
    """A slow orbit (the same motion whatever ``n``) rendered densely: (c2w [n, 4, 4], K, views)."""
    scene = make_scene("room", seed=0)
    K = intrinsics_for(W, H)
    c2w = make_trajectory("orbit", n, seed=0, scene=scene, arc_deg=arc_deg)
    return c2w, K, [render_view(scene, c, K, W, H) for c in c2w]


def _keyframes(rate: float, fastest: float, views) -> int:
    step = int(round(fastest / rate))
    kf = ParallaxKeyframer()
    decisions = [kf.decide(v.rgb, n / rate) for n, v in enumerate(views[::step])]
    return sum(d.keyframe for d in decisions) + sum(d.previous for d in decisions)


def test_keyframe_spacing_follows_the_motion_not_the_frame_rate():
    # 1.5 s of a 20 degree arc at 60, 30 and 10 fps: 90, 45 and 15 frames of the same motion.
    _, _, views = _orbit_views(90, 20.0)
    counts = {rate: _keyframes(rate, 60.0, views) for rate in (60.0, 30.0, 10.0)}
    assert counts[60.0] <= 15 and counts[30.0] <= 15, counts  # far fewer than the 90 / 45 frames
    assert max(counts.values()) <= 1.5 * min(counts.values()), counts
    assert min(counts.values()) >= 4, counts  # the camera moved: several keyframes, not one


def test_a_still_camera_gets_a_keyframe_per_interval_only():
    _, _, views = _orbit_views(90, 20.0)
    kf = ParallaxKeyframer(KeyframeConfig(max_interval_s=1.0))
    decisions = [kf.decide(views[0].rgb, n / 30.0) for n in range(61)]  # 2 s of one image at 30 fps
    assert [n for n, d in enumerate(decisions) if d.keyframe] == [0, 30, 60]
    assert {d.reason for d in decisions if d.keyframe} == {"first", "interval"}


def test_keyframe_config_rejects_bad_values():
    with pytest.raises(ValueError, match="policy"):
        KeyframeConfig(policy="sometimes")
    with pytest.raises(ValueError, match="min_parallax"):
        KeyframeConfig(min_parallax=0.0)
    with pytest.raises(ValueError, match="max_interval_frames"):
        KeyframeConfig(max_interval_frames=0)


def test_folders_get_parallax_keyframes_at_a_third_of_the_threshold_and_count_positions():
    auto = KeyframeConfig()
    assert auto.for_source("video", 30.0) is auto
    folder = auto.for_source("images", None)
    assert folder.min_parallax == pytest.approx(auto.min_parallax / 3)
    assert folder.max_interval_s == auto.max_interval_frames  # timestamps are positions
    assert auto.for_source("dataset", 10.0).max_interval_s == auto.max_interval_s  # a frame rate: seconds
    explicit = KeyframeConfig(policy="parallax").for_source("images", None)
    assert explicit.min_parallax == auto.min_parallax and explicit.max_interval_s == auto.max_interval_frames
    assert KeyframeConfig(policy="all").for_source("video", 30.0) is None
    assert auto.for_source("", None) is None  # a source of unknown kind: every frame, as before


def _window(views, keep: list[int], rotation_only: bool = False) -> WindowPrediction:
    """A window of the exact views ``keep`` in the world: ground-truth poses, depth and point maps."""
    S = len(keep)
    K = views[0].K
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    points = []
    for i in keep:
        cam = rays * views[i].depth[..., None]
        points.append(cam @ views[i].c2w[:3, :3].T + views[i].c2w[:3, 3])
    depth = np.stack([views[i].depth for i in keep]).astype(np.float32)
    return WindowPrediction(
        frame_indices=np.array(keep, np.int64), timestamps=np.array(keep, np.float64) / 30.0,
        sources=tuple(f"clip#{i}" for i in keep), images=np.stack([views[i].rgb for i in keep]),
        depth=depth, depth_conf=(depth > 0).astype(np.float32), c2w=np.stack([views[i].c2w for i in keep]),
        K=np.repeat(K[None], S, axis=0), points=np.stack(points).astype(np.float32),
        points_conf=(depth > 0).astype(np.float32), pixel_maps=np.repeat(np.eye(3)[None], S, axis=0),
        input_sizes=np.repeat(np.array([[W, H]]), S, axis=0), rotation_only=np.full(S, rotation_only))


def _errors(c2w: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    dist = float(np.linalg.norm(c2w[:3, 3] - gt[:3, 3]))
    angle = float(np.degrees(Rotation.from_matrix(c2w[:3, :3].T @ gt[:3, :3]).magnitude()))
    return dist, angle


def test_frames_between_keyframes_are_tracked_close_to_ground_truth():
    c2w, _, views = _orbit_views(90, 20.0)
    a, b = 0, 12
    between = BetweenKeyframes(_window(views, [a, b]), 0, 1)
    baseline = np.linalg.norm(c2w[b, :3, 3] - c2w[a, :3, 3])
    for i in (3, 6, 9):
        # A camera off the a-b path by a shake the interpolation cannot know of: tracking must find it.
        shaken = c2w[i].copy()
        shaken[:3, 3] += np.array([0.3, -0.2, 0.1]) * baseline
        shaken[:3, :3] = shaken[:3, :3] @ Rotation.from_euler("xyz", [0.4, -0.3, 0.2], degrees=True).as_matrix()
        image = render_view(make_scene("room", seed=0), shaken, views[0].K, W, H).rgb
        tracked = between.pose(image, i / 30.0)
        assert tracked.kind == POSE_TRACKED and tracked.inliers >= 50
        dist, angle = _errors(tracked.c2w, shaken)
        assert dist < 0.03 * baseline and angle < 0.05, (i, dist / baseline, angle)
        guess_dist, _ = _errors(interpolate_pose(c2w[a], c2w[b], i / b), shaken)
        assert dist < 0.2 * guess_dist


def test_a_tracked_frame_keeps_which_sparse_points_it_saw_and_where():
    """With sparse tracks in the window, the PnP inliers that are its points come back as their rows and
    the frame's pixels: what the final adjustment solves the frame again with."""
    c2w, K, views = _orbit_views(90, 20.0)
    pred = _window(views, [0, 12])
    grey = cv2.cvtColor(views[0].rgb, cv2.COLOR_RGB2GRAY)
    xy = cv2.goodFeaturesToTrack(grey, 400, 0.01, 5)[:, 0].astype(np.float64)
    u, v = np.round(xy).astype(np.int64).T
    X = pred.points[0][v, u].astype(np.float64)
    seen_b, _ = _project(X, c2w[12], K)
    n = len(X)
    pred.sparse = SparseTracks(X, np.zeros((n, 3), np.uint8), np.r_[np.arange(n), np.arange(n)],
                               np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)], np.r_[xy, seen_b],
                               np.repeat(K[None], 2, axis=0))
    tracked = BetweenKeyframes(pred, 0, 1).pose(views[6].rgb, 6 / 30.0)
    assert tracked.kind == POSE_TRACKED and len(tracked.point_ids) == tracked.inliers >= 100
    assert tracked.point_ids.min() >= 0 and tracked.point_ids.max() < n
    where, _ = _project(X[tracked.point_ids], c2w[6], K)
    assert np.median(np.linalg.norm(where - tracked.point_xy, axis=1)) < 0.5


def test_frames_seen_through_the_windows_lens_are_tracked_through_it():
    """A window that adjusted a lens (``SparseTracks.radial_k1``) hands it on: the frames between its
    keyframes are posed on their pixels undistorted through it, as its points were."""
    k1 = -0.2  # a barrel lens: 9 px at the corner of a 256 px frame
    c2w, K, views = _orbit_views(90, 20.0)
    scene = make_scene("room", seed=0)
    bent = {i: render_view(scene, c2w[i], K, W, H, radial_k1=k1).rgb for i in (0, 6, 12)}
    grey = cv2.cvtColor(views[0].rgb, cv2.COLOR_RGB2GRAY)
    xy = cv2.goodFeaturesToTrack(grey, 400, 0.01, 5)[:, 0].astype(np.float64)
    u, v = np.round(xy).astype(np.int64).T
    pred = _window(views, [0, 12])
    X = pred.points[0][v, u].astype(np.float64)
    seen_a = radial_distorted(_project(X, c2w[0], K)[0], K, k1)
    seen_b = radial_distorted(_project(X, c2w[12], K)[0], K, k1)
    pred.images = np.stack([bent[0], bent[12]])
    n = len(X)
    errors = {}
    for lens in (k1, 0.0):
        pred.sparse = SparseTracks(X, np.zeros((n, 3), np.uint8), np.r_[np.arange(n), np.arange(n)],
                                   np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)], np.r_[seen_a, seen_b],
                                   np.repeat(K[None], 2, axis=0), lens)
        tracked = BetweenKeyframes(pred, 0, 1).pose(bent[6], 6 / 30.0)
        assert tracked.kind == POSE_TRACKED
        errors[lens] = _errors(tracked.c2w, c2w[6])
    baseline = np.linalg.norm(c2w[12, :3, 3] - c2w[0, :3, 3])
    assert errors[k1][0] < 0.01 * baseline and errors[k1][0] < 0.5 * errors[0.0][0], errors
    assert errors[k1][1] < 0.5 * errors[0.0][1], errors

    # A live stream's tracker takes the lens with the window's map and poses the frames after it through it.
    later = {i: render_view(scene, c2w[i], K, W, H, radial_k1=k1).rgb for i in range(14, 24, 3)}
    live = {}
    for lens in (k1, 0.0):
        pred.sparse = replace(pred.sparse, radial_k1=lens)
        tracker = MapTracker()
        tracker.set_map(pred, 0)
        live[lens] = max(_errors(tracker.track(image, np.eye(3), i).c2w, c2w[i])[0] for i, image in later.items())
    assert live[k1] < 0.05 * baseline and live[k1] < 0.3 * live[0.0], live


def _project(X: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.linalg.inv(c2w)
    cam = X @ w2c[:3, :3].T + w2c[:3, 3]
    return cam[:, :2] / cam[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2], cam[:, 2]


def test_frames_of_a_window_without_depth_are_interpolated_and_said_so():
    c2w, _, views = _orbit_views(90, 20.0)
    between = BetweenKeyframes(_window(views, [0, 12], rotation_only=True), 0, 1)
    tracked = between.pose(views[6].rgb, 6 / 30.0)
    assert tracked.kind == POSE_INTERPOLATED
    np.testing.assert_allclose(tracked.c2w, interpolate_pose(c2w[0], c2w[12], 0.5))


def test_interpolation_is_slerp_and_linear():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, :3] = Rotation.from_euler("y", 40, degrees=True).as_matrix()
    b[:3, 3] = [2.0, 0.0, 0.0]
    mid = interpolate_pose(a, b, 0.25)
    np.testing.assert_allclose(mid[:3, 3], [0.5, 0, 0])
    np.testing.assert_allclose(Rotation.from_matrix(mid[:3, :3]).as_euler("xyz", degrees=True), [0, 10, 0], atol=1e-9)


def test_two_posed_views_triangulate_the_points_both_see_and_refuse_the_rest():
    K = intrinsics_for(320, 240)
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 3], [1, 1, 5], (50, 3))
    a = np.eye(4)
    b = np.eye(4)
    b[:3, :3] = Rotation.from_euler("y", 4, degrees=True).as_matrix()
    b[:3, 3] = [0.4, 0.05, 0.0]

    def project(c2w, P):
        w2c = np.linalg.inv(c2w)
        cam = P @ w2c[:3, :3].T + w2c[:3, 3]
        return cam[:, :2] / cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]

    far = np.array([[0.2, 0.1, 400.0]])  # rays from the two cameras meet at under 0.1 degrees
    xa, xb = project(a, np.vstack([X, far])), project(b, np.vstack([X, far]))
    xb = np.vstack([xb, xb[0] + [0.0, 6.0]])  # a point followed astray: 6 px off its epipolar line
    xa = np.vstack([xa, xa[0]])
    got, ok = triangulate_views(K, a, b, xa, xb, max_px=1.0, min_angle_deg=1.0)
    assert ok[:50].all() and not ok[50] and not ok[51]
    assert np.abs(got[:50] - X).max() < 1e-6
    assert triangulate_views(K, a, b, np.zeros((0, 2)), np.zeros((0, 2)), 1.0, 1.0)[0].shape == (0, 3)


def test_points_moved_far_are_followed_from_where_they_are_expected():
    _, _, views = _orbit_views(4, 10.0)
    grey = cv2.cvtColor(views[0].rgb, cv2.COLOR_RGB2GRAY)
    shift = 80  # px: beyond what pyramidal Lucas-Kanade finds from the points' old positions
    moved = cv2.warpAffine(grey, np.float32([[1, 0, shift], [0, 1, 0]]), (W, H))
    xy = cv2.goodFeaturesToTrack(grey[:, :W - shift - 10], 100, 0.01, 5)[:, 0]
    truth = xy + [shift, 0]

    def followed(guess):
        uv, ok = follow_points(grey, moved, xy, 1.0, 15, guess)
        return int((ok & (np.linalg.norm(uv - truth, axis=1) < 0.5)).sum())

    assert followed(None) <= 5
    # Searched for a few pixels from where they are (a motion prediction), most are found and pass
    # the forward-backward check, whose way back starts where each point came from.
    assert followed(truth + [3.0, -2.0]) >= 0.5 * len(xy)
