"""Live cameras: OpenCV device indices and network streams (RTSP, HTTP MJPEG, ...).

A background thread reads frames as fast as the camera delivers them into a
``DropOldestBuffer``, so a slow consumer sees the newest frames and the
drops are counted instead of piling up latency. Opening and reading are
bounded by ``IngestOptions.timeout``: an unreachable camera fails quickly.
Timestamps are wall-clock seconds since the first frame was read.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from recon.ingest.base import FrameSource, RawFrame, SourceInfo
from recon.ingest.errors import IngestError
from recon.ingest.options import IngestOptions
from recon.ingest.push import DropOldestBuffer, drain


class CameraSource(FrameSource):
    """Frames of an OpenCV ``VideoCapture``; ``Frame.source`` is ``"<name>#<n>"``.

    ``device`` is a device index (``name`` "camera:<i>"), a V4L2 device path
    (``/dev/video<i>``) or a stream URL (``name`` the URL without credentials).
    """

    def __init__(self, device: int | str, options: IngestOptions | None = None) -> None:
        name = f"camera:{device}" if isinstance(device, int) else public_url(device)
        super().__init__(SourceInfo("camera", name, None, None, None), options)
        self._device = device
        self._stop = threading.Event()
        self._buffer: DropOldestBuffer[RawFrame] = DropOldestBuffer(
            self.options.live_capacity, on_drop=self._count_drop)
        self._capture = _open_capture(device, name, self.options.timeout)
        first = _first_frame(self._capture, self.options.timeout)
        self._t0 = time.monotonic()  # timestamps count from the first frame
        if first is None:
            raise IngestError(name, "unreachable", f"opened but delivered no frame within {self.options.timeout:g} s")
        self.info.size = (first.shape[1], first.shape[0])
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.info.fps = float(fps) if fps and 0 < fps < 1000 else None
        self._reader = threading.Thread(target=self._read_loop, args=(first,), name=f"ingest {name}", daemon=True)
        self._reader.start()

    def _count_drop(self) -> None:
        self.stats.dropped += 1

    def _read_loop(self, first: np.ndarray) -> None:
        number = 0
        bgr: np.ndarray | None = first
        try:
            while not self._stop.is_set():
                if bgr is None:
                    ok, bgr = self._capture.read()
                    if not ok or bgr is None:
                        self.stats.errors.append(f"{self.info.name}: stream ended after {number} frames")
                        break
                now = time.monotonic()
                t = 0.0 if number == 0 else now - self._t0
                # Colour conversion happens in the consumer, only for frames it takes.
                self._buffer.put(RawFrame(number, t, f"{self.info.name}#{number}",
                                          load=lambda bgr=bgr: _bgr_to_rgb(bgr), arrived=now))
                number += 1
                bgr = None
        except Exception as exc:  # the consumer must hear about it rather than wait forever
            self._buffer.close(IngestError(self.info.name, "corrupt", f"reading failed after {number} frames: {exc}"))
        finally:
            self._buffer.close()
            self._capture.release()

    def _raw_frames(self) -> Iterator[RawFrame]:
        # A stall longer than the read timeout means the camera is gone.
        return drain(self._buffer, self.info.name, max(self.options.timeout * 2, 1.0))

    def _release(self) -> None:
        self._stop.set()
        self._reader.join(timeout=self.options.timeout + 1.0)


def public_url(url: str) -> str:
    """``url`` without user:password, fit for names and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _open_capture(device: int | str, name: str, timeout: float) -> cv2.VideoCapture:
    """An opened VideoCapture, or IngestError within about ``timeout`` seconds."""
    result: dict[str, object] = {}
    abandoned = threading.Event()

    def open_it() -> None:
        try:
            if isinstance(device, int):
                cap = cv2.VideoCapture(device)
            elif device.startswith("/dev/"):
                cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
            else:
                ms = int(timeout * 1000)
                cap = cv2.VideoCapture(device, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        except Exception as exc:  # OpenCV raises cv2.error for some bad devices
            result["error"] = exc
            return
        if abandoned.is_set():  # we already gave up on it: do not leak the device
            cap.release()
        result["cap"] = cap

    # OpenCV backends do not all honour the timeouts, so bound the wait ourselves.
    opener = threading.Thread(target=open_it, name=f"open {name}", daemon=True)
    opener.start()
    opener.join(timeout)
    if opener.is_alive():
        abandoned.set()
        raise IngestError(name, "unreachable", f"did not open within {timeout:g} s")
    cap = result.get("cap")
    if cap is None or not cap.isOpened():
        if cap is not None:
            cap.release()
        why = f" ({result['error']})" if "error" in result else ""
        raise IngestError(name, "unreachable", f"cannot open the camera or stream{why}")
    return cap


def _first_frame(cap: cv2.VideoCapture, timeout: float) -> np.ndarray | None:
    """The first BGR frame; None (and the capture released) when none comes within ``timeout`` s."""
    result: dict[str, object] = {}
    lock = threading.Lock()

    def read_it() -> None:
        ok, frame = False, None
        try:
            ok, frame = cap.read()
        finally:
            with lock:
                if ok and frame is not None and not result.get("abandoned"):
                    result["frame"] = frame
                else:  # released by the thread that used it, even after we gave up waiting
                    cap.release()

    reader = threading.Thread(target=read_it, daemon=True)
    reader.start()
    reader.join(timeout)
    with lock:
        if "frame" not in result:
            result["abandoned"] = True
            return None
        return result["frame"]


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
