"""Tracked frames solved again on the adjusted points, after the final bundle adjustment.

A frame between keyframes was posed by PnP on its window's sparse points as the window had them
(``recon.tracking``). The final adjustment moves those points and the keyframes; the tracked frame
first moves with the keyframes around it (``final_ba.frame_corrections``), then its own observations
of the points (those its tracking kept, ``sparse/*.npz`` ``held_*``) refine its pose on the adjusted
points. A refinement is taken only when it lowers the frame's reprojection error and moves the camera
by less than half the distance between the posed keyframes on either side.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from recon.tracking import refine_pose, reprojection_px
from stream4d.contracts import POSE_POSED, POSE_TRACKED
from stream4d.geometry import Sim3, rigid_motion
from stream4d.outputs import PosedFrame

GATE_PX = 3.0  # observations farther than this from the moved pose are left out (twice the loss scale)
MIN_OBSERVATIONS = 15  # fewer left, and the frame keeps its move
MAX_SHIFT_SHARE = 0.5  # of the distance between the posed keyframes around it


def resolve_tracked(frames: list[PosedFrame], moves: dict[int, Sim3], held: Iterable[dict[int, tuple]],
                    points: np.ndarray, focal_px: float | None = None) -> dict[int, Sim3]:
    """The moves (frame index -> rigid world motion of its pose) of the tracked frames of ``frames``
    that their observations re-solve: ``held``, per window (``outputs.read_held_tracks``), frame index ->
    (rows of ``points`` [n], pixels [n, 2] model pixels, K [3, 3] they were measured with); ``points``
    float64 [P, 3] the adjusted sparse points; ``focal_px``: the adjusted camera's focal (model pixels)
    when the adjustment refined it."""
    ordered = sorted(frames, key=lambda f: f.index)
    keys = [f for f in ordered if f.pose_kind == POSE_POSED and f.index in moves]
    at = np.array([f.index for f in keys], np.int64)
    tracked = {f.index: f for f in ordered if f.pose_kind == POSE_TRACKED and f.index in moves}
    out = {}
    for window in held:
        for index, (rows, xy, K) in window.items():
            f = tracked.get(index)
            j = int(np.searchsorted(at, index))
            if f is None or j == 0 or j == len(at):
                continue
            K = np.array(K, np.float64)
            if focal_px:
                K[0, 0] = K[1, 1] = focal_px
            neighbours = [moves[k.index].apply_c2w(k.c2w)[:3, 3] for k in (keys[j - 1], keys[j])]
            c2w = _solved(moves[index].apply_c2w(f.c2w), K, points[rows], xy, neighbours)
            if c2w is not None:
                out[index] = rigid_motion(c2w, f.c2w)
    return out


def _solved(start: np.ndarray, K: np.ndarray, X: np.ndarray, xy: np.ndarray, neighbours) -> np.ndarray | None:
    """The pose (c2w [4, 4]) the observations ``xy`` [n, 2] of ``X`` [n, 3] give from ``start``, or None
    when too few are near it, the error does not drop, or it moves more than ``MAX_SHIFT_SHARE`` of the
    distance between the ``neighbours`` (the centres of the posed keyframes around it)."""
    before = reprojection_px(start, K, X, xy)
    use = np.isfinite(X).all(axis=1) & (before < GATE_PX)
    if use.sum() < MIN_OBSERVATIONS:
        return None
    c2w = refine_pose(start, K, X[use], xy[use])
    if c2w is None or reprojection_px(c2w, K, X[use], xy[use]).mean() > before[use].mean():
        return None
    if np.linalg.norm(c2w[:3, 3] - start[:3, 3]) > MAX_SHIFT_SHARE * np.linalg.norm(neighbours[1] - neighbours[0]):
        return None
    return c2w
