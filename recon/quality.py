"""Frames no window model can use: black (lens cap, cut to black) and motion-blurred ones.

Blur is judged against the stream's own recent sharpness, not an absolute
threshold, so a soft but steady camera is not rejected wholesale.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from stream4d.contracts import Frame


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of a grey thumbnail (higher is sharper)."""
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = 256.0 / max(g.shape)
    if scale < 1:
        g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


def channel_mean_stats(image: np.ndarray) -> tuple[float, float]:
    """(mean, std) over the pixels of the channels' mean of uint8 ``image`` [H, W, 3]: those of
    ``image.mean(axis=2)``, from the exact integer channel sums (a tenth of its time: it runs on
    every frame of a live stream)."""
    total = np.add(np.add(image[..., 0], image[..., 1], dtype=np.uint16), image[..., 2], dtype=np.uint16)
    mean, std = cv2.meanStdDev(total)
    return float(mean[0, 0]) / 3.0, float(std[0, 0]) / 3.0


class FrameQualityFilter:
    """Decides per frame whether to keep it; returns the reason when not."""

    def __init__(self, black_level: float = 10.0, min_contrast: float = 4.0,
                 blur_ratio: float = 0.25, history: int = 30):
        self.black_level = black_level  # mean grey level (0-255) below which a frame is black
        self.min_contrast = min_contrast  # grey std below which a frame is blank (uniform)
        self.blur_ratio = blur_ratio  # sharper than this fraction of the recent median, or blurred
        self._recent: deque[float] = deque(maxlen=history)

    def check(self, frame: Frame) -> str | None:
        """None when the frame is usable, else "black", "blank" or "blurred"."""
        mean, std = channel_mean_stats(frame.image)
        if mean < self.black_level:
            return "black"
        if std < self.min_contrast:
            return "blank"
        s = sharpness(frame.image)
        blurred = len(self._recent) >= 5 and s < self.blur_ratio * float(np.median(self._recent))
        self._recent.append(s)
        return "blurred" if blurred else None
