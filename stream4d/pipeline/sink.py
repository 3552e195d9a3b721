"""Where aligned windows go, in the alignment thread: the output folder, the splat cache, observers."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream4d.contracts import POSE_TRACKED, AlignedWindow, FramePose, StreamObserver, StreamStats, publish_pose
from stream4d.outputs import OutputWriter, PosedFrame
from stream4d.pipeline.config import ReconstructConfig
from stream4d.pipeline.counted import CountedFrames
from stream4d.pipeline.heap import release_free_heap

log = logging.getLogger("stream4d.pipeline")

COUNT_SCALE = 0.25  # working scale of tracked frames' depth maps that are counted but not written


class Sink:
    """Receives aligned windows in the alignment thread: outputs, cache, observers."""

    def __init__(self, writer: OutputWriter, config: ReconstructConfig, observers: Sequence[StreamObserver],
                 stats: StreamStats, timings: dict[str, float], held=None):
        self.writer = writer
        self.held = held  # pipeline.keyframing.HeldFrames: frames between keyframes, or None
        self.tracking_config = None  # recon.tracking.TrackingConfig of the frames between keyframes (None: default)
        self.tracking_threads = 2  # threads that track the frames between keyframes
        self._pool: ThreadPoolExecutor | None = None
        self.live_poses = None  # pipeline.live.LivePoses: a live run's poses, corrected instead of tracked again
        self.config = config
        self.observers = list(observers)
        self.stats = stats
        self.counted = CountedFrames(stats)  # the frames behind the per-frame counters
        self.timings = timings
        self.cache = None
        if config.gaussians:
            from memory.gaussians import GaussianCache

            self.cache = GaussianCache(config.cache)
        self.fallback_points = VoxelCloud()
        self.window_scales: list[float] = []
        self.skipped_windows: list[dict] = []  # {"window", "frames", "reason"}
        self.map_points = 0  # points in points.ply, known after finish()
        self.map_segment: int | None = None  # the world segment points.ply / splats.ply show, after finish()
        self.frame_window: dict[int, int] = {}  # posed frame index -> aligned window (a loop closure moves windows)
        self.keep_held_tracks = False  # the run ends with the final adjustment: tracked frames' observations kept
        self._held_tracks: list[tuple] = []  # this window's tracked frames' (index, point rows, pixels)
        self._clouds: dict = {}  # (window, view) -> recon.tracked_depth.KeyframeCloud, the last two lifted
        self._skip_lock = threading.Lock()  # skips come from the model thread and the alignment thread
        self.started = time.perf_counter()

    def skip(self, frame_indices: Sequence[int], reason: str, window: int | None = None) -> None:
        """A window that gave no poses: reported, counted, and the stream goes on."""
        frames = [int(i) for i in frame_indices]
        span = f"frames {frames[0]}-{frames[-1]}" if frames else "no frames"
        msg = f"window {window} ({span}) skipped: {reason}" if window is not None else f"window of {span} skipped: {reason}"
        log.warning(msg)
        with self._skip_lock:
            self.skipped_windows.append({"window": window, "frames": frames, "reason": reason})
            self.stats.windows_skipped += 1
            self.stats.errors.append(msg)

    def skip_unusable(self, pred, err) -> None:  # AlignmentWorker.on_skipped
        self.skip(err.frame_indices, err.reason, err.window_index)

    def __call__(self, window: AlignedWindow) -> None:
        pred = window.prediction
        link = window.reattached
        if link is not None:  # frames written in the lost segment move into the world it was found in
            moved = self.writer.remap_segment(link.from_segment, link.to_segment, link.sim3)
            if self.cache is None:  # the cache follows on its own in add_window
                self.fallback_points.reattach(link)
            self.stats.reattachments += 1
            log.info("segment %d re-attached to segment %d (%d frames moved, %d inliers)",
                     link.from_segment, link.to_segment, moved, link.inliers)
        if window.moved:
            self._follow_loop(window)
        self._count_loops(window)
        new = [int(k) for k in np.nonzero(window.is_new)[0]]
        self._held_tracks = []
        groups = self._held_groups(window, new)
        posed = self._track_held(window, groups)
        for k in new:
            self.frame_window[int(pred.frame_indices[k])] = window.window_index
            if k in groups:  # the frames before this keyframe first: trajectory stays in order
                self._write_held(window, k, posed, len(groups[k]))
            W, H = (int(v) for v in pred.input_sizes[k])
            self.writer.add_frame(PosedFrame(
                index=int(pred.frame_indices[k]), timestamp=float(pred.timestamps[k]), image=pred.sources[k],
                c2w=pred.c2w[k], K=pred.K_input(k), width=W, height=H, segment=window.segment,
                pose_kind=pred.pose_kind(k)))
            if self.config.save_depth:
                self.writer.write_depth(int(pred.frame_indices[k]), pred.depth[k], pred.depth_conf[k], pred.K[k], pred.c2w[k])
            if self.config.save_frames:
                self.writer.write_frame_image(int(pred.frame_indices[k]), pred.images[k], pred.pixel_maps[k])
        if pred.sparse is not None:
            self.writer.write_sparse(window.window_index, window.segment, pred.frame_indices, pred.sparse,
                                     self._held_tracks)
        self.stats.frames_posed += int(window.is_new.sum())
        self.stats.frames_rotation_only += int((window.is_new & pred.rotation_only_views).sum())
        no_depth = ~(pred.depth_conf > 0).reshape(pred.num_frames, -1).any(axis=1)
        self.counted.count("frames_without_depth",
                           pred.frame_indices[window.is_new & ~pred.rotation_only_views & no_depth])
        from_tracks = np.zeros(pred.num_frames, bool)
        from_tracks[list(pred.info.get("depth_from_tracks") or [])] = True
        self.counted.count("frames_depth_from_tracks", pred.frame_indices[window.is_new & from_tracks & ~no_depth])
        self.stats.windows += 1
        self.stats.segment = window.segment
        self.window_scales.append(float(window.sim3_scale))
        t = time.perf_counter()
        if self.cache is not None:
            self.cache.add_window(window)
            self.stats.gaussians = len(self.cache)
        else:
            self.fallback_points.add(window)
        self.timings["cache"] = self.timings.get("cache", 0.0) + time.perf_counter() - t
        elapsed = time.perf_counter() - self.started
        self.stats.fps = self.stats.frames_processed / elapsed if elapsed > 0 else 0.0
        for obs in self.observers:
            obs.on_window(window)
            obs.on_stats(self.stats)
        if self.cache is not None and self.stats.windows % 2 == 0:
            snap = self.cache.snapshot()
            for obs in self.observers:
                obs.on_gaussians(snap)
        t = time.perf_counter()
        release_free_heap()  # the window's freed arrays back to the system, not left in malloc's arenas
        self.timings["heap_trim"] = self.timings.get("heap_trim", 0.0) + time.perf_counter() - t

    def _follow_loop(self, window: AlignedWindow) -> None:
        """Earlier windows a loop closure moved: their frames (tracked ones too) and points follow."""
        t = time.perf_counter()
        moves = {i: window.moved[w] for i, w in self.frame_window.items() if w in window.moved}
        frames = self.writer.move_frames(moves, window.moved)
        if self.cache is None:  # the cache follows on its own in add_window
            self.fallback_points.move_windows(window.moved)
        log.info("loop closed at window %d: %d earlier windows, %d frames moved",
                 window.window_index, len(window.moved), frames)
        self.timings["loop_outputs"] = self.timings.get("loop_outputs", 0.0) + time.perf_counter() - t

    def _count_loops(self, window: AlignedWindow) -> None:
        g = window.info.get("global_map")
        if g:
            self.stats.loops_found += len(g["loops"]) + g["dropped"]
            self.stats.loops_accepted += len(g["loops"])
            self.stats.loops_rejected += g["rejected"] + g["dropped"]

    def _held_groups(self, window: AlignedWindow, new: list[int]) -> dict[int, list]:
        """The frames held before each new view k of the window (taken in order). Those before a
        new view 0 (a window after a gap or a cut) have no keyframe before them here: they are
        tracked from views 0 and 1 and posed only where that tracking holds (``_bracket``)."""
        if self.held is None:
            return {}
        groups = {k: self.held.take(int(window.prediction.frame_indices[k])) for k in new}
        n = window.prediction.num_frames
        return {k: frames for k, frames in groups.items() if frames and (k > 0 or n > 1)}

    @staticmethod
    def _bracket(k: int) -> tuple[int, int]:
        """The two views that pose the frames held before view k: k-1 and k, or 0 and 1 for k = 0."""
        return (k - 1, k) if k > 0 else (0, 1)

    def _track_held(self, window: AlignedWindow, groups: dict[int, list]) -> Iterator[tuple]:
        """(frame, image at model pixels, recon.tracking.TrackedPose) of every frame in ``groups``, in
        order. Frames are tracked on ``tracking_threads`` threads (Lucas-Kanade and PnP release the
        GIL), a few frames ahead of the caller: the last window's frames no longer wait for one core."""
        from recon.tracking import BetweenKeyframes, TrackedPose, to_model_pixels

        pred = window.prediction
        size = pred.model_size
        jobs = []
        for k, frames in groups.items():
            a, b = self._bracket(k)
            live = None
            if self.live_poses is not None and k > 0:
                live = self.live_poses.corrections(pred, a, b, window.segment)
            between = None  # built only for a frame without a live pose
            for f in frames:
                corrected = None if live is None else live.pose(f.index, f.timestamp)
                if corrected is None:
                    between = between or BetweenKeyframes(pred, a, b, self.tracking_config)
                jobs.append((a, f, corrected, between))

        def track(job):
            a, f, corrected, between = job
            image = to_model_pixels(f.image(), f.pixel_map, pred.pixel_maps[a], size)
            if corrected is not None:
                return f, image, TrackedPose(corrected, POSE_TRACKED, image)
            return f, image, between.pose(image, f.timestamp)

        if self._pool is None and self.tracking_threads > 1:
            self._pool = ThreadPoolExecutor(self.tracking_threads, thread_name_prefix="stream4d-track")
        if self._pool is None:
            return map(track, jobs)
        return in_order(self._pool, track, jobs, ahead=2 * self.tracking_threads)

    def _write_held(self, window: AlignedWindow, k: int, posed: Iterator[tuple], count: int) -> None:
        """Write and publish the ``count`` frames held before view k (between the views of
        ``_bracket(k)``), the next ones of ``posed`` (``_track_held``). Before view 0 there is no
        keyframe to interpolate from: a frame tracking cannot pose there stays unposed."""
        t = time.perf_counter()
        pred = window.prediction
        W, H = pred.model_size
        a, b = self._bracket(k)
        K_input = pred.K_input(a)
        for _ in range(count):
            f, image, tracked = next(posed)
            if k == 0 and tracked.kind != POSE_TRACKED:
                continue
            self.frame_window[f.index] = window.window_index
            self.writer.add_frame(PosedFrame(
                index=f.index, timestamp=f.timestamp, image=f.source, c2w=tracked.c2w, K=K_input,
                width=int(f.input_size[0]), height=int(f.input_size[1]), segment=window.segment,
                pose_kind=tracked.kind))
            self._publish(FramePose(f.index, f.timestamp, tracked.c2w, pred.K[a], (W, H), tracked.kind,
                                    window.segment, final=True))
            if self.config.save_frames:
                self.writer.write_frame_image(f.index, image, pred.pixel_maps[a])
            self.stats.frames_posed += 1
            if tracked.kind == POSE_TRACKED:
                self.stats.frames_tracked += 1
                self._keep_held_tracks(f.index, tracked)
                if self.config.tracked_depth.enabled:
                    self._tracked_depth(window, (a, b), f.index, tracked.c2w)
            else:
                self.stats.frames_interpolated += 1
        self.timings["tracking"] = self.timings.get("tracking", 0.0) + time.perf_counter() - t

    def _keep_held_tracks(self, index: int, tracked) -> None:
        """A tracked frame's observations of the window's sparse points (all its PnP inliers: the final
        adjustment solves the frame again with them, and fewer points pose it worse), written with the
        window's sparse file."""
        if self.keep_held_tracks and tracked.point_ids is not None and len(tracked.point_ids):
            self._held_tracks.append((int(index), tracked.point_ids, tracked.point_xy))

    def _tracked_depth(self, window: AlignedWindow, views: tuple[int, int], index: int, c2w: np.ndarray) -> None:
        """A tracked frame's depth map from the depth of ``views`` (two view indices of the window;
        recon.tracked_depth): counted when it covers enough of the frame, written to depth/ with the
        keyframes' maps (``save_depth``)."""
        from recon.tracked_depth import depth_from_keyframes, enough_depth

        t = time.perf_counter()
        pred, cfg = window.prediction, self._tracked_depth_config()
        clouds = [self._keyframe_cloud(window, v) for v in views]
        result = depth_from_keyframes(clouds, pred.K[views[0]], c2w, pred.model_size, cfg)
        if enough_depth(result, clouds, cfg):
            self.counted.count("frames_tracked_with_depth", (index,))
        self.timings["tracked_depth"] = self.timings.get("tracked_depth", 0.0) + time.perf_counter() - t
        if self.config.save_depth and result.valid_share > 0:
            t = time.perf_counter()
            self.writer.write_depth(index, result.depth, result.conf, pred.K[views[0]], c2w, keyframes=result.sources)
            self.timings["tracked_depth_write"] = self.timings.get("tracked_depth_write", 0.0) + time.perf_counter() - t

    def _keyframe_cloud(self, window: AlignedWindow, v: int):
        """View v's confident depth as world points, lifted once (a keyframe brackets two groups)."""
        from recon.tracked_depth import lift_keyframe

        key = (window.window_index, v)
        if key not in self._clouds:
            pred = window.prediction
            flat = pred.rotation_only_views[v]  # no parallax: its depth is unknown
            conf = np.zeros_like(pred.depth_conf[v]) if flat else pred.depth_conf[v]
            if len(self._clouds) >= 2:
                self._clouds.pop(next(iter(self._clouds)))
            self._clouds[key] = lift_keyframe(int(pred.frame_indices[v]), pred.depth[v], conf, pred.K[v],
                                              pred.c2w[v], self._tracked_depth_config().step)
        return self._clouds[key]

    def _tracked_depth_config(self):
        """``config.tracked_depth``; without depth files the maps are only counted, which a quarter of
        the model resolution does as well, at a third of the cost."""
        cfg = self.config.tracked_depth
        return cfg if self.config.save_depth else replace(cfg, scale=min(cfg.scale, COUNT_SCALE))

    def _publish(self, pose: FramePose) -> None:
        """A frame posed between keyframes, to the observers that show such poses (the viewer)."""
        publish_pose(self.observers, pose)

    def largest_segment(self) -> int | None:
        """The world the map files show: tracking lost late in a stream leaves a small last world, so the
        one with the largest map (the current one on a tie; None before any window)."""
        if self.cache is not None:
            return self.cache.largest_segment()
        return self.fallback_points.largest_segment()

    def finish(self) -> dict[str, Path]:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        out: dict[str, Path] = {}
        if self.cache is not None:  # written even when empty: the folder always has the same files
            from memory.gaussians import write_splats_ply

            self.map_segment = self.largest_segment()
            snap = self.cache.snapshot(segment=self.map_segment)
            self.stats.gaussians = snap.num  # the map written, not the cache's current world
            for obs in self.observers:
                obs.on_gaussians(snap)
            out["splats.ply"] = write_splats_ply(self.writer.out_dir / "splats.ply", snap)
            colors = np.clip(snap.colors * 255.0 + 0.5, 0, 255).astype(np.uint8)
            out["points.ply"] = self.writer.write_points(snap.means[~snap.is_dynamic], colors[~snap.is_dynamic])
            self.map_points = int((~snap.is_dynamic).sum())
        else:
            self.map_segment = self.largest_segment()
            pts, cols = self.fallback_points.points(self.map_segment)
            out["points.ply"] = self.writer.write_points(pts, cols)
            self.map_points = len(pts)
        if self.map_segment is not None and self.map_segment != self.stats.segment:
            log.info("the map files show world segment %d, the largest; the stream ended in segment %d",
                     self.map_segment, self.stats.segment)
        return out


def in_order(pool: Executor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map(fn, items)`` computed on ``pool`` at most ``ahead`` items in advance of the consumer,
    so that results (images) do not pile up when the consumer is slower."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class VoxelCloud:
    """Confident points fused on a voxel grid (used when the Gaussian cache is off): bounded by the scene.

    Points are kept per world segment; points.ply gets the largest segment's, as splats.ply does.
    """

    def __init__(self, max_points: int = 2_000_000):
        self.voxel: float | None = None
        self.max_points = max_points
        self.segment = 0
        self._pts = np.zeros((0, 3), np.float32)
        self._cols = np.zeros((0, 3), np.uint8)
        self._seg = np.zeros(0, np.int64)
        self._win = np.zeros(0, np.int64)

    def add(self, window: AlignedWindow) -> None:
        pred = window.prediction
        self.segment = window.segment
        # Every other pixel each way: the voxel (1/250 of the median depth, ~1.7 px at 512 px and a
        # 60 degree field of view) would keep only one of each 2 x 2 block anyway.
        conf, points, images = pred.points_conf[:, ::2, ::2], pred.points[:, ::2, ::2], pred.images[:, ::2, ::2]
        # The window's better half; ">=" because a backend's confidence can saturate (at 1.0 on most
        # of a sharp synthetic street), and then nothing lies strictly above the median.
        keep = window.is_new[:, None, None] & (conf > 0) & (conf >= np.quantile(conf, 0.5))
        pts = points[keep]
        if len(pts) == 0:
            return
        if self.voxel is None:
            self.voxel = float(np.median(pred.depth[:, ::2, ::2][keep])) / 250.0 or 1e-3
        self._pts = np.concatenate([self._pts, pts])
        self._cols = np.concatenate([self._cols, images[keep]])
        self._seg = np.concatenate([self._seg, np.full(len(pts), window.segment, np.int64)])
        self._win = np.concatenate([self._win, np.full(len(pts), window.window_index, np.int64)])
        cell = np.floor(self._pts / self.voxel).astype(np.int64)
        # One int64 per cell (20 bits an axis); segments are told apart by sorting on them first, so
        # any number of segments keep their own points.
        key = ((cell[:, 0] & 0xFFFFF) << 40) | ((cell[:, 1] & 0xFFFFF) << 20) | (cell[:, 2] & 0xFFFFF)
        order = np.lexsort((key, self._seg))  # stable: the first point of a voxel stays
        seg, key = self._seg[order], key[order]
        first = np.ones(len(order), bool)
        first[1:] = (seg[1:] != seg[:-1]) | (key[1:] != key[:-1])
        kept = np.sort(order[first])
        self._pts, self._cols, self._seg, self._win = self._pts[kept], self._cols[kept], self._seg[kept], self._win[kept]
        if len(self._pts) > self.max_points:
            self.voxel *= 1.5

    def reattach(self, link) -> None:
        moved = self._seg == link.from_segment
        self._pts[moved] = link.sim3.apply(self._pts[moved].astype(np.float64)).astype(np.float32)
        self._seg[moved] = link.to_segment

    def move_windows(self, corrections: dict) -> None:
        """Points of windows a loop closure moved follow them (``window_index -> geometry.Sim3``)."""
        for w, sim3 in corrections.items():
            sel = self._win == w
            self._pts[sel] = sim3.apply(self._pts[sel].astype(np.float64)).astype(np.float32)

    def largest_segment(self) -> int:
        """The segment with the most points, the current one on a tie."""
        counts = np.bincount(self._seg, minlength=self.segment + 1)
        return self.segment if counts[self.segment] == counts.max() else int(np.argmax(counts))

    def points(self, segment: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points [N, 3] and colours [N, 3] uint8 of ``segment`` (None: the current one)."""
        mine = self._seg == (self.segment if segment is None else segment)
        return self._pts[mine], self._cols[mine]
