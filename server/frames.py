"""Live frame messages: ``<float64 little-endian timestamp (s)><JPEG or PNG bytes>``."""

from __future__ import annotations

import math
import struct

import cv2
import numpy as np

from server.settings import DEFAULT_MAX_PIXELS

_HEADER = struct.Struct("<d")
_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 8192


class FrameMessageError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_frame(image_bytes: bytes, timestamp: float) -> bytes:
    """The message a client sends for one encoded image (used by clients and tests)."""
    return _HEADER.pack(timestamp) + image_bytes


def decode_frame(message: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[float, np.ndarray]:
    """(timestamp, RGB uint8 [H, W, 3]) of a frame message; FrameMessageError if malformed
    or larger than ``max_pixels`` (width x height, read from the image header)."""
    if len(message) <= _HEADER.size:
        raise FrameMessageError(
            "bad_frame", f"a frame message is 8 bytes of float64 timestamp then the image; got {len(message)} bytes")
    (timestamp,) = _HEADER.unpack_from(message)
    if not math.isfinite(timestamp) or timestamp < 0:
        raise FrameMessageError("bad_timestamp", f"timestamp must be a finite number of seconds >= 0, got {timestamp}")
    data = bytes(memoryview(message)[_HEADER.size:])
    size = image_size(data)
    if size is None:
        raise FrameMessageError("bad_image", "the image must be a JPEG or PNG with a readable header")
    # Checked before decoding, so a tiny message cannot make us allocate a huge image.
    if max(size) > MAX_SIDE or min(size) < 1:
        raise FrameMessageError("bad_image_size", f"image is {size[0]}x{size[1]}; sides must be 1..{MAX_SIDE} px")
    if size[0] * size[1] > max_pixels:
        raise FrameMessageError("bad_image_size", f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels; "
                                                  f"the server accepts at most {max_pixels} (--max-pixels)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameMessageError("bad_image", "the JPEG/PNG image could not be decoded (corrupt or truncated)")
    return float(timestamp), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: no second full-size copy


def image_size(data: bytes) -> tuple[int, int] | None:
    """(W, H) from a PNG or JPEG header without decoding; None if neither."""
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return struct.unpack(">II", data[16:24])
    if not data.startswith(_JPEG):
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None
