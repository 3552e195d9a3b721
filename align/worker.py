"""Alignment beside the window model: its own thread behind a bounded queue.

The window model thread calls ``submit`` and goes on predicting the next
window while this thread aligns the previous one. The queue is bounded so a
slow aligner pushes back (``submit`` blocks once ``maxsize`` windows wait)
instead of letting memory grow. A window whose model output is unusable
(``UnusableWindowError``) is handed to ``on_skipped`` when one is given and the
thread goes on with the next window: one bad window does not end a stream.
Any other error in the aligner or in ``on_aligned`` stops the thread; the next
``submit`` or ``close`` re-raises it in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

from align.aligner import StreamAligner, UnusableWindowError
from stream4d.contracts import AlignedWindow, WindowPrediction

_STOP = object()


class AlignmentWorker:
    """Runs ``aligner.add`` on submitted windows in order, in a daemon thread.

    ``on_aligned`` is called in the worker thread with every AlignedWindow;
    ``on_skipped`` with every window the aligner refused as unusable and its
    error (without it, such a window stops the worker like any other error).
    Usable as a context manager (``close`` on exit).
    """

    def __init__(self, aligner: StreamAligner, maxsize: int = 2,
                 on_aligned: Callable[[AlignedWindow], None] | None = None,
                 on_skipped: Callable[[WindowPrediction, UnusableWindowError], None] | None = None):
        if maxsize < 1:
            raise ValueError(f"AlignmentWorker maxsize must be >= 1, got {maxsize}")
        self.aligner = aligner
        self.on_aligned = on_aligned
        self.on_skipped = on_skipped
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="stream4d-align", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Windows waiting in the queue (not counting the one being aligned)."""
        return self._queue.qsize()

    def submit(self, pred: WindowPrediction, timeout: float | None = None) -> None:
        """Queue ``pred`` for alignment; blocks while the queue is full.

        Raises the worker's error if it has failed, RuntimeError after
        ``close``, and ``queue.Full`` if ``timeout`` seconds pass with the
        queue still full.
        """
        self._raise_if_failed()  # the real cause beats "closed"
        if self._closed:
            raise RuntimeError("AlignmentWorker.submit called after close()")
        self._put(pred, timeout)

    def close(self) -> None:
        """Align what is queued, stop the thread, and re-raise its error if it had one."""
        if not self._closed:
            self._closed = True
            if self._error is None:
                self._put(_STOP, None)
            self._thread.join()
        self._raise_if_failed()

    def __enter__(self) -> "AlignmentWorker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # Already unwinding an error: stop the thread without masking it.
        try:
            self.close()
        except BaseException:
            pass

    def _put(self, item, timeout: float | None) -> None:
        # Poll so a worker that died while the queue is full cannot block us forever.
        waited = 0.0
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                waited += 0.05
                if timeout is not None and waited >= timeout:
                    raise

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                try:
                    aligned = self.aligner.add(item)
                except UnusableWindowError as unusable:
                    if self.on_skipped is None:
                        raise
                    self.on_skipped(item, unusable)
                    continue
                if self.on_aligned is not None:
                    self.on_aligned(aligned)
            except BaseException as err:  # handed to the caller's thread
                self._error = err
                return
