"""FrameSource: what every source is, and the selection / shaping they share.

A source only has to produce ``RawFrame``s in input order; the base class
applies stride, target_fps, keyframes, max_frames and resize (in that order)
and builds the ``Frame``s. Pixels are loaded only for frames that pass the
stride / fps selection, and nothing is kept beyond the current frame, so
memory stays bounded whatever the length of the input.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from recon.ingest.errors import IngestError
from recon.ingest.keyframes import KeyframeSelector
from recon.ingest.options import IngestOptions
from recon.ingest.transforms import Resizer
from stream4d.contracts import Frame
from stream4d.geometry import centred_intrinsics


class GivenIntrinsics:
    """The intrinsics a user gave for an input that lists none (``IngestOptions.intrinsics`` /
    ``fov_deg``), as K [3, 3] in pixels of each input frame."""

    def __init__(self, intrinsics: tuple[float, float, float, float] | None, fov_deg: float | None):
        self.intrinsics, self.fov_deg = intrinsics, fov_deg
        self.size: tuple[int, int] | None = None  # the frame size ``intrinsics`` hold for: the first frame's

    def of(self, size: tuple[int, int], name: str) -> np.ndarray | None:
        W, H = size
        if self.fov_deg is not None:
            return centred_intrinsics(W, H, max(W, H) / 2.0 / math.tan(math.radians(self.fov_deg) / 2.0))
        if self.intrinsics is None:
            return None
        self.size = self.size or (W, H)
        if (W, H) != self.size:
            raise IngestError(name, "bad_option",
                              f"a {W}x{H} frame, but the intrinsics given hold for {self.size[0]}x{self.size[1]} "
                              "frames (give fov_deg for an input of mixed sizes)")
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass
class SourceInfo:
    """What is known about an input before reading it through."""

    kind: str  # "video" | "images" | "dataset" | "camera" | "push"
    name: str  # file / folder name, camera or stream name
    fps: float | None  # nominal frame rate, None when unknown
    frame_count: int | None  # frames in the input before selection, None when unknown
    size: tuple[int, int] | None  # (W, H) of the input images (displayed orientation)


@dataclass
class SourceStats:
    """Counters of one pass over a source."""

    decoded: int = 0  # frames the input produced (read or decoded)
    yielded: int = 0
    skipped_stride: int = 0  # dropped by stride or target_fps
    skipped_keyframe: int = 0
    dropped: int = 0  # live sources: frames lost because the consumer was slower
    errors: list[str] = field(default_factory=list)


@dataclass
class RawFrame:
    """One frame of an input before selection; pixels are loaded on demand."""

    number: int  # 0-based position in the input (decode order of the source)
    timestamp: float  # seconds since the first frame
    name: str  # becomes Frame.source
    load: Callable[[], np.ndarray]  # -> uint8 [H, W, 3] RGB in input pixels
    K: np.ndarray | None = None  # [3, 3] known intrinsics in input pixels
    arrived: float | None = None  # time.monotonic() a live source received it (None: when decoded)
    # the focal length the file states (EXIF, QuickTime), px of the input image; asked only when K is unknown
    stated_focal: Callable[[], float | None] | None = None


class FrameSource(ABC):
    """A context manager and iterator of ``Frame``s.

    File sources (videos from a path, image folders, datasets) can be iterated
    again from the start, each pass resetting ``stats``; streams, cameras and
    push sources are single pass.
    """

    restartable = False

    def __init__(self, info: SourceInfo, options: IngestOptions | None = None) -> None:
        self.info = info
        self.options = options or IngestOptions()
        self.stats = SourceStats()
        self._passes = 0
        self._active: Iterator[Frame] | None = None
        self._closed = False

    @abstractmethod
    def _raw_frames(self) -> Iterator[RawFrame]:
        """Frames of the input in order; raises IngestError when the input breaks."""

    def _release(self) -> None:  # noqa: B027 - optional: most sources hold nothing to free
        """Free what the source holds (file handles, threads, devices)."""

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise IngestError(self.info.name, "closed", "source is closed")
        if self._passes and not self.restartable:
            raise IngestError(self.info.name, "consumed", f"a {self.info.kind} source can be read only once")
        if self._passes:
            self.stats = SourceStats()
        self._passes += 1
        self._active = self._frames()
        return self._active

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and free resources; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        active = self._active
        if active is not None and not getattr(active, "gi_running", False):
            active.close()  # runs the generators' cleanup (closes containers)
        self._release()

    def _frames(self) -> Iterator[Frame]:
        opts = self.options
        stats = self.stats
        resizer = Resizer(opts.resize)
        keyframes = KeyframeSelector(opts.keyframe_min_motion) if opts.keyframes else None
        given = GivenIntrinsics(opts.intrinsics, opts.fov_deg)
        last_slot = -math.inf  # target_fps: index of the last time slot a frame was kept in
        seen = 0
        index = 0
        raw_frames = self._raw_frames()
        try:
            for raw in raw_frames:
                stats.decoded += 1
                seen += 1
                if (seen - 1) % opts.stride:
                    stats.skipped_stride += 1
                    continue
                if opts.target_fps is not None:
                    # Slots of 1/target_fps s; a small epsilon keeps exact multiples in their slot.
                    slot = math.floor(raw.timestamp * opts.target_fps + 1e-6)
                    if slot <= last_slot:
                        stats.skipped_stride += 1
                        continue
                    last_slot = slot
                arrived = raw.arrived if raw.arrived is not None else time.monotonic()
                image = raw.load()
                if keyframes is not None and not keyframes.keep(image):
                    stats.skipped_keyframe += 1
                    continue
                input_size = (image.shape[1], image.shape[0])
                plan = resizer.plan(input_size)
                pixel_map = plan.pixel_map
                K = raw.K if raw.K is not None else given.of(input_size, raw.name)
                stated = raw.stated_focal() if K is None and opts.metadata_focal and raw.stated_focal else None
                yield Frame(
                    index=index,
                    timestamp=float(raw.timestamp),
                    image=plan.apply(image),
                    source=raw.name,
                    K=None if K is None else pixel_map @ K,
                    focal_hint=None if stated is None else stated * _pixel_scale(pixel_map),
                    input_size=input_size,
                    pixel_map=pixel_map,
                    arrived=arrived,
                )
                index += 1
                stats.yielded += 1
                if opts.max_frames is not None and index >= opts.max_frames:
                    return
        except IngestError as err:
            stats.errors.append(str(err))
            raise
        finally:
            close = getattr(raw_frames, "close", None)
            if close is not None:
                close()


def _pixel_scale(pixel_map: np.ndarray) -> float:
    """How many output pixels one input pixel spans (the geometric mean of the two axes)."""
    return float(np.sqrt(abs(np.linalg.det(pixel_map[:2, :2]))))
