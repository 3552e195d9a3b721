"""Keyframes in the run: which frames go to the window model, and the others held until posed.

``mark_keyframes`` decides in the reader thread (``recon.keyframes``), before any
per-frame preparation is spent on a frame the model will not see. The run's
main thread hands the other frames to ``HeldFrames``, grouped by the keyframe
that follows them; the sink takes a group when that keyframe's window has been
aligned and poses it (``recon.tracking``). Held frames are kept JPEG-compressed:
a window's worth of 60 fps video stays a few tens of megabytes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from recon.keyframes import KeyframeDecision
from stream4d.contracts import Frame


class KeyframeMarks:
    """Frame indices the keyframer chose; written by the reader thread before the frame is passed on."""

    def __init__(self) -> None:
        self._keys: set[int] = set()
        self.reasons: dict[str, int] = {}

    def add(self, index: int, reason: str) -> None:
        self._keys.add(index)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def is_key(self, index: int) -> bool:
        return index in self._keys

    def forget(self, index: int) -> None:
        self._keys.discard(index)


def mark_keyframes(frames: Iterator[Frame], keyframer, marks: KeyframeMarks,
                   judge: Callable[[Frame], bool] | None = None) -> Iterator[Frame]:
    """``frames`` unchanged, each marked (or not) in ``marks`` before it is yielded. One frame is held
    back so the stream's last frame can always be made a keyframe: no frame trails the last window.
    The same holds where the image size changes (a window holds one size, so the frames after the
    last keyframe of a size would have no keyframe of theirs to be tracked to): the last frame of
    each size is a keyframe. ``judge`` (live runs: ``LagJudge``) may let frames pass unjudged: never
    keyframes."""
    previous: tuple[Frame, bool, str] | None = None
    for f in frames:
        if judge is None or judge(f):
            d = keyframer.decide(f.image, f.timestamp)
        else:
            keyframer.skip()
            d = KeyframeDecision(False, "")
        if d.previous and previous is not None:  # the frame before was closer to the threshold
            previous = (previous[0], True, d.previous_reason)
        if previous is not None and not previous[1] and previous[0].size != f.size:
            previous = (previous[0], True, "last of its size")
        if previous is not None:
            frame, key, reason = previous
            if key:
                marks.add(frame.index, reason)
            yield frame
        previous = (f, d.keyframe, d.reason)
    if previous is not None:
        frame, key, reason = previous
        marks.add(frame.index, reason if key else "last")
        yield frame


class LagJudge:
    """Which frames a live run's keyframer judges: every frame while it keeps up; once a frame
    reaches it more than ``lag_s`` after its arrival (the keyframer thread is behind the stream),
    only every ``every``-th frame, the others passing as frames between keyframes, so that the
    front end catches up instead of filling its queue and making the source drop frames."""

    def __init__(self, lag_s: float, every: int = 3) -> None:
        self.lag_s, self.every = lag_s, every
        self._since = every - 1  # frames passed unjudged since the last judged one (the first is judged:
        self.unjudged = 0  # frames before the first keyframe have no window to be posed in)

    def __call__(self, frame: Frame) -> bool:
        behind = frame.arrived is not None and time.monotonic() - frame.arrived > self.lag_s
        if behind and self._since + 1 < self.every:
            self._since += 1
            self.unjudged += 1
            return False
        self._since = 0
        return True


@dataclass
class HeldFrame:
    index: int
    timestamp: float
    source: str
    jpeg: np.ndarray  # the image, JPEG bytes
    pixel_map: np.ndarray  # [3, 3] input pixels -> image pixels
    input_size: tuple[int, int]

    def image(self) -> np.ndarray:
        """uint8 RGB [H, W, 3]."""
        return np.ascontiguousarray(cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR)[..., ::-1])


class HeldFrames:
    """Frames between keyframes, grouped by the keyframe after them, until the sink takes them."""

    def __init__(self, quality: int = 95) -> None:
        self.quality = quality
        self._pending: list[HeldFrame] = []  # since the last keyframe (main thread only)
        self._groups: OrderedDict[int, list[HeldFrame]] = OrderedDict()  # next keyframe index -> frames
        self._lock = threading.Lock()
        self._kept: set[int] = set()  # keyframes to be tried again: their groups are not let go
        self.abandoned = 0  # frames whose keyframes no aligned window had

    def hold(self, frame: Frame) -> None:
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(frame.image[..., ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"frame {frame.index}: JPEG encoding failed")
        self._pending.append(HeldFrame(frame.index, frame.timestamp, frame.source, jpeg,
                                       np.asarray(frame.pixel_map, np.float64), tuple(frame.input_size)))

    def keyframe(self, index: int) -> None:
        """A keyframe went to the windows: the frames held since the last one wait for it."""
        if self._pending:
            with self._lock:
                self._groups[index] = self._pending
            self._pending = []

    def take(self, index: int) -> list[HeldFrame]:
        """The frames before keyframe ``index`` (which a window has just placed); groups of earlier
        keyframes still waiting will never be taken (their windows were skipped) and are let go,
        unless ``keep`` asked for them."""
        with self._lock:
            for key in [k for k in self._groups if k < index and k not in self._kept]:
                self.abandoned += len(self._groups.pop(key))
            self._kept.discard(index)
            return self._groups.pop(index, [])

    def keep(self, index: int) -> None:
        """Keyframe ``index`` was dropped by its window and will be tried again later: its frames wait."""
        with self._lock:
            self._kept.add(index)

    def let_go(self, index: int) -> None:
        """Keyframe ``index`` will not be tried again after all: its frames are let go."""
        with self._lock:
            self._kept.discard(index)
            self.abandoned += len(self._groups.pop(index, []))

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._pending) + sum(len(g) for g in self._groups.values())
