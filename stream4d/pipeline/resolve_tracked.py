"""Tracked frames in the final bundle adjustment, and solved again on the adjusted points after it.

A frame between keyframes was posed by PnP on its window's sparse points as the window had them
(``recon.tracking``); its tracking kept those observations (``sparse/*.npz`` ``held_*``).

- ``tracked_views``: tracked frames join the adjustment as views with a spread subset of those
  observations, so that the points are solved from more viewpoints than the keyframes'. A few frames
  between each two keyframes, and a subset of each one's observations, because a video has ten or more
  tracked frames per keyframe, each with as many observations as a keyframe: all of them would
  multiply the adjustment's time.
- ``resolve_tracked``: after the adjustment, every tracked frame's observations, all of them, refine
  its pose on the adjusted points, starting from its adjusted pose (or from the keyframes' correction,
  ``final_ba.frame_corrections``, when it did not join). A refinement is taken only when it lowers the
  frame's reprojection error and moves the camera by less than half the distance between the posed
  keyframes on either side plus 1 % of its points' distance (keyframes a turn on the spot left at one
  place are no distance apart).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from recon.tracking import refine_pose, reprojection_px
from stream4d.contracts import POSE_POSED, POSE_TRACKED
from stream4d.export.scene import ExportScene, ExportView
from stream4d.geometry import Sim3, radial_undistorted, rigid_motion
from stream4d.outputs import PosedFrame

GATE_PX = 3.0  # observations farther than this from the moved pose are left out (twice the loss scale)
MIN_OBSERVATIONS = 15  # fewer left, and the frame keeps its move
MAX_SHIFT_SHARE = 0.5  # of the distance between the posed keyframes around it, ...
MAX_SHIFT_DEPTH_SHARE = 0.01  # ... plus this share of its points' distance (recon.tracking's off-path rule)
OBSERVATIONS_IN_ADJUSTMENT = 250  # of a tracked frame's, at most, spread over its list
# Tracked frames between two keyframes that join the adjustment, at most (spread): neighbours see nearly
# the same, and every camera adds to the adjustment's time (docs/benchmarks.md, "Tracked frames in the
# final adjustment").
FRAMES_BETWEEN_KEYFRAMES = 3


def tracked_views(scene: ExportScene, frames: list[PosedFrame], held: Iterable[dict[int, tuple]],
                  scene_row: np.ndarray, per_frame: int, room: int, camera: np.ndarray | None = None,
                  radial_k1: float = 0.0) -> ExportScene:
    """``scene`` (the adjustment's keyframes and points) with the tracked frames of ``frames`` added as
    views. ``held``: per window, frame index -> (rows of the sparse points [n], pixels [n, 2], K [3, 3]), as
    ``resolve_tracked`` takes it; ``scene_row``: int64 [sparse points], each sparse point's row of
    ``scene.points`` (-1: not in the adjustment). At most ``FRAMES_BETWEEN_KEYFRAMES`` frames between two
    posed keyframes join, spread over them; a frame joins with at most ``per_frame`` of its
    observations (a spread subset) that lie within ``GATE_PX`` of its pose, and only with
    ``MIN_OBSERVATIONS`` or more; all frames together add at most ``room`` observations (fewer each when
    that runs short, none below ``MIN_OBSERVATIONS``). ``camera``: the K every view shares (a focal-refining
    adjustment), else each frame keeps the K its window tracked it with; ``radial_k1``: the lens every view
    shares (the keyframes' start), through which a frame's observations are checked against its pose."""
    tracked = {f.index: f for f in frames if f.pose_kind == POSE_TRACKED}
    joining = []  # (frame, scene rows, pixels, K)
    for window in held:
        for index, (rows, xy, K) in window.items():
            f = tracked.pop(index, None)
            if f is None:
                continue
            rows = scene_row[rows]
            there = rows >= 0
            K = np.asarray(K, np.float64)
            near = np.zeros(len(rows), bool)
            seen = radial_undistorted(xy[there], K, radial_k1)
            near[there] = reprojection_px(f.c2w, K, scene.points[rows[there]], seen) < GATE_PX
            if near.sum() >= MIN_OBSERVATIONS:
                joining.append((f, rows[near], xy[near], K))
    joining = _spread_between_keyframes(joining, frames)
    if not joining:
        return scene
    per_frame = min(per_frame, room // len(joining))
    if per_frame < MIN_OBSERVATIONS:
        return scene
    views, obs_view, obs_point, obs_xy = list(scene.views), [scene.obs_view], [scene.obs_point], [scene.obs_xy]
    for f, rows, xy, K in joining:
        pick = np.unique(np.linspace(0, len(rows) - 1, min(per_frame, len(rows))).astype(np.int64))
        obs_view.append(np.full(len(pick), len(views), np.int64))
        obs_point.append(rows[pick])
        obs_xy.append(xy[pick])
        views.append(replace(ExportView.without_image(f, K if camera is None else camera), radial_k1=radial_k1))
    return replace(scene, views=views, obs_view=np.concatenate(obs_view), obs_point=np.concatenate(obs_point),
                   obs_xy=np.concatenate(obs_xy))


def _spread_between_keyframes(joining: list[tuple], frames: list[PosedFrame]) -> list[tuple]:
    """``joining`` (tuples led by a tracked frame) in frame order, at most ``FRAMES_BETWEEN_KEYFRAMES`` of
    those between two posed keyframes of ``frames``, spread evenly."""
    joining = sorted(joining, key=lambda j: j[0].index)
    keys = np.array(sorted(f.index for f in frames if f.pose_kind == POSE_POSED), np.int64)
    gap = np.searchsorted(keys, [j[0].index for j in joining])
    chosen = []
    for g in np.unique(gap):
        members = [j for j, in_gap in zip(joining, gap) if in_gap == g]
        n = min(FRAMES_BETWEEN_KEYFRAMES, len(members))
        chosen += [members[int(k)] for k in (np.arange(n) + 0.5) * len(members) // n]
    return chosen


def resolve_tracked(frames: list[PosedFrame], moves: dict[int, Sim3], held: Iterable[dict[int, tuple]],
                    points: np.ndarray, focal_px: float | None = None, radial_k1: float = 0.0) -> dict[int, Sim3]:
    """The moves (frame index -> rigid world motion of its pose) of the tracked frames of ``frames``
    that their observations re-solve: ``held``, per window (``outputs.read_held_tracks``), frame index ->
    (rows of ``points`` [n], pixels [n, 2] model pixels, K [3, 3] they were measured with); ``points``
    float64 [P, 3] the adjusted sparse points; ``focal_px``: the adjusted camera's focal (model pixels)
    when the adjustment refined it; ``radial_k1``: its radial coefficient (the pixels are undistorted
    for the pinhole solve)."""
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
            xy = radial_undistorted(xy, K, radial_k1)
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
    # Keyframes a turn on the spot left at one place would hold it to nothing: some depth is allowed too.
    depth = float(np.median(np.linalg.norm(X[use] - start[:3, 3], axis=1)))
    limit = MAX_SHIFT_SHARE * np.linalg.norm(neighbours[1] - neighbours[0]) + MAX_SHIFT_DEPTH_SHARE * depth
    if np.linalg.norm(c2w[:3, 3] - start[:3, 3]) > limit:
        return None
    return c2w
