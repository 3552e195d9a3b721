"""Frames pushed in-process (e.g. arriving over a websocket) and the live buffer.

Live producers must never wait for the reconstruction: ``DropOldestBuffer``
holds at most ``capacity`` frames (and, given ``max_bytes``, at most that many
bytes of them) and, when full, discards the oldest one so the consumer always
works on the most recent frames. Cameras reuse it.

``PushSource`` shrinks each pushed image to the size the model will see as it
arrives (the same plan ingest applies later, so the model input is unchanged):
a queue of full-size frames from a high-resolution client would otherwise hold
gigabytes.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from typing import Callable, Generic, Iterator, TypeVar

import numpy as np

from recon.ingest.base import FrameSource, RawFrame, SourceInfo
from recon.ingest.errors import IngestError
from recon.ingest.options import IngestOptions
from recon.ingest.transforms import ResizePlan, plan_resize

T = TypeVar("T")


class DropOldestBuffer(Generic[T]):
    """Thread-safe bounded FIFO: ``put`` never blocks, ``get`` waits for an item.

    ``on_drop`` is called (under the buffer's lock) for every item discarded
    because the buffer was full. With ``max_bytes``, ``put`` also drops the
    oldest items until the queued bytes (as given to ``put``) fit the budget;
    the newest item is always kept.
    """

    def __init__(self, capacity: int, on_drop: Callable[[], None] | None = None,
                 max_bytes: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.nbytes = 0  # bytes of the queued items
        self._items: deque[tuple[T, int]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._error: IngestError | None = None
        self._on_drop = on_drop

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T, nbytes: int = 0) -> bool:
        """Append ``item`` (of ``nbytes``); returns False when older items had to be dropped for it."""
        with self._cond:
            if self._closed:
                raise RuntimeError("put on a closed buffer")
            dropped = False
            while self._items and (len(self._items) >= self.capacity or
                                   (self.max_bytes is not None and self.nbytes + nbytes > self.max_bytes)):
                _, size = self._items.popleft()
                self.nbytes -= size
                dropped = True
                if self._on_drop is not None:
                    self._on_drop()
            self._items.append((item, nbytes))
            self.nbytes += nbytes
            self._cond.notify()
            return not dropped

    def clear(self) -> int:
        """Discard every queued item (not counted as drops); returns how many there were."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self.nbytes = 0
            return n

    def close(self, error: IngestError | None = None) -> None:
        """No more items; ``get`` drains what is left, then raises ``error`` if given."""
        with self._cond:
            self._closed = True
            if error is not None and self._error is None:
                self._error = error
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None once closed and drained; TimeoutError after ``timeout`` s idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
            item, size = self._items.popleft()
            self.nbytes -= size
            return item


class PushSource(FrameSource):
    """A live source fed by ``push``; iteration waits for frames until ``close``.

    Timestamps are relative to the first pushed frame; a frame pushed without
    one gets the wall-clock time since the first push. ``Frame.source`` is
    ``"<name>#<n>"`` with n counting pushed frames (dropped ones included).
    ``idle_timeout`` (s) makes iteration raise ``IngestError`` (reason
    ``stalled``) when no frame arrives for that long; None waits forever.
    ``max_bytes`` bounds the queued pixels in bytes (None: ``capacity`` only).

    Images larger than ``options.resize`` asks for are shrunk on ``push`` to the
    scaled size ingest would produce, so ``Frame.input_size`` of a pushed frame
    is that shrunk size (pushed frames carry no intrinsics to rescale).
    """

    def __init__(self, name: str = "live", capacity: int = 64, options: IngestOptions | None = None,
                 idle_timeout: float | None = None, max_bytes: int | None = None) -> None:
        super().__init__(SourceInfo("push", name, None, None, None), options)
        self.idle_timeout = idle_timeout
        # A weak reference: a bound method would make source and buffer a cycle that
        # only the cyclic GC frees, keeping every queued frame alive after the session.
        this = weakref.ref(self)

        def count_drop() -> None:
            source = this()
            if source is not None:
                source.stats.dropped += 1

        self._buffer: DropOldestBuffer[RawFrame] = DropOldestBuffer(capacity, on_drop=count_drop,
                                                                    max_bytes=max_bytes)
        self._lock = threading.Lock()
        self._pushed = 0
        self._t0: float | None = None  # timestamp of the first pushed frame
        self._clock0 = 0.0  # monotonic time of the first push

    def push(self, image: np.ndarray, timestamp: float | None = None) -> None:
        """Queue an RGB uint8 [H, W, 3] (or grey [H, W]) image; never blocks.

        When the buffer is full the oldest queued frame is dropped and counted
        in ``stats.dropped``. The image is not copied (unless shrunk): do not
        modify it after.
        """
        image = fit_for_model(image, self.options.resize, self.info.name)
        with self._lock:
            if self._buffer.closed:
                raise IngestError(self.info.name, "closed", "push after close()")
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = float(timestamp) if timestamp is not None else 0.0
                self._clock0 = now
                self.info.size = (image.shape[1], image.shape[0])
            t = (float(timestamp) - self._t0) if timestamp is not None else now - self._clock0
            number = self._pushed
            self._pushed += 1
            self._buffer.put(RawFrame(number, t, f"{self.info.name}#{number}", load=lambda: image, arrived=now),
                             image.nbytes)

    @property
    def pending(self) -> int:
        """Frames queued and not yet taken by the consumer."""
        return len(self._buffer)

    @property
    def pending_bytes(self) -> int:
        """Bytes of the queued frames' pixels."""
        return self._buffer.nbytes

    def close(self) -> None:
        """End of stream: iteration finishes after the frames already queued."""
        with self._lock:
            self._buffer.close()

    def discard(self) -> int:
        """End of stream, and the queued frames are freed now (the consumer is gone or done)."""
        with self._lock:
            self._buffer.close()
            return self._buffer.clear()

    def _raw_frames(self) -> Iterator[RawFrame]:
        return drain(self._buffer, self.info.name, self.idle_timeout)


def drain(buffer: DropOldestBuffer[RawFrame], name: str, idle_timeout: float | None) -> Iterator[RawFrame]:
    """Items of ``buffer`` until it is closed and empty."""
    while True:
        try:
            raw = buffer.get(idle_timeout)
        except TimeoutError:
            raise IngestError(name, "stalled", f"no frame arrived for {idle_timeout:g} s") from None
        if raw is None:
            return
        yield raw


def fit_for_model(image: np.ndarray, resize: str | int | None, name: str = "live") -> np.ndarray:
    """``image`` as ``push`` queues it: RGB uint8 [H, W, 3], shrunk to the size ``resize`` scales it
    to. Idempotent, so a frame fitted before it travels (to a Ray node) is queued unchanged."""
    return _shrunk(_as_rgb(image, name), resize)


def _shrunk(image: np.ndarray, resize: str | int | None) -> np.ndarray:
    """``image`` scaled down to the size ``resize`` will scale it to (never up; no crop)."""
    h, w = image.shape[:2]
    plan = plan_resize((w, h), resize)
    sw, sh = plan.scaled_size
    if sw >= w or sh >= h:
        return image
    return ResizePlan((w, h), (sw, sh), (0, 0), (sw, sh)).apply(image)


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise IngestError(name, "bad_image", f"pushed image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise IngestError(name, "bad_image", f"pushed image must be [H, W, 3] or [H, W], got {image.shape}")
    return image
