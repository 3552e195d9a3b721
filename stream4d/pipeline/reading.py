"""Frames into windows: decoding ahead in background threads, and the sliding windows."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

from stream4d.contracts import Frame

_END = object()


def read_ahead(frames: Iterator[Frame], maxsize: int, stop: threading.Event,
               prepare: Callable[[Frame], None] | None = None, workers: int = 2) -> Iterator[Frame]:
    """Decode in a background thread and ``prepare`` on ``workers`` threads; frames come out in
    order. An error (decoding or preparing) is re-raised in the consumer after the frames before it."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader():
        pending: deque = deque()  # (frame, Future of prepare or None) in stream order

        def release() -> bool:  # the oldest frame, once prepared; False when stopped
            frame, done = pending.popleft()
            if done is not None:
                done.result()
            return put(frame)

        try:
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="stream4d-prepare") as pool:
                for f in frames:
                    pending.append((f, pool.submit(prepare, f) if prepare is not None else None))
                    while len(pending) >= max(1, workers) or (pending and pending[0][1] is None):
                        if not release():
                            return
                while pending:
                    if not release():
                        return
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=reader, name="stream4d-reader", daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def sliding_windows(frames: Iterator[Frame], window: int, overlap: int,
                    tail_merge: int = 0) -> Iterator[list[Frame]]:
    """Windows of ``window`` frames, consecutive ones sharing exactly ``overlap`` (the aligner keeps
    only that much of the previous window); the stream's tail becomes one shorter last window.

    With ``tail_merge`` > 0 a full window first reads up to ``tail_merge + 1`` further frames: if
    the stream ends among them they join it (one last window of at most ``window + tail_merge``
    frames), instead of a last window that would spend a whole reconstruction mostly on frames
    already done (23 frames in windows of 20 sharing 5: frames 0-22 at once, not 0-19 and 15-22).
    """
    if not 0 <= tail_merge < window - overlap:
        raise ValueError(f"tail_merge must be in [0, {window - overlap}), got {tail_merge}")
    it = iter(frames)
    buf: list[Frame] = []
    fresh = 0  # frames in buf that no window has covered yet
    for f in it:
        buf.append(f)
        fresh += 1
        while len(buf) == window and fresh >= window - overlap:
            extra = list(islice(it, tail_merge + 1)) if tail_merge else []
            if tail_merge and len(extra) <= tail_merge:
                yield buf + extra  # the stream ended: its last frames join this window
                return
            yield list(buf)
            buf = buf[-overlap:] + extra
            fresh = len(extra)
    if fresh and len(buf) >= 2:
        yield buf
