"""``RerunObserver``: the pipeline's live rerun viewer, a non-blocking ``StreamObserver``.

The pipeline thread only enqueues references (no copies of pixel arrays, so the
pipeline must not mutate a window after emitting it); a background thread does
the logging. When that thread falls behind, ``DropQueue`` drops stale items and
counts them, and the stream keeps going.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import replace

from stream4d.contracts import AlignedWindow, FramePose, GaussianSnapshot, StreamStats
from stream4d.outputs import PosedFrame
from viz import work_queue as wq
from viz.blueprint import build_blueprint
from viz.config import VizConfig
from viz.recorder import StreamRecorder
from viz.session import RerunSession

log = logging.getLogger(__name__)


class RerunObserver:
    """Logs a stream to rerun (live viewer and/or ``.rrd``); implements ``StreamObserver``.

    Attributes:
        viewer_url: web viewer URL on 127.0.0.1 when serving (also printed), else None.
        mode: the viewer mode in effect (``"spawn"`` may fall back to ``"serve"``).
        errors: logging failures (the stream is never interrupted by them).
    """

    def __init__(self, config: VizConfig) -> None:
        self.config = config
        self.viewer_url: str | None = None
        self.mode = config.mode
        self.errors: list[str] = []
        self._closed = False
        self._windows_seen = 0
        self._windows_at_last_cache = None  # windows seen when the cache was last enqueued
        self._newest_snapshot: tuple | None = None  # drawn on close with final_point_budget
        self._last_frame = (0, 0.0)  # (frame index, timestamp) of the newest window's last view
        self._queue = wq.DropQueue(config.queue_size)
        self.session: RerunSession | None = None
        self._thread: threading.Thread | None = None
        if not config.enabled:
            return
        self.session = RerunSession(config, build_blueprint(config))
        self.viewer_url, self.mode = self.session.viewer_url, self.session.mode
        self._recorder = StreamRecorder(self.session.recording, config)
        self._thread = threading.Thread(target=self._run, name="stream4d-rerun-logger", daemon=True)
        self._thread.start()

    # --- StreamObserver (pipeline thread; never blocks) ----------------------------------

    def on_window(self, window: AlignedWindow) -> None:
        if not self._accepting():
            return
        self._windows_seen += 1
        pred = window.prediction
        if pred.num_frames:
            self._last_frame = (int(pred.frame_indices[-1]), float(pred.timestamps[-1]))
        self._queue.put(wq.WINDOW, window)

    def on_gaussians(self, snapshot: GaussianSnapshot) -> None:
        if not self._accepting():
            return
        item = (snapshot, *self._last_frame)
        self._newest_snapshot = item
        due = (self._windows_at_last_cache is None
               or self._windows_seen - self._windows_at_last_cache >= self.config.cache_every)
        if due:
            self._windows_at_last_cache = self._windows_seen
            self._queue.put(wq.GAUSSIANS, (*item, self.config.point_budget))

    def on_pose(self, pose: FramePose) -> None:
        """A frame tracked live or posed between keyframes: its frustum, marked as tracked."""
        if self._accepting():
            self._queue.put(wq.POSE, pose)

    def on_final(self, frames: list[PosedFrame]) -> None:
        """The stream's final poses: drawn as the final path at the last frame time."""
        if self._accepting():
            self._queue.put(wq.FINAL, (frames, *self._last_frame))

    def on_stats(self, stats: StreamStats) -> None:
        if not self._accepting():
            return
        # The pipeline keeps updating its StreamStats; queue a snapshot of the counters.
        self._queue.put(wq.STATS, (replace(stats, errors=list(stats.errors)), *self._last_frame))

    def close(self) -> None:
        """Drain the logging thread, draw the last cache, flush and finalise the ``.rrd``.

        In serve mode the gRPC server keeps serving the finished recording to viewers
        until ``shutdown()`` or process exit (``VizConfig.serve_after_close``).
        """
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        if self._newest_snapshot is not None:  # the finished map, drawn fuller than the live refreshes
            self._queue.put(wq.GAUSSIANS, (*self._newest_snapshot, self.config.final_point_budget))
            self._newest_snapshot = None
        self._queue.put_stop()
        self._thread.join(timeout=self.config.close_timeout)
        if self._thread.is_alive():
            self._error(f"the rerun logging thread did not finish within {self.config.close_timeout:.0f} s; "
                        f"{len(self._queue)} items were not logged")
        self.session.finish()

    def shutdown(self) -> None:
        """``close()`` and also stop the served gRPC server."""
        self.close()
        if self.session is not None:
            self.session.shutdown()

    def __enter__(self) -> "RerunObserver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def dropped(self) -> dict[str, int]:
        """Items the logging thread skipped because it was behind, per kind
        (``window``: a window logged without pixels/points; ``gaussians``/``stats``: superseded)."""
        return dict(self._queue.dropped)

    @property
    def recording_id(self) -> str | None:
        return None if self.session is None else self.session.recording.get_recording_id()

    # --- logging thread ------------------------------------------------------------------

    def _accepting(self) -> bool:
        return self._thread is not None and not self._closed

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or item.kind == wq.STOP:
                return
            try:
                self._record(item)
            except Exception as exc:  # a logging failure must never stop the stream
                self._error(f"rerun logging of a {item.kind} item failed: {exc!r}")

    def _record(self, item: wq.WorkItem) -> None:
        if item.kind == wq.WINDOW:
            self._recorder.record_window(item.payload)
        elif item.kind == wq.CAMERAS:
            self._recorder.record_cameras(item.payload)
        elif item.kind == wq.POSE:
            self._recorder.record_pose(item.payload)
        elif item.kind == wq.GAUSSIANS:
            self._recorder.record_gaussians(*item.payload)
        elif item.kind == wq.FINAL:
            self._recorder.record_final(*item.payload)
        elif item.kind == wq.STATS:
            stats, frame, t = item.payload
            self._recorder.record_stats(stats, frame, t, viewer_dropped=sum(self._queue.dropped.values()))

    def _error(self, message: str) -> None:
        self.errors.append(message)
        log.warning(message)
        if self.config.announce and len(self.errors) == 1:
            print(f"[stream4d viewer] {message}", file=sys.stderr, flush=True)
