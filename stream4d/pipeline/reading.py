"""Frames read ahead: decoding and per-frame preparation in background threads."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from stream4d.contracts import Frame

_END = object()


def read_ahead(frames: Iterator[Frame], maxsize: int, stop: threading.Event,
               prepare: Callable[[Frame], None] | None = None, workers: int = 2,
               on_thread_start: Callable[[], None] | None = None) -> Iterator[Frame]:
    """Decode in a background thread and ``prepare`` on ``workers`` threads; frames come out in
    order. An error (decoding or preparing) is re-raised in the consumer after the frames before it.
    ``on_thread_start`` runs first in each of these threads (e.g. to lower their priority)."""
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
            if on_thread_start is not None:
                on_thread_start()
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="stream4d-prepare",
                                    initializer=on_thread_start) as pool:
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
