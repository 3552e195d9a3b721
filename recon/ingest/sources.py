"""``open_source``: one entry point from whatever the user gave to a FrameSource."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import BinaryIO

from recon.ingest.base import FrameSource
from recon.ingest.camera import CameraSource, public_url
from recon.ingest.dataset import CAMERAS_FILE, dataset_source
from recon.ingest.errors import IngestError
from recon.ingest.images import image_folder_source, is_image_file, single_image_source
from recon.ingest.options import IngestOptions
from recon.ingest.video import VideoSource, video_name

SourceSpec = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | int

_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt)://", re.IGNORECASE)
_CAMERA = re.compile(r"^camera:(\d+)$", re.IGNORECASE)
# http(s) URLs of files (not live feeds) are read through PyAV like local videos.
_VIDEO_FILE_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".ts", ".mpg", ".mpeg")


def open_source(spec: SourceSpec, options: IngestOptions | None = None, *, name: str | None = None) -> FrameSource:
    """Open an input as a FrameSource.

    ``spec`` is one of:
    - a path: a video file (anything FFmpeg decodes), a folder of images, a
      dataset folder holding ``cameras.json``, a dataset's ``*.json`` camera
      file (e.g. ``cameras_images_8.json``), or a single image;
    - ``bytes`` or a readable binary file object: a video byte stream;
    - an int or ``"camera:<i>"``: an OpenCV camera device;
    - a URL: ``rtsp://``, ``rtmp://``, ``udp://``... and ``http(s)://`` live
      feeds are cameras; ``http(s)://`` URLs of video files are videos.

    ``name`` overrides the source name (``Frame.source`` prefix for videos and
    cameras). Bad inputs raise ``IngestError`` here, before any iteration.
    """
    opts = options or IngestOptions()
    if isinstance(spec, bool):
        raise IngestError(repr(spec), "unsupported", "not an input (a bool)")
    if isinstance(spec, int):
        return CameraSource(spec, opts)
    if isinstance(spec, (bytes, bytearray, memoryview)):
        label = name or "stream"
        if len(spec) == 0:
            raise IngestError(label, "empty_file", "the byte stream is empty")
        return VideoSource(io.BytesIO(bytes(spec)), label, opts)
    if hasattr(spec, "read"):
        label = name or video_name(getattr(spec, "name", "") or "stream")
        return VideoSource(spec, label, opts)
    if not isinstance(spec, (str, os.PathLike)):
        raise IngestError(repr(spec)[:80], "unsupported",
                          f"cannot read a {type(spec).__name__}: give a path, URL, camera index or bytes")
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    camera = _CAMERA.match(text.strip())
    if camera:
        return CameraSource(int(camera.group(1)), opts)
    if _URL.match(text):
        is_file_url = text.lower().startswith(("http://", "https://")) and \
            text.split("?")[0].lower().endswith(_VIDEO_FILE_SUFFIXES)
        if is_file_url:
            return VideoSource(text, name or public_url(text).rsplit("/", 1)[-1], opts, is_url=True)
        return CameraSource(text, opts)
    if text.startswith("/dev/video"):
        return CameraSource(text, opts)
    return _open_path(Path(text), opts, name)


def _open_path(path: Path, opts: IngestOptions, name: str | None) -> FrameSource:
    if not path.exists():
        raise IngestError(str(path), "missing", "no such file or folder")
    if path.is_dir():
        cameras = path / CAMERAS_FILE
        if cameras.is_file():
            return dataset_source(cameras, opts)
        return image_folder_source(path, opts)
    if path.suffix.lower() == ".json":
        return dataset_source(path, opts)
    if is_image_file(path):
        return single_image_source(path, opts)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise IngestError(str(path), "missing", f"cannot stat ({exc.strerror})") from exc
    if size == 0:
        raise IngestError(str(path), "empty_file", "the file is empty")
    return VideoSource(str(path), name or video_name(path), opts)
