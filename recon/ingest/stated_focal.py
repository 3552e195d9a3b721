"""The focal length an input's metadata states: a photo's EXIF, a phone video's QuickTime tag.

Cameras and phones write the lens's focal length into the files they save. Photos: two EXIF tags
give it in pixels without a database of sensor sizes:

- ``FocalLengthIn35mmFilm``: the focal length a 36 x 24 mm frame would need for the same angle of
  view across the diagonal, so f_px = f_35 / 43.27 mm * the image diagonal in pixels. Phones write
  it; it is a whole number of millimetres, so it is good to a few percent.
- ``FocalLength`` with ``FocalPlaneXResolution`` / ``FocalPlaneResolutionUnit``: millimetres times
  the sensor's pixels per millimetre, scaled by the stored width over ``PixelXDimension`` when the
  file was resized after capture. Cameras with interchangeable lenses write it.

Videos: iPhones write ``com.apple.quicktime.camera.focal_length.35mm_equivalent`` into the movie's
metadata (FFmpeg lists it among the container's tags), converted like the EXIF 35 mm equivalent
across the displayed frame's diagonal.

Any of them is a starting point and a prior for self-calibration (``recon.default.calibration``), never
known intrinsics: a crop after capture, digital zoom, a video's stabilisation crop or a lens adapter makes it wrong, and nothing in
the file says so. Values outside a plausible range (a field of view of roughly 5 to 160 degrees)
are treated as absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

EXIF_IFD = 0x8769
FOCAL_LENGTH = 0x920A
FOCAL_PLANE_X_RESOLUTION = 0xA20E
FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
FOCAL_LENGTH_35MM = 0xA405
PIXEL_X_DIMENSION = 0xA002
QUICKTIME_FOCAL_35MM = "com.apple.quicktime.camera.focal_length.35mm_equivalent"
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # ResolutionUnit: inch, cm, mm, micrometre
MIN_FOCAL_REL, MAX_FOCAL_REL = 0.1, 6.0  # focal over the longest side: FOV ~ 160 to ~ 10 degrees


@dataclass(frozen=True)
class StatedFocal:
    """A stated focal length: ``focal_px`` in pixels of the image (either orientation: pixels are
    square), and the tag it came from."""

    focal_px: float
    tag: str  # "FocalLengthIn35mmFilm" | "FocalLength+FocalPlaneXResolution" | QUICKTIME_FOCAL_35MM


def exif_focal(path: str | Path) -> StatedFocal | None:
    """The focal length ``path``'s EXIF states, or None (no EXIF, no usable tag, an implausible
    value, or a file Pillow cannot open). Reads the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size = image.size
            exif = image.getexif().get_ifd(EXIF_IFD)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return focal_from_tags(exif, size)


def focal_from_tags(exif: dict, size: tuple[int, int]) -> StatedFocal | None:
    """The focal length in pixels of a ``size`` (W, H) stored image from its EXIF sub-IFD tags."""
    W = size[0]
    candidates = [_equivalent(exif.get(FOCAL_LENGTH_35MM), size, "FocalLengthIn35mmFilm")]
    f_mm = _number(exif.get(FOCAL_LENGTH))
    per_unit = _number(exif.get(FOCAL_PLANE_X_RESOLUTION))
    mm = MM_PER_UNIT.get(int(_number(exif.get(FOCAL_PLANE_RESOLUTION_UNIT)) or 2))
    if f_mm and per_unit and mm:
        stored_over_sensor = W / (_number(exif.get(PIXEL_X_DIMENSION)) or W)
        candidates.append(_plausible(StatedFocal(f_mm * per_unit / mm * stored_over_sensor,
                                                 "FocalLength+FocalPlaneXResolution"), size))
    return next((c for c in candidates if c is not None), None)


def quicktime_focal(metadata: dict, size: tuple[int, int]) -> StatedFocal | None:
    """The focal length in pixels of the ``size`` (W, H) displayed frames of a movie whose container
    tags (``av.container.metadata``) are ``metadata``, or None."""
    return _equivalent(metadata.get(QUICKTIME_FOCAL_35MM), size, QUICKTIME_FOCAL_35MM)


def _equivalent(f35: object, size: tuple[int, int], tag: str) -> StatedFocal | None:
    """A 35 mm equivalent focal length in pixels of a ``size`` image (across the diagonal)."""
    f35 = _number(f35)
    return _plausible(StatedFocal(f35 / FULL_FRAME_DIAGONAL_MM * math.hypot(*size), tag), size) if f35 else None


def _plausible(stated: StatedFocal, size: tuple[int, int]) -> StatedFocal | None:
    longest = max(size)
    return stated if longest > 0 and MIN_FOCAL_REL <= stated.focal_px / longest <= MAX_FOCAL_REL else None


def _number(value: object) -> float | None:
    """A positive finite float from a tag's value (int, float, rational or text), else None."""
    try:
        number = float(value)  # Pillow's IFDRational converts; zero denominators give nan
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None
