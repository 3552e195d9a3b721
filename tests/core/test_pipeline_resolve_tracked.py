"""Tracked frames solved again on the adjusted points (``pipeline.resolve_tracked``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream4d.geometry import Sim3, radial_distorted, rotation_from_quat_wxyz
from stream4d.outputs import PosedFrame
from stream4d.pipeline.resolve_tracked import resolve_tracked, tracked_views

K = np.array([[300.0, 0.0, 159.5], [0.0, 300.0, 119.5], [0.0, 0.0, 1.0]])


def _pose(x: float, tilt: float = 0.0) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_from_quat_wxyz(np.array([1.0, tilt, 0.0, 0.0]) / np.hypot(1.0, tilt))
    c2w[:3, 3] = [x, 0.0, 0.0]
    return c2w


def _seen(points: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    return cam[:, :2] / cam[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]


def _scene(shift: float):
    """Keyframes 0 and 4 (posed at x = 0 and 1), tracked frame 2 truly at x = 0.5, written ``shift`` off."""
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-2, 3, 200), rng.uniform(-1.5, 1.5, 200), rng.uniform(4, 8, 200)])
    truth = _pose(0.5, tilt=0.01)
    written = truth.copy()
    written[:3, 3] += [shift, -0.5 * shift, shift]
    frames = [PosedFrame(0, 0.0, "0.png", _pose(0.0), K, 320, 240),
              PosedFrame(2, 0.2, "2.png", written, K, 320, 240, pose_kind="tracked"),
              PosedFrame(4, 0.4, "4.png", _pose(1.0), K, 320, 240)]
    moves = {f.index: Sim3(1.0, np.eye(3), np.zeros(3)) for f in frames}
    held = {2: (np.arange(len(points)), _seen(points, truth), K)}
    return frames, moves, held, points, truth


def test_a_tracked_frame_goes_where_its_observations_of_the_adjusted_points_put_it():
    frames, moves, held, points, truth = _scene(shift=0.004)
    resolved = resolve_tracked(frames, moves, [held], points)
    assert set(resolved) == {2}
    np.testing.assert_allclose(resolved[2].apply_c2w(frames[1].c2w), truth, atol=1e-6)


def test_the_adjusted_focal_is_the_one_it_is_solved_with():
    frames, moves, held, points, truth = _scene(shift=0.004)
    held = {2: (held[2][0], _seen(points, truth) * 1.02 - K[:2, 2] * 0.02, K)}  # seen with focal 306
    resolved = resolve_tracked(frames, moves, [held], points, focal_px=306.0)
    np.testing.assert_allclose(resolved[2].apply_c2w(frames[1].c2w), truth, atol=1e-6)


def test_pixels_seen_through_the_adjusted_lens_are_undistorted_for_the_solve():
    frames, moves, held, points, truth = _scene(shift=0.004)
    held = {2: (held[2][0], radial_distorted(_seen(points, truth), K, 0.05), K)}  # 1.8 px at the corner
    resolved = resolve_tracked(frames, moves, [held], points, radial_k1=0.05)
    np.testing.assert_allclose(resolved[2].apply_c2w(frames[1].c2w), truth, atol=1e-6)
    pinhole = resolve_tracked(frames, moves, [held], points)  # the lens ignored: off by more than the shift
    assert np.linalg.norm(pinhole[2].apply_c2w(frames[1].c2w)[:3, 3] - truth[:3, 3]) > 1e-3


@pytest.mark.parametrize("why", ["far off", "too few", "no keyframe after"])
def test_a_frame_keeps_its_move_when_the_solve_cannot_be_trusted(why):
    frames, moves, held, points, _ = _scene(shift=0.004)
    if why == "far off":  # its observations are nowhere near where the moved pose sees the points
        frames, moves, held, points, _ = _scene(shift=0.4)
    elif why == "too few":
        held = {2: (held[2][0][:10], held[2][1][:10], K)}
    else:
        frames = frames[:2]
    assert resolve_tracked(frames, moves, [held], points) == {}


def _keyframes_scene(points: np.ndarray):
    """The adjustment's scene before tracked frames join: keyframes 0 and 4 seeing every point."""
    from stream4d.export.scene import ExportScene, ExportView

    views = [ExportView.without_image(PosedFrame(i, 0.1 * i, f"{i}.png", _pose(x), K, 320, 240), K)
             for i, x in ((0, 0.0), (4, 1.0))]
    n = len(points)
    return ExportScene(views, points, np.zeros((n, 3), np.uint8), np.tile(np.arange(n), 2),
                       np.repeat([0, 1], n), np.concatenate([_seen(points, v.c2w) for v in views]), 0, Path())


def test_tracked_frames_join_the_adjustment_with_a_spread_subset_of_their_observations():
    frames, _, held, points, truth = _scene(shift=0.004)
    # The scene holds sparse points 0..179 in reverse order; the last 20 are not in the adjustment.
    scene = _keyframes_scene(points[179::-1])
    scene_row = np.r_[np.arange(179, -1, -1), np.full(20, -1)]
    joined = tracked_views(scene, frames, [held], scene_row, per_frame=50, room=10_000)
    assert [v.index for v in joined.views] == [0, 4, 2]
    mine = joined.obs_view == 2
    assert mine.sum() == 50 and len(joined.obs_point) == len(scene.obs_point) + 50
    rows = joined.obs_point[mine]
    assert rows.max() - rows.min() > 150  # spread over the frame's list, not its first 50
    np.testing.assert_allclose(joined.obs_xy[mine], _seen(scene.points[rows], truth), atol=1e-9)
    # Short of room, each frame brings fewer; too few to hold a pose, none joins.
    assert (tracked_views(scene, frames, [held], scene_row, per_frame=50, room=30).obs_view == 2).sum() == 30
    assert len(tracked_views(scene, frames, [held], scene_row, per_frame=50, room=10).views) == 2


def test_a_tracked_frame_far_from_its_observations_stays_out_and_takes_the_shared_camera_when_in():
    frames, _, held, points, _ = _scene(shift=0.4)
    scene = _keyframes_scene(points)
    rows = np.arange(len(points))
    assert len(tracked_views(scene, frames, [held], rows, per_frame=50, room=10_000).views) == 2
    frames, _, held, points, _ = _scene(shift=0.004)
    camera = K.copy()
    camera[0, 0] = camera[1, 1] = 310.0
    joined = tracked_views(scene, frames, [held], rows, per_frame=50, room=10_000, camera=camera)
    np.testing.assert_array_equal(joined.views[2].K, camera)


def test_keyframes_a_turn_left_at_one_place_still_let_a_frame_between_them_move_a_little():
    """Keyframes at one place (a turn on the spot) leave no distance between them; a share of the points'
    depth is still allowed, so the frame is solved again rather than kept where it was."""
    frames, moves, held, points, truth = _scene(shift=0.004)
    frames = [PosedFrame(i, 0.2 * i, f"{i}.png", truth, K, 320, 240) if i != 2 else f for i, f in
              zip((0, 2, 4), frames)]
    resolved = resolve_tracked(frames, moves, [held], points)
    np.testing.assert_allclose(resolved[2].apply_c2w(frames[1].c2w), truth, atol=1e-6)


def test_a_few_frames_between_two_keyframes_join_spread_over_them():
    _, _, held, points, truth = _scene(shift=0.0)
    frames = [PosedFrame(i, 0.1 * i, f"{i}.png", truth, K, 320, 240,
                         pose_kind="posed" if i in (0, 10) else "tracked") for i in range(11)]
    every = {i: held[2] for i in range(1, 10)}
    joined = tracked_views(_keyframes_scene(points), frames, [every], np.arange(len(points)), per_frame=50,
                           room=10_000)
    assert [v.index for v in joined.views[2:]] == [2, 5, 8]
