"""Turns the stream (windows, camera batches, Gaussian snapshots, stats) into rerun log calls.

Synchronous and single-threaded: ``RerunObserver`` runs it on its logging thread.
It keeps the little state the viewer needs across windows: the trajectory so far,
which frame each timestamp belongs to, and when the cache was last drawn.
"""

from __future__ import annotations

import numpy as np
import rerun as rr

from stream4d.contracts import (
    POSE_TRACKED,
    AlignedWindow,
    FramePose,
    GaussianSnapshot,
    StreamStats,
    WindowPrediction,
)
from stream4d.outputs import PosedFrame
from viz import logging as vlog
from viz import paths
from viz.camera_batch import CameraBatch
from viz.config import VizConfig
from viz.sampling import confident_points, decimate_depth, subsample_indices, thin_polyline


class StreamRecorder:
    def __init__(self, rec: rr.RecordingStream, config: VizConfig, seed: int = 0) -> None:
        self.rec = rec
        self.config = config
        self._rng = np.random.default_rng(seed)
        self._centres: dict[int, list[np.ndarray]] = {}  # segment -> camera centres [3]
        self._frame_of_time: dict[float, int] = {}  # timestamp -> frame index
        self._dynamic_logged: set[float] = set()
        self.last_frame: tuple[int, float] = (0, 0.0)  # (frame index, timestamp) of the newest camera
        self.cameras_logged = 0
        self.keyframes_logged = 0
        self._keyframe_at: int | None = None  # cameras_logged when the last keyframe was logged
        self.gaussian_snapshots_logged = 0
        self.poses_logged = 0
        self._tracked_centres: dict[int, np.ndarray] = {}  # frame index -> tracked camera centre (newest pose)
        self._plane = None  # frustum depth of tracked frames: the newest keyframe's
        vlog.log_world_axes(rec)

    # --- windows -------------------------------------------------------------------------

    def record_window(self, window: AlignedWindow) -> None:
        """Every new view: camera and image; every keyframe also its depth, confidence and point map;
        then trajectory and scale."""
        pred = window.prediction
        cams = CameraBatch.from_window(window)
        self._reattach(cams)
        new = np.flatnonzero(np.asarray(window.is_new, dtype=bool))
        for j, v in enumerate(new):
            self._plane = _plane_distance(pred.depth[v]) or self._plane
            self._camera(cams, j, plane_distance=_plane_distance(pred.depth[v]))
            if self.config.log_images:
                vlog.log_image(self.rec, pred.images[v], self.config.jpeg_quality)
            if self._keyframe_due():
                self._keyframe(pred, int(v), cams.c2w[j])
        self._after_cameras(cams)

    def _keyframe_due(self) -> bool:
        return self._keyframe_at is None or self.cameras_logged - self._keyframe_at >= self.config.keyframe_every

    def _keyframe(self, pred: WindowPrediction, v: int, c2w: np.ndarray) -> None:
        """View ``v``'s depth + confidence (decimated, under its own camera) and point map."""
        self._keyframe_at = self.cameras_logged
        self.keyframes_logged += 1
        if self.config.log_depth:
            conf = pred.depth_conf[v]
            depth = np.where(conf > 0, pred.depth[v], 0.0)  # confidence 0 means unknown (a nominal value)
            depth, conf, K = decimate_depth(depth, conf, pred.K[v], self.config.depth_max_side)
            vlog.log_camera(self.rec, c2w, K, (depth.shape[1], depth.shape[0]), None,
                            entity=paths.KEYFRAME, pinhole=paths.KEYFRAME_PINHOLE)
            vlog.log_depth(self.rec, depth, conf)
        xyz, rgb = confident_points(pred.points[v], pred.points_conf[v], pred.images[v],
                                    self.config.conf_quantile, self.config.frame_point_budget, self._rng)
        vlog.log_frame_points(self.rec, xyz, rgb)

    def record_cameras(self, cams: CameraBatch) -> None:
        """Cameras of windows whose pixels were dropped: poses and intrinsics only."""
        self._reattach(cams)
        for j in range(len(cams)):
            self._camera(cams, j, plane_distance=None)
            vlog.clear_frame_pixels(self.rec)
        self._after_cameras(cams)

    def _reattach(self, cams: CameraBatch) -> None:
        """A segment found again in an earlier world: its path so far moves there and joins that one's."""
        for link in cams.reattachments:
            moved = self._centres.pop(link.from_segment, [])
            if moved:
                mapped = link.sim3.apply(np.stack(moved).astype(np.float64)).astype(np.float32)
                self._centres.setdefault(link.to_segment, []).extend(mapped)

    def _camera(self, cams: CameraBatch, j: int, plane_distance: float | None) -> None:
        frame, t = int(cams.frame_indices[j]), float(cams.timestamps[j])
        vlog.set_frame_time(self.rec, frame, t)
        vlog.log_camera(self.rec, cams.c2w[j], cams.K[j], tuple(cams.sizes[j]), plane_distance)
        self._centres.setdefault(int(cams.segments[j]), []).append(cams.c2w[j, :3, 3].astype(np.float32))
        self._frame_of_time[t] = frame
        self.last_frame = (frame, t)
        self.cameras_logged += 1

    def _after_cameras(self, cams: CameraBatch) -> None:
        for _, frame, t, scale in cams.window_scales:
            vlog.set_frame_time(self.rec, int(frame), float(t))
            vlog.log_scalar(self.rec, paths.ALIGN_SCALE, scale)
        if len(cams) == 0:
            return
        budget = max(2, self.config.trajectory_budget // max(1, len(self._centres)))
        vlog.set_frame_time(self.rec, *self.last_frame)
        vlog.log_trajectory(self.rec, [thin_polyline(np.stack(c), budget) for c in self._centres.values()])
        self._tracked_path()  # the frames between this window's keyframes were posed just before it

    # --- frames posed outside windows ------------------------------------------------------

    def record_pose(self, pose: FramePose) -> None:
        """A tracked frame's frustum at its frame time (live: cyan; re-posed by its window: green;
        interpolated: grey), and every ``pose_path_every`` poses (and after each window) the path of the
        tracked frames."""
        vlog.set_frame_time(self.rec, pose.index, pose.timestamp)
        color = (_FINAL_COLOR if pose.final else _LIVE_COLOR) if pose.kind == POSE_TRACKED else _INTERPOLATED_COLOR
        vlog.log_tracked_camera(self.rec, pose.c2w, pose.K, pose.size, self._plane, color)
        self._tracked_centres[pose.index] = pose.c2w[:3, 3].astype(np.float32)
        self.poses_logged += 1
        if self.poses_logged % self.config.pose_path_every == 0:
            self._tracked_path()

    def _tracked_path(self) -> None:
        if self._tracked_centres:
            centres = np.stack([self._tracked_centres[i] for i in sorted(self._tracked_centres)])
            vlog.log_tracked_path(self.rec, thin_polyline(centres, self.config.trajectory_budget))

    def record_final(self, frames: list[PosedFrame], frame: int, timestamp: float) -> None:
        """Every frame's final camera centre, one path per segment, at the stream's last frame time: what
        loop closures and a final bundle adjustment made of the path drawn live."""
        by_segment: dict[int, list[np.ndarray]] = {}
        for f in sorted(frames, key=lambda f: f.index):
            by_segment.setdefault(f.segment, []).append(f.c2w[:3, 3].astype(np.float32))
        if not by_segment:
            return
        budget = max(2, self.config.trajectory_budget // len(by_segment))
        vlog.set_frame_time(self.rec, frame, timestamp)
        vlog.log_final_trajectory(self.rec, [thin_polyline(np.stack(c), budget) for c in by_segment.values()])

    # --- Gaussian cache ------------------------------------------------------------------

    def record_gaussians(self, snapshot: GaussianSnapshot, frame: int, timestamp: float,
                         budget: int | None = None) -> None:
        """Static Gaussians at (frame, timestamp), at most ``budget`` (default ``point_budget``);
        dynamic ones once per new timestamp."""
        dynamic = snapshot.is_dynamic
        static = np.flatnonzero(~dynamic)
        budget = self.config.point_budget if budget is None else budget
        keep = static[subsample_indices(static.size, budget, self._rng)]
        vlog.set_frame_time(self.rec, frame, timestamp)
        self._log_gaussians(paths.STATIC_GAUSSIANS, snapshot, keep, drawn_fraction=keep.size / max(1, static.size))
        times = snapshot.timestamps[dynamic]
        for t in np.unique(times):
            if float(t) in self._dynamic_logged:
                continue
            idx = np.flatnonzero(dynamic)[times == t]
            idx = idx[subsample_indices(idx.size, self.config.dynamic_point_budget, self._rng)]
            vlog.set_frame_time(self.rec, self._frame_at(float(t)), float(t))
            self._log_gaussians(paths.DYNAMIC_GAUSSIANS, snapshot, idx,
                                drawn_fraction=idx.size / max(1, int((times == t).sum())))
            self._dynamic_logged.add(float(t))
        self.gaussian_snapshots_logged += 1

    def _log_gaussians(self, entity: str, s: GaussianSnapshot, idx: np.ndarray, drawn_fraction: float) -> None:
        # Points are drawn 2 sigma wide; a surface sampled at fraction f has its spacing
        # grown by 1/sqrt(f), so the radius grows alike to keep it covered.
        radius = 2.0 / np.sqrt(max(drawn_fraction, 1e-12))
        vlog.log_gaussians(self.rec, entity, s.means[idx], s.colors[idx], s.opacities[idx],
                           s.scales[idx], s.quats[idx], self.config.gaussian_style, point_radius=radius)

    def _frame_at(self, timestamp: float) -> int:
        """Frame index of a timestamp; the nearest logged frame when it was never seen."""
        if timestamp in self._frame_of_time:
            return self._frame_of_time[timestamp]
        if not self._frame_of_time:
            return 0
        times = np.fromiter(self._frame_of_time, dtype=np.float64)
        return self._frame_of_time[float(times[np.argmin(np.abs(times - timestamp))])]

    # --- stats ---------------------------------------------------------------------------

    def record_stats(self, stats: StreamStats, frame: int, timestamp: float, viewer_dropped: int) -> None:
        vlog.set_frame_time(self.rec, frame, timestamp)
        vlog.log_scalar(self.rec, paths.FPS, stats.fps)
        vlog.log_scalar(self.rec, paths.CACHE_SIZE, stats.gaussians)
        vlog.log_scalar(self.rec, paths.DROPPED_LIVE_FRAMES, stats.frames_dropped)
        vlog.log_scalar(self.rec, paths.DROPPED_VIEWER_ITEMS, viewer_dropped)


_LIVE_COLOR = (0, 200, 255)
_FINAL_COLOR = (60, 200, 60)
_INTERPOLATED_COLOR = (150, 150, 150)


def _plane_distance(depth: np.ndarray) -> float | None:
    """Frustum depth: a tenth of the frame's median valid depth (scenes have arbitrary scale)."""
    valid = depth[np.isfinite(depth) & (depth > 0)]
    return float(np.median(valid)) * 0.1 if valid.size else None
