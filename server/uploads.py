"""Uploads: streamed to disk in chunks, made durable, and probed with PyAV.

The file name a client sends is only checked and recorded; the stored file has
a fixed, server-chosen name (``upload.<ext>``, the extension from the probed
container), so no user string ever becomes a path.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import AsyncIterator

import av
from starlette.concurrency import run_in_threadpool

from server.errors import ApiError
from server.settings import DEFAULT_MAX_PIXELS

PART_NAME = "upload.part"  # while streaming; renamed once probed and durable
# Container (PyAV format name) -> extension of the stored file. Anything else
# PyAV can open is stored as ".video" (ffmpeg probes content, not names).
_CONTAINER_EXT = {"mov": "mp4", "mp4": "mp4", "matroska": "mkv", "webm": "mkv", "avi": "avi",
                  "mpegts": "ts", "mpeg": "mpg", "flv": "flv", "ogg": "ogv"}
_ALLOWED_TYPES = ("application/octet-stream",)
_MAX_FILENAME = 255
_BAD_FILENAME = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class VideoProbe:
    """What opening the upload with PyAV found."""

    container: str  # PyAV format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # e.g. "h264"
    width: int
    height: int
    frames: int  # video packets actually present in the file
    declared_frames: int  # frame count the container header claims (0 = unknown)
    fps: float | None
    duration_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class UploadError(ApiError):
    pass


def check_content_type(content_type: str | None) -> None:
    """Raw video bodies only: ``video/*`` or ``application/octet-stream``."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if not (base.startswith("video/") or base in _ALLOWED_TYPES):
        shown = content_type or "none"
        raise UploadError(
            415, "unsupported_media_type",
            f"upload Content-Type {shown!r} is not accepted: send the raw video bytes as "
            "video/* (e.g. video/mp4) or application/octet-stream",
        )


def check_filename(name: str | None) -> str | None:
    """The client's file name, for the record only. Refuses path components."""
    if name is None:
        return None
    if not name or len(name) > _MAX_FILENAME:
        raise UploadError(400, "bad_filename", f"filename must be 1..{_MAX_FILENAME} characters")
    if _BAD_FILENAME.search(name) or name in (".", "..") or ".." in name.split("."):
        raise UploadError(
            400, "bad_filename",
            f"filename {name!r} has path components or control characters: send a bare file name",
        )
    return name


def check_declared_length(content_length: str | None, max_bytes: int) -> None:
    """Refuse early when Content-Length already says the body is empty or too big."""
    if content_length is None:
        return
    try:
        n = int(content_length)
    except ValueError:
        raise UploadError(400, "bad_content_length", f"Content-Length {content_length!r} is not an integer") from None
    if n == 0:
        raise UploadError(400, "empty_body", "the upload body is empty: send the video bytes")
    if n > max_bytes:
        raise UploadError(413, "upload_too_large", f"upload of {n} bytes exceeds the limit of {max_bytes} bytes")


async def stream_to_disk(chunks: AsyncIterator[bytes], dest: Path, max_bytes: int) -> int:
    """Write ``chunks`` to ``dest`` as they arrive, never holding the whole body.

    Stops (and deletes ``dest``) as soon as ``max_bytes`` is exceeded or the body
    turns out empty. The file is flushed and fsynced before returning.
    Returns the number of bytes written.
    """
    written = 0
    try:
        with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            async for chunk in chunks:
                if not chunk:
                    continue
                written += len(chunk)
                if written > max_bytes:
                    raise UploadError(
                        413, "upload_too_large", f"upload exceeds the limit of {max_bytes} bytes"
                    )
                f.write(chunk)
            if written == 0:
                raise UploadError(400, "empty_body", "the upload body is empty: send the video bytes")
            f.flush()
            await run_in_threadpool(os.fsync, f.fileno())  # seconds for big files: off the event loop
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written


def _ffmpeg_message(exc: Exception, path: Path) -> str:
    """FFmpeg's message without the server path it names (the client knows the file as the upload)."""
    return str(exc).replace(f"'{path}'", "the upload").replace(str(path), "the upload")


def probe_video(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoProbe:
    """Open ``path`` with PyAV, decode its first frame and walk every packet.

    Raises UploadError(422) for a file that is not a video, has no video
    stream, cannot be decoded, or is shorter than its header says (truncated),
    and UploadError(413) when its header declares frames of more than
    ``max_pixels`` pixels (checked before any frame is decoded).
    """
    # FFmpeg's own pixel limit: opening a file decodes a frame to learn its size, and a
    # few-kB image can declare gigabytes of pixels. Beyond the limit the size stays 0.
    limit = {"max_pixels": str(max_pixels)}
    try:
        container = av.open(str(path), options=limit)
    except av.FFmpegError as exc:
        raise UploadError(422, "not_a_video", f"the upload is not a readable video: {_ffmpeg_message(exc, path)}") \
            from None
    try:
        if not container.streams.video:
            raise UploadError(422, "no_video_stream", "the upload has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.options = limit
        declared_w, declared_h = stream.codec_context.width, stream.codec_context.height
        if declared_w * declared_h > max_pixels or not declared_w * declared_h:
            size = f"{declared_w}x{declared_h} = {declared_w * declared_h} pixels" if declared_w * declared_h \
                else "of a size that could not be read within that limit"
            raise UploadError(413, "frames_too_large",
                              f"the server accepts frames of at most {max_pixels} pixels (stream4d serve "
                              f"--max-pixels); the upload's frames are {size}")
        fmt = container.format.name
        codec = stream.codec_context.name
        declared = int(stream.frames or 0)
        rate = stream.average_rate
        duration = float(container.duration) / av.time_base if container.duration else None
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise UploadError(422, "corrupt_video", "the upload's first frame cannot be decoded: "
                                                    f"{_ffmpeg_message(exc, path)}") from None
        if first is None:
            raise UploadError(422, "corrupt_video", "the upload has a video stream with no decodable frame")
        width, height = int(first.width), int(first.height)
        if width * height > max_pixels:  # a header that did not say (0x0) or lied
            raise UploadError(413, "frames_too_large", f"the upload's frames are {width}x{height} pixels; "
                                                       f"the server accepts at most {max_pixels}")
        container.seek(0)
        packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
        except av.FFmpegError as exc:
            raise UploadError(422, "corrupt_video", f"the upload is corrupt after {packets} packets: "
                                                    f"{_ffmpeg_message(exc, path)}") from None
        if declared and packets < declared:
            raise UploadError(
                422, "truncated_video",
                f"the upload is truncated: its header declares {declared} frames but only {packets} are present",
            )
    finally:
        container.close()
    return VideoProbe(
        container=fmt, codec=codec, width=width, height=height, frames=packets,
        declared_frames=declared, fps=float(rate) if rate else None, duration_s=duration,
    )


def stored_name(probe: VideoProbe) -> str:
    """Fixed, server-chosen file name of an accepted upload."""
    for name in probe.container.split(","):
        if name in _CONTAINER_EXT:
            return f"upload.{_CONTAINER_EXT[name]}"
    return "upload.video"


def commit(part: Path, final: Path) -> None:
    """Atomically rename ``part`` to ``final`` and fsync the directory, so both
    the file's data and its name survive a crash."""
    os.replace(part, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
