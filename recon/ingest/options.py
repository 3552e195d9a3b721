"""What to take from a source and how to shape it: one dataclass, built once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from recon.ingest.errors import IngestError

# Mean absolute difference (fraction of 255) between 64-px grey thumbnails of a
# frame and the last kept frame. Measured on great_wall.mp4 (slow pan, 24 fps):
# consecutive frames differ by ~0.003, frames 4 apart by ~0.009, so 0.01 keeps
# about 6 frames per second of such footage, while re-encoded duplicates
# (~0.0005) and sensor noise of a still camera stay far below it.
DEFAULT_KEYFRAME_MIN_MOTION = 0.01

# Largest frame (width x height, from the stream header) a video source decodes at all: one RGB
# frame of this size is 192 MiB, and a few-kB file can declare far more. Services set a lower limit.
DEFAULT_MAX_PIXELS = 8192 * 8192

RESIZE_MODES = ("vggt",)
ORDER_MODES = ("auto", "given", "retrieval")  # see recon/ordering.py


@dataclass(frozen=True)
class IngestOptions:
    """Frame selection and shaping, applied in this order by every source.

    stride: keep every ``stride``-th frame the source produces (1 keeps all).
    target_fps: subsample by timestamps to at most this rate (None keeps all);
        frames dropped here are counted in ``stats.skipped_stride`` too.
    keyframes: skip near-duplicates of the last kept frame (see keyframes.py); skipped frames get
        no pose. A run's parallax keyframes, which pose every frame, are ``recon.keyframes``.
    keyframe_min_motion: motion a frame needs to be kept when ``keyframes``.
    max_frames: stop after yielding this many frames (None: no cap).
    resize: None (keep the input size), "vggt" (width 518, height the nearest
        multiple of 14 after scaling to that width, centre-cropped to 518 when
        taller: VGGT's "crop" preprocessing) or an int (longest side in pixels,
        aspect kept, sides rounded to even; never upscales).
    image_fps: frame rate of image folders / datasets; their timestamps are
        ``position / image_fps``, or the position itself when None.
    live_capacity: frames buffered from a live camera before the oldest drop.
    timeout: seconds to wait for a camera or network stream to open or to
        deliver a frame before giving up with ``IngestError``.
    max_pixels: a video or network stream whose frames are larger (width x
        height, read from its header before anything is decoded) is refused.
    order: the order frames reach the windows in (applied by the run, not by
        the sources; recon/ordering.py): "given" keeps the input's order,
        "retrieval" orders a finite input so consecutive frames overlap, "auto"
        does so only for a collection whose given order overlaps far worse, or a
        short video whose consecutive frames do not overlap; never live inputs.
    intrinsics: (fx, fy, cx, cy) in pixels of the input's frames, for an input that lists none (a
        video, a camera, an image folder): its frames are then posed with these instead of
        self-calibrating. All frames must have the size they were given for (the first frame's).
    fov_deg: the same as a field of view in degrees across the frames' longest side, principal
        point at the centre: fits any frame size (square pixels). At most one of the two.
    metadata_focal: an input without listed intrinsics passes the focal length its metadata states
        (a photo's EXIF, an iPhone video's QuickTime tag: ``recon/ingest/stated_focal.py``) on as
        ``Frame.focal_hint``, the starting point and prior of self-calibration; False ignores it (a
        crop or a digital zoom made it wrong).
    """

    stride: int = 1
    target_fps: float | None = None
    max_frames: int | None = None
    resize: str | int | None = None
    keyframes: bool = False
    keyframe_min_motion: float = DEFAULT_KEYFRAME_MIN_MOTION
    image_fps: float | None = None
    live_capacity: int = 64
    timeout: float = 5.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    order: str = "auto"
    intrinsics: tuple[float, float, float, float] | None = None
    fov_deg: float | None = None
    metadata_focal: bool = True

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> IngestError:
            return IngestError("IngestOptions", "bad_option", f"{field}={getattr(self, field)!r}: {why}")

        if not _is_int(self.stride) or self.stride < 1:
            raise bad("stride", "must be an integer >= 1")
        if self.target_fps is not None and not (_is_number(self.target_fps) and self.target_fps > 0):
            raise bad("target_fps", "must be None or a number > 0")
        if self.max_frames is not None and (not _is_int(self.max_frames) or self.max_frames < 1):
            raise bad("max_frames", "must be None or an integer >= 1")
        if isinstance(self.resize, str):
            if self.resize not in RESIZE_MODES:
                raise bad("resize", f"must be None, an int or one of {RESIZE_MODES}")
        elif self.resize is not None and (not _is_int(self.resize) or self.resize < 16):
            raise bad("resize", "an int resize is the longest side in pixels and must be >= 16")
        if not _is_number(self.keyframe_min_motion) or not 0 <= self.keyframe_min_motion <= 1:
            raise bad("keyframe_min_motion", "must be a number in [0, 1]")
        if self.image_fps is not None and not (_is_number(self.image_fps) and self.image_fps > 0):
            raise bad("image_fps", "must be None or a number > 0")
        if not _is_int(self.live_capacity) or self.live_capacity < 1:
            raise bad("live_capacity", "must be an integer >= 1")
        if not _is_number(self.timeout) or self.timeout <= 0:
            raise bad("timeout", "must be a number of seconds > 0")
        if not _is_int(self.max_pixels) or self.max_pixels < 1:
            raise bad("max_pixels", "must be an integer >= 1")
        if self.order not in ORDER_MODES:
            raise bad("order", f"must be one of {ORDER_MODES}")
        if self.intrinsics is not None:
            values = self.intrinsics
            if not isinstance(values, (list, tuple)) or len(values) != 4 or not all(map(_is_number, values)) \
                    or not all(math.isfinite(v) for v in values) or min(values[:2]) <= 0:
                raise bad("intrinsics", "must be None or four finite numbers fx, fy, cx, cy (pixels) with fx, fy > 0")
            object.__setattr__(self, "intrinsics", tuple(float(v) for v in values))
        if self.fov_deg is not None and not (_is_number(self.fov_deg) and 1 <= self.fov_deg <= 179):
            raise bad("fov_deg", "must be None or a field of view in degrees in [1, 179]")
        if self.intrinsics is not None and self.fov_deg is not None:
            raise bad("fov_deg", "give intrinsics or fov_deg, not both")


def parse_resize(text: str | None) -> str | int | None:
    """CLI / request form of ``IngestOptions.resize``: "", "none", "vggt" or an int."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    text = text.strip().lower()
    if text in RESIZE_MODES:
        return text
    try:
        return int(text)
    except ValueError:
        raise IngestError("resize", "bad_option",
                          f"{text!r} is not 'none', one of {RESIZE_MODES} or a max side in pixels") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
