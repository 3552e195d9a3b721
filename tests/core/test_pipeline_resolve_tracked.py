"""Tracked frames solved again on the adjusted points (``pipeline.resolve_tracked``)."""

from __future__ import annotations

import numpy as np
import pytest

from stream4d.geometry import Sim3, rotation_from_quat_wxyz
from stream4d.outputs import PosedFrame
from stream4d.pipeline.resolve_tracked import resolve_tracked

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
