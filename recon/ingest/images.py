"""Image sequences: a folder of images, or the images a dataset lists.

Images are read one at a time, when their frame is taken (files skipped by
stride / target_fps are never read). Timestamps are the image's position in
the sequence divided by ``IngestOptions.image_fps``, or the position itself
(one "second" per image) when no rate is given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from recon.ingest.base import FrameSource, RawFrame, SourceInfo
from recon.ingest.errors import IngestError
from recon.ingest.options import IngestOptions
from recon.ingest.stated_focal import exif_focal

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jp2",
})


@dataclass(frozen=True)
class ImageEntry:
    """One image of a sequence."""

    path: Path
    name: str  # becomes Frame.source
    K: np.ndarray | None = None  # [3, 3] in pixels of the image
    size: tuple[int, int] | None = None  # (W, H) the dataset says the image has
    radial_k1: float = 0.0  # the lens the dataset states (``stream4d.geometry.radial_distorted`` of K)


class ImageSequenceSource(FrameSource):
    """Frames of a list of image files, in list order."""

    restartable = True

    def __init__(self, kind: str, name: str, entries: list[ImageEntry],
                 options: IngestOptions | None = None, size: tuple[int, int] | None = None) -> None:
        if not entries:
            raise IngestError(name, "empty_folder", "no images")
        opts = options or IngestOptions()
        super().__init__(SourceInfo(kind, name, opts.image_fps, len(entries), size), opts)
        self.entries = entries

    def _raw_frames(self) -> Iterator[RawFrame]:
        fps = self.options.image_fps
        for number, entry in enumerate(self.entries):
            yield RawFrame(number, number / fps if fps else float(number), entry.name,
                           load=lambda entry=entry: read_entry(entry), K=entry.K,
                           stated_focal=lambda entry=entry: _stated_focal(entry.path))


def image_folder_source(folder: Path, options: IngestOptions | None = None) -> ImageSequenceSource:
    """Every image directly in ``folder``, in natural order (img2 before img10)."""
    files = list_images(folder)
    if not files:
        subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = f" (sub-folders: {', '.join(subdirs[:5])})" if subdirs else ""
        raise IngestError(str(folder), "empty_folder", f"no image files in the folder{hint}")
    entries = [ImageEntry(p, p.name) for p in files]
    # The first image is read now: an unreadable folder fails at open, and info.size is known.
    first = read_image(files[0])
    return ImageSequenceSource("images", folder.name or str(folder), entries, options,
                               size=(first.shape[1], first.shape[0]))


def single_image_source(path: Path, options: IngestOptions | None = None) -> ImageSequenceSource:
    """One image file as a one-frame sequence."""
    first = read_image(path)
    return ImageSequenceSource("images", path.name, [ImageEntry(path, path.name)], options,
                               size=(first.shape[1], first.shape[0]))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (hidden files excluded), naturally sorted."""
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: "img2" < "img10"."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB (grey and 16-bit images converted, EXIF orientation applied)."""
    # imdecode of the bytes rather than imread: reports a missing file apart from a bad one.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise IngestError(str(path), "unreadable_image", f"cannot read the file ({exc.strerror})") from exc
    if data.size == 0:
        raise IngestError(str(path), "unreadable_image", "the file is empty")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise IngestError(str(path), "unreadable_image", "not an image OpenCV can decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _stated_focal(path: Path) -> float | None:
    stated = exif_focal(path)
    return None if stated is None else stated.focal_px


def read_entry(entry: ImageEntry) -> np.ndarray:
    """The image of ``entry``; one the dataset states a lens for comes undistorted to its K, which the
    window models take for a pinhole (pixels the lens never saw are black)."""
    image = read_image(entry.path)
    if entry.size is not None and (image.shape[1], image.shape[0]) != entry.size:
        raise IngestError(str(entry.path), "bad_dataset",
                          f"image is {image.shape[1]}x{image.shape[0]} but the dataset says "
                          f"{entry.size[0]}x{entry.size[1]} (its K would not match)")
    if entry.radial_k1 and entry.K is not None:
        image = cv2.undistort(image, entry.K, np.array([entry.radial_k1, 0.0, 0.0, 0.0]), None, entry.K)
    return image
