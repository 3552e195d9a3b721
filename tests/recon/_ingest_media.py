"""Small real media files for the ingest tests, written with PyAV / OpenCV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from stream4d.testdata import SHARED_DATA

VIDEOS = SHARED_DATA / "videos"
DATA = SHARED_DATA


def textured_frame(seed: int, width: int = 96, height: int = 64) -> np.ndarray:
    """uint8 [H, W, 3] smooth random texture (survives lossy coding, differs per seed)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    big = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:height, :width]
    return big.astype(np.uint8)


def write_video(path: Path, frames: Sequence[np.ndarray], pts_ms: Sequence[int] | None = None,
                fps: int = 10, rotation: float | None = None, codec: str = "libx264") -> Path:
    """Encode RGB frames; ``pts_ms`` sets explicit presentation times (variable frame rate)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms is not None:
                frame.pts = int(pts_ms[i])
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
