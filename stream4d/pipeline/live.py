"""Live poses and latency: every frame tracked as it arrives, and how long its first pose took.

``LiveFrames`` sits first in the reader thread's chain: it stamps each frame's
arrival into the ``LatencyLog`` and, when live tracking is on, poses the frame
at once against the newest aligned window's map (``recon.live_tracking``) and
hands the pose to the observers (``on_pose``, ``final`` False). The run's
mapping (keyframes -> windows -> alignment) goes on behind it; when a window is
aligned it becomes the tracker's map (``map_first``, in the alignment thread),
and the frames around it are posed again, finally, by the sink.

A live pose is kept (``LivePoses``) until the frame's window is aligned; the
sink then moves it by the correction the window made to the keyframes around
it (their aligned poses against their own live poses, interpolated in time)
instead of tracking the frame again: on two cores the CPU goes to tracking.

Before the first window's map, ``bootstrap`` (``recon.live_bootstrap.TwoViewBootstrap``)
follows the frames from the stream's first one until their parallax suffices for a two-view map;
the frames held since then are posed at that moment and the tracker tracks the next ones on that
map. Those poses are provisional (their own world, the prior's intrinsics when none are given):
they reach the observers (and count for latency), never ``LivePoses`` nor the output folder; the
first window's map takes over by a similarity (``recon.live_tracking``), and the window poses
the frames again.

``LatencyLog`` is an observer too: a frame's latency is the time from its
arrival (``Frame.arrived``: received by a live source, or decoded from a file)
to the first pose of it that reached the observers, live or from its window.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from stream4d.contracts import (
    POSE_TRACKED,
    AlignedWindow,
    Frame,
    FramePose,
    StreamObserver,
    StreamStats,
    publish_pose,
)

LIVE_KINDS = ("camera", "push")


def lower_this_thread(by: int) -> None:
    """Lower the calling thread's CPU priority (Linux: a thread's nice value is its own) by ``by``;
    a no-op where that is not possible. Mapping threads of a live run call it, so that on a busy
    machine the tracking thread gets the CPU first."""
    if by <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))


def live_tracking_active(setting: str, source_kind: str) -> bool:
    """``auto``: live sources (cameras, RTSP/HTTP streams opened as cameras, WebSocket push)."""
    if setting == "auto":
        return source_kind in LIVE_KINDS
    return setting == "on"


class LatencyLog(StreamObserver):
    """Arrival-to-first-pose times per frame (thread-safe); an observer, first in the run's list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived: dict[int, float] = {}  # frame index -> arrival, until its first pose
        self._latencies: list[float] = []
        self._live: list[float] = []  # of those, first posed by live tracking
        self._provisional: set[int] = set()  # frames whose live pose is a bootstrap map's
        self._bootstrap: list[float] = []  # of the live ones, first posed on a bootstrap map

    def arrived(self, frame: Frame) -> None:
        with self._lock:
            self._arrived[frame.index] = frame.arrived if frame.arrived is not None else time.monotonic()

    def provisional(self, index: int) -> None:
        """Frame ``index``'s coming live pose is a bootstrap map's (counted apart too)."""
        with self._lock:
            self._provisional.add(int(index))

    def posed(self, index: int, live: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            t = self._arrived.pop(int(index), None)
            provisional = int(index) in self._provisional
            self._provisional.discard(int(index))
            if t is None:
                return  # posed before (live, or by an earlier window)
            self._latencies.append(now - t)
            if live:
                self._live.append(now - t)
                if provisional:
                    self._bootstrap.append(now - t)

    def refresh(self, stats: StreamStats) -> None:
        """``stats.latency_p50_s`` / ``latency_p95_s`` from the frames posed so far."""
        with self._lock:
            lat = np.asarray(self._latencies)
        if lat.size:
            stats.latency_p50_s, stats.latency_p95_s = (float(v) for v in np.percentile(lat, [50, 95]))

    def summary(self) -> dict:
        """run.json ``latency_s``: over every posed frame and over the frames posed live."""
        with self._lock:
            lat, live, unposed = np.asarray(self._latencies), np.asarray(self._live), len(self._arrived)
            boot = np.asarray(self._bootstrap)

        def stats(a: np.ndarray) -> dict:
            if not a.size:
                return {"frames": 0, "p50": None, "p95": None, "max": None}
            p50, p95 = np.percentile(a, [50, 95])
            return {"frames": int(a.size), "p50": float(p50), "p95": float(p95), "max": float(a.max())}

        return {"definition": "arrival (received by a live source, or decoded) to the first pose reaching "
                              "the observers, seconds",
                **stats(lat), "live": stats(live), "bootstrap": stats(boot), "never_posed": unposed}

    # --- StreamObserver ---
    def on_window(self, window: AlignedWindow) -> None:
        for k in np.nonzero(window.is_new)[0]:
            self.posed(int(window.prediction.frame_indices[k]))

    def on_pose(self, pose: FramePose) -> None:
        self.posed(pose.index, live=not pose.final)

    def on_stats(self, stats: StreamStats) -> None:
        self.refresh(stats)



class LivePoses:
    """Live poses by frame index (thread-safe), until the sink re-poses their frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poses: dict[int, tuple[np.ndarray, int]] = {}  # index -> (c2w [4, 4], segment)

    def add(self, index: int, c2w: np.ndarray, segment: int) -> None:
        with self._lock:
            self._poses[int(index)] = (c2w, segment)

    def corrections(self, pred, a: int, b: int, segment: int) -> "LiveCorrection | None":
        """How the aligned window ``pred`` moved its views ``a`` and ``b`` from their live poses (None
        when either had none in ``segment``); live poses before view ``a`` are let go."""
        ia, ib = int(pred.frame_indices[a]), int(pred.frame_indices[b])
        with self._lock:
            for old in [i for i in self._poses if i < ia]:
                del self._poses[old]
            pa, pb = self._poses.get(ia), self._poses.get(ib)
        if pa is None or pb is None or pa[1] != segment or pb[1] != segment:
            return None
        return LiveCorrection(self, pred.c2w[a] @ np.linalg.inv(pa[0]), pred.c2w[b] @ np.linalg.inv(pb[0]),
                              float(pred.timestamps[a]), float(pred.timestamps[b]), pred.c2w[a], pred.c2w[b])

    def take(self, index: int) -> np.ndarray | None:
        with self._lock:
            entry = self._poses.pop(int(index), None)
        return None if entry is None else entry[0]


class LiveCorrection:
    """The correction of one pair of aligned keyframes, applied to the live poses between them."""

    def __init__(self, poses: LivePoses, corr_a: np.ndarray, corr_b: np.ndarray, ta: float, tb: float,
                 c2w_a: np.ndarray, c2w_b: np.ndarray) -> None:
        self.poses, self.corr_a, self.corr_b, self.ta, self.tb = poses, corr_a, corr_b, ta, tb
        self.c2w_a, self.c2w_b = c2w_a, c2w_b

    def pose(self, index: int, timestamp: float) -> np.ndarray | None:
        """c2w [4, 4] of frame ``index`` in the aligned window's world, or None (no live pose, or one
        further from the keyframes' path than their distance: a bad live solve)."""
        from recon.tracking import interpolate_pose

        live = self.poses.take(index)
        if live is None:
            return None
        t = 0.5 if self.tb <= self.ta else (timestamp - self.ta) / (self.tb - self.ta)
        c2w = interpolate_pose(self.corr_a, self.corr_b, t) @ live
        path = interpolate_pose(self.c2w_a, self.c2w_b, t)[:3, 3]
        baseline = np.linalg.norm(self.c2w_b[:3, 3] - self.c2w_a[:3, 3])
        if not np.all(np.isfinite(c2w)) or np.linalg.norm(c2w[:3, 3] - path) > baseline:
            return None
        return c2w


class LiveFrames:
    """The run's first stage (reader thread): arrivals stamped, frames tracked live when ``tracker``
    is given (a ``recon.live_tracking.MapTracker``), on a two-view map before the first window's when
    ``bootstrap`` is given too (a ``recon.live_bootstrap.TwoViewBootstrap``)."""

    def __init__(self, latency: LatencyLog, observers: Sequence[StreamObserver], stats: StreamStats,
                 timings: dict[str, float], tracker=None, source_stats=None, stats_every_s: float = 0.5,
                 mapping_nice: int = 0, bootstrap=None) -> None:
        self.latency = latency
        self.mapping_nice = mapping_nice
        self.poses = LivePoses()
        self.observers = list(observers)
        self.stats = stats
        self.timings = timings
        self.tracker = tracker
        self.bootstrap = bootstrap if tracker is not None else None
        self.bootstrap_posed = 0  # frames posed at a bootstrap's init (the held ones)
        self._provisional_times: dict[int, float] = {}  # frame index -> timestamp, provisional poses shown
        self._aligned_upto = -1  # the last frame of the windows the sink has been given
        self.source_stats = source_stats
        self.stats_every_s = stats_every_s
        self._last_stats = time.monotonic()

    @property
    def tracking(self) -> bool:
        return self.tracker is not None

    def __call__(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for f in frames:
            self.latency.arrived(f)
            if self.tracker is not None:
                self._track(f)
            yield f

    def _track(self, f: Frame) -> None:
        t = time.perf_counter()
        tracked = self.tracker.track(f.image, f.pixel_map, f.index)
        self.timings["live_tracking"] = self.timings.get("live_tracking", 0.0) + time.perf_counter() - t
        if tracked is None and self.bootstrap is not None and self.tracker.needs_bootstrap:
            self._bootstrap(f)
        handed, K, size = self.tracker.take_handover()
        for index, c2w in sorted(handed.items()):  # shown again in the window's world: no jump
            if index > self._aligned_upto:  # else its window came first: its final pose is the sink's
                self._publish(FramePose(index, self._provisional_times.get(index, f.timestamp), c2w, K, size,
                                        POSE_TRACKED, self.stats.segment, final=False))
        if not self.tracker.on_bootstrap_map:  # handed over (or let go): their times are not needed
            self._provisional_times.clear()
        if tracked is not None:
            if tracked.provisional:
                self.latency.provisional(f.index)
                if self.tracker.on_bootstrap_map:
                    self._provisional_times[f.index] = f.timestamp
            self._publish(FramePose(f.index, f.timestamp, tracked.c2w, tracked.K, tracked.size, POSE_TRACKED,
                                    tracked.segment, final=False))
            # Bootstrap poses, and poses on points the tracker triangulated itself (they drift with it),
            # never reach the sink's corrections: the sink tracks those frames against the window.
            if not tracked.provisional and not tracked.grown:
                self.poses.add(f.index, tracked.c2w, tracked.segment)
            self.stats.frames_posed_live += 1
        now = time.monotonic()
        if now - self._last_stats >= self.stats_every_s:  # progress between windows, for live latency
            self._last_stats = now
            if self.source_stats is not None:
                self.stats.frames_dropped = getattr(self.source_stats, "dropped", 0)
            for obs in self.observers:
                obs.on_stats(self.stats)

    def _bootstrap(self, f: Frame) -> None:
        """Frame ``f`` to the two-view bootstrap; once it makes a map, the tracker takes it and the frames
        held since its reference are posed (provisionally)."""
        t = time.perf_counter()
        boot = self.bootstrap.add(f.image, f.index, f.timestamp, f.K)
        if boot is not None:
            self.tracker.set_bootstrap(boot, f.pixel_map, self.stats.segment)
            self.bootstrap.reset()  # ready to start again should this map be lost
            H, W = boot.grey.shape
            for index, (timestamp, c2w) in sorted(boot.poses.items()):
                self.latency.provisional(index)
                self._provisional_times[index] = timestamp
                self._publish(FramePose(index, timestamp, c2w, boot.K, (W, H), POSE_TRACKED, self.stats.segment,
                                        final=False))
                self.stats.frames_posed_live += 1
                self.bootstrap_posed += 1
        self.timings["live_bootstrap"] = self.timings.get("live_bootstrap", 0.0) + time.perf_counter() - t

    def _publish(self, pose: FramePose) -> None:
        publish_pose(self.observers, pose)

    def bootstrap_report(self) -> dict | None:
        """run.json ``live_bootstrap``: references taken, maps made, refusals by reason, maps lost, frames
        posed at init, and how the first window's map took over; None without a bootstrap."""
        if self.bootstrap is None:
            return None
        return {**self.bootstrap.report(), "frames_posed_at_init": self.bootstrap_posed,
                "lost": self.tracker.bootstrap_lost, "rebootstraps": self.tracker.rebootstraps,
                "handover": self.tracker.handover}

    def map_first(self, sink: Callable[[AlignedWindow], None]) -> Callable[[AlignedWindow], None]:
        """``sink`` (the alignment worker's ``on_aligned``), with each aligned window made the
        tracker's map before the sink spends its time posing the frames between keyframes."""
        if self.tracker is None:
            return sink

        lowered = []

        def aligned(window: AlignedWindow) -> None:
            if not lowered:  # the alignment thread maps: it yields the CPU to tracking
                lower_this_thread(self.mapping_nice)
                lowered.append(True)
            self.tracker.set_map(window.prediction, window.segment)
            self._aligned_upto = max(self._aligned_upto, int(np.max(window.prediction.frame_indices)))
            sink(window)

        return aligned
