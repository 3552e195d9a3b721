"""Resize / crop of input images and the pixel map that goes with it.

Pixel centres sit at integer coordinates, so scaling an image by ``s`` maps
input pixel ``u`` to ``s * (u + 0.5) - 0.5`` (the convention cv2.resize
samples with), and a crop starting at column ``x0`` subtracts ``x0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recon.ingest.errors import IngestError

VGGT_WIDTH = 518  # VGGT's input width and maximum height
VGGT_PATCH = 14  # VGGT's patch size: the height must be a multiple of it


@dataclass(frozen=True)
class ResizePlan:
    """How one input size becomes the output: scale to ``scaled_size``, then crop."""

    input_size: tuple[int, int]  # (W, H) of the input image
    scaled_size: tuple[int, int]  # (W, H) after cv2.resize
    crop_origin: tuple[int, int]  # (x0, y0) of the crop in the scaled image
    output_size: tuple[int, int]  # (W, H) of the output image

    @property
    def is_identity(self) -> bool:
        return self.scaled_size == self.input_size and self.output_size == self.input_size

    @property
    def pixel_map(self) -> np.ndarray:
        """3x3 affine taking input pixel coordinates to output pixel coordinates."""
        sx = self.scaled_size[0] / self.input_size[0]
        sy = self.scaled_size[1] / self.input_size[1]
        x0, y0 = self.crop_origin
        return np.array([
            [sx, 0.0, 0.5 * sx - 0.5 - x0],
            [0.0, sy, 0.5 * sy - 0.5 - y0],
            [0.0, 0.0, 1.0],
        ])

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize and crop ``image`` [H, W, 3] (of ``input_size``) to [H', W', 3]."""
        if self.is_identity:
            return image
        if (image.shape[1], image.shape[0]) != self.input_size:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, plan is for "
                             f"{self.input_size[0]}x{self.input_size[1]}")
        out = image
        if self.scaled_size != self.input_size:
            out = cv2.resize(image, self.scaled_size, interpolation=_interpolation(self.input_size, self.scaled_size))
        x0, y0 = self.crop_origin
        w, h = self.output_size
        if (w, h) != self.scaled_size:
            out = np.ascontiguousarray(out[y0:y0 + h, x0:x0 + w])
        return out


def plan_resize(input_size: tuple[int, int], resize: str | int | None) -> ResizePlan:
    """The plan for ``IngestOptions.resize`` applied to an input of ``(W, H)``."""
    W, H = input_size
    if resize is None:
        return ResizePlan(input_size, input_size, (0, 0), input_size)
    if resize == "vggt":
        # Same arithmetic as VGGT's "crop" preprocessing (Python's round included)
        # so our images match what the model was trained on.
        new_h = round(H * (VGGT_WIDTH / W) / VGGT_PATCH) * VGGT_PATCH
        if new_h < VGGT_PATCH:
            raise IngestError(f"{W}x{H} image", "bad_option",
                              f"too wide for resize='vggt' (height would be {new_h} px)")
        scaled = (VGGT_WIDTH, new_h)
        out_h = min(new_h, VGGT_WIDTH)
        return ResizePlan(input_size, scaled, (0, (new_h - out_h) // 2), (VGGT_WIDTH, out_h))
    if isinstance(resize, int):
        if max(W, H) <= resize:
            return ResizePlan(input_size, input_size, (0, 0), input_size)
        s = resize / max(W, H)
        scaled = (_round_even(W * s), _round_even(H * s))
        return ResizePlan(input_size, scaled, (0, 0), scaled)
    raise IngestError("resize", "bad_option", f"unknown resize {resize!r}")


class Resizer:
    """Applies one ``resize`` option to frames of any size, caching a plan per size."""

    def __init__(self, resize: str | int | None) -> None:
        self.resize = resize
        self._plans: dict[tuple[int, int], ResizePlan] = {}

    def plan(self, input_size: tuple[int, int]) -> ResizePlan:
        plan = self._plans.get(input_size)
        if plan is None:
            plan = self._plans[input_size] = plan_resize(input_size, self.resize)
        return plan


def _round_even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def _interpolation(src: tuple[int, int], dst: tuple[int, int]) -> int:
    if dst[0] <= src[0] and dst[1] <= src[1]:
        return cv2.INTER_AREA  # averages every input pixel: no aliasing when shrinking
    if dst[0] >= src[0] and dst[1] >= src[1]:
        return cv2.INTER_CUBIC  # VGGT upsamples with bicubic too
    return cv2.INTER_LINEAR
