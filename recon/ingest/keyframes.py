"""Keyframe selection: drop frames that barely differ from the last kept one."""

from __future__ import annotations

import cv2
import numpy as np

THUMB_SIDE = 64  # longest side of the grey thumbnail the motion is measured on


def grey_thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """float32 [h, w] grey thumbnail of an RGB uint8 [H, W, 3] image, longest side ``side``."""
    H, W = image.shape[:2]
    s = min(1.0, side / max(H, W))
    small = cv2.resize(image, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


class KeyframeSelector:
    """Keeps a frame when its thumbnail moved enough since the last kept frame.

    Motion is the mean absolute difference of 64-px grey thumbnails as a
    fraction of 255: cheap (one tiny resize per frame), blind to encoder and
    sensor noise (averaged away by the thumbnail) and monotone in camera
    motion for a given scene. The first frame is always kept.
    """

    def __init__(self, min_motion: float) -> None:
        self.min_motion = float(min_motion)
        self._last: np.ndarray | None = None  # [h, w] thumbnail of the last kept frame

    def motion(self, image: np.ndarray) -> float:
        """Motion of ``image`` [H, W, 3] relative to the last kept frame (inf before any)."""
        if self._last is None:
            return float("inf")
        return _mad(grey_thumbnail(image), self._last)

    def keep(self, image: np.ndarray) -> bool:
        """Decide on ``image`` [H, W, 3]; remembers it when kept."""
        thumb = grey_thumbnail(image)
        if self._last is not None and _mad(thumb, self._last) < self.min_motion:
            return False
        self._last = thumb
        return True

    def reset(self) -> None:
        self._last = None


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:  # frames of a folder may differ in size
        a = cv2.resize(a, (b.shape[1], b.shape[0]), interpolation=cv2.INTER_AREA)
    return float(np.abs(a - b).mean()) / 255.0
