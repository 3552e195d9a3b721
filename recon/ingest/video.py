"""Video files, byte streams and network video URLs, decoded with PyAV (FFmpeg).

Timestamps are the frames' presentation times (pts x time_base) relative to
the first frame, so variable-frame-rate video keeps its true timing. Rotation
metadata (the display matrix FFmpeg attaches to every frame) is applied to
the pixels, so frames come out the way players show them; ``info.size`` and
``Frame.input_size`` are the displayed (rotated) size.
"""

from __future__ import annotations

import os
from fractions import Fraction
from itertools import chain
from typing import BinaryIO, Iterator

import av
import numpy as np

from recon.ingest.base import FrameSource, RawFrame, SourceInfo
from recon.ingest.errors import IngestError
from recon.ingest.options import DEFAULT_MAX_PIXELS, IngestOptions
from recon.ingest.stated_focal import quicktime_focal

VideoTarget = str | BinaryIO  # a path, a URL or a readable binary file object


class _Broken(Exception):
    """The demuxer or decoder failed part-way; carries FFmpeg's message."""


class VideoSource(FrameSource):
    """Frames of the first video stream of a container; ``Frame.source`` is ``"<name>#<n>"``."""

    def __init__(self, target: VideoTarget, name: str, options: IngestOptions | None = None,
                 *, is_url: bool = False) -> None:
        self._target = target
        self._is_url = is_url
        self.restartable = isinstance(target, str)
        super().__init__(SourceInfo("video", name, None, None, None), options)
        # Open and decode the first frame now: a bad input fails at open time,
        # and the rotation (hence the displayed size) is only known from a frame.
        self._pending = self._open()
        _, stream, first, _ = self._pending
        self._rotation = _rotation(first, stream)
        w, h = first.width, first.height
        rate = stream.average_rate or stream.guessed_rate
        self.info.fps = float(rate) if rate else None
        self.info.frame_count = int(stream.frames) or None
        self.info.size = (h, w) if self._rotation % 180 else (w, h)
        self._stated = quicktime_focal(dict(self._pending[0].metadata), self.info.size)

    def _open(self):
        name = self.info.name
        # FFmpeg's own pixel limit, so that probing cannot decode a frame above it either.
        limit = {"max_pixels": str(self.options.max_pixels)}
        try:
            if self._is_url:
                container = av.open(self._target, timeout=self.options.timeout, options=limit)
            else:
                container = av.open(self._target, options=limit)
        except av.FFmpegError as exc:
            if self._is_url:
                raise IngestError(name, "unreachable", f"cannot open the stream ({exc})") from exc
            raise IngestError(name, "not_video", f"not a video FFmpeg can read ({exc}){self._pipe_hint()}") from exc
        except (OSError, ValueError) as exc:
            raise IngestError(name, "not_video", f"not a readable video ({exc})") from exc
        try:
            if not container.streams.video:
                raise IngestError(name, "not_video", "the container has no video stream")
            stream = container.streams.video[0]
            stream.codec_context.options = limit
            check_frame_size(name, stream.codec_context.width, stream.codec_context.height, self.options.max_pixels)
            # Default (slice) threading: frame threading would hide decoder errors mid-stream.
            frames = _decode(container, stream)
            try:
                first = next(frames)
            except StopIteration:
                raise IngestError(name, "no_frames", "the video stream has no decodable frame") from None
            except _Broken as exc:
                hint = "" if stream.codec_context.width else f"; frames above {self.options.max_pixels} pixels are not decoded"
                raise IngestError(name, "corrupt", f"no frame could be decoded ({exc}){hint}{self._pipe_hint()}") \
                    from exc
        except BaseException:
            container.close()
            raise
        return container, stream, first, frames

    def _stated_px(self) -> float | None:
        return None if self._stated is None else self._stated.focal_px

    def _pipe_hint(self) -> str:
        seekable = getattr(self._target, "seekable", None)
        if isinstance(self._target, str) or seekable is None or _safe_call(seekable):
            return ""
        return ("; the byte stream is not seekable, so MP4/MOV files need their index ('moov') "
                "at the start (ffmpeg -movflags +faststart) or must be given as a file or bytes")

    def _raw_frames(self) -> Iterator[RawFrame]:
        container, stream, first, frames = self._pending or self._open()
        self._pending = None
        name = self.info.name
        rotation = self._rotation
        time_base = stream.time_base
        fps = self.info.fps
        t0 = first.pts
        duration = _duration(container, stream)  # read now: the container is closed at the end
        number = 0
        timestamp = 0.0
        try:
            for frame in chain([first], frames):
                if frame.pts is not None and t0 is not None and time_base is not None:
                    timestamp = float((frame.pts - t0) * Fraction(time_base))
                else:  # raw elementary streams carry no pts: fall back to the nominal rate
                    timestamp = number / fps if fps else float(number)
                yield RawFrame(number, timestamp, f"{name}#{number}",
                               load=lambda frame=frame: _to_rgb(frame, rotation), stated_focal=self._stated_px)
                number += 1
        except _Broken as exc:
            raise IngestError(name, "corrupt", f"decoding stopped after {number} frames "
                                               f"(last good frame at t={timestamp:.3f} s): {exc}") from exc
        finally:
            container.close()
        # Demuxers often end quietly at a cut: compare with what the header promised.
        expected = self.info.frame_count
        if expected and number < expected:
            message = (f"decoding stopped after {number} of {expected} frames "
                       f"(last good frame at t={timestamp:.3f} s)")
            if expected - number > max(1, expected // 100):
                raise IngestError(name, "corrupt", message + ": the file is truncated or damaged")
            self.stats.errors.append(f"{name}: {message}")  # a frame or two short: containers miscount
        elif not expected:
            interval = 1.0 / fps if fps else 0.0
            if duration is not None and duration - timestamp > max(0.5, 3 * interval):
                raise IngestError(name, "corrupt", f"decoding stopped after {number} frames at t={timestamp:.3f} s "
                                                   f"of a {duration:.3f} s video: the file is truncated or damaged")

    def _release(self) -> None:
        if self._pending is not None:
            self._pending[0].close()
            self._pending = None


def check_frame_size(name: str, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a stream whose header declares frames above ``max_pixels``, before decoding any."""
    if width and height and width * height > max_pixels:
        raise IngestError(name, "too_large", f"frames are {width}x{height} = {width * height} pixels; "
                                             f"the limit is {max_pixels}")


def _decode(container, stream) -> Iterator["av.VideoFrame"]:
    """Decoded frames in presentation order; raises _Broken after the last good frame."""
    try:
        for packet in container.demux(stream):
            yield from packet.decode()  # the final empty packet flushes the decoder
    except av.FFmpegError as exc:
        # Keep the frames the decoder still holds before reporting the break.
        try:
            yield from stream.codec_context.decode(None)
        except av.FFmpegError:
            pass
        raise _Broken(str(exc)) from exc


def _duration(container, stream) -> float | None:
    """Seconds of video the header announces, None when it does not say."""
    if stream.duration and stream.time_base:
        return float(stream.duration * Fraction(stream.time_base))
    if len(container.streams) == 1 and container.duration:  # other streams may outlast the video
        return container.duration / 1_000_000
    return None


def _rotation(frame, stream) -> int:
    """Counter-clockwise display rotation in degrees, a multiple of 90."""
    degrees = frame.rotation  # from the display matrix side data
    if not degrees:
        # Containers written by old muxers carry a clockwise "rotate" tag instead.
        try:
            degrees = -int(float(stream.metadata.get("rotate", 0)))
        except ValueError:
            degrees = 0
    return int(round(degrees / 90.0)) * 90 % 360


def _to_rgb(frame, rotation: int) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an av.VideoFrame, turned ``rotation`` degrees counter-clockwise."""
    image = frame.to_ndarray(format="rgb24")
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))  # rot90 turns counter-clockwise
    return image


def _safe_call(fn) -> bool:
    try:
        return bool(fn())
    except (OSError, ValueError):
        return False


def video_name(path: str | os.PathLike) -> str:
    return os.path.basename(os.fspath(path).rstrip("/")) or os.fspath(path)
