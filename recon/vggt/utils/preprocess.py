"""VGGT's "crop" preprocessing: resize to a fixed width, round the height to the patch grid, centre-crop.

The affine taking the frame's pixels to model pixels is returned with every
image, so intrinsics and correspondences can be mapped back to the input.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def crop_size(width: int, height: int, target_width: int = 518, patch_size: int = 14) -> tuple[int, int, int]:
    """``(resized_height, output_height, crop_top)`` for an input of ``width x height``."""
    resized_h = round(height * (target_width / width) / patch_size) * patch_size
    if resized_h < patch_size:
        raise ValueError(f"image {width}x{height} is too wide for VGGT's crop mode: its height would "
                         f"round to {resized_h} px at width {target_width}")
    out_h = min(resized_h, target_width)
    return resized_h, out_h, (resized_h - out_h) // 2


def crop_preprocess(image: np.ndarray, target_width: int = 518, patch_size: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``uint8 [H, W, 3]`` -> (model image ``uint8 [h, target_width, 3]``, affine ``[3, 3]`` frame px -> model px).

    Resizes (PIL bicubic, as VGGT) to ``target_width`` wide and ``h`` = the aspect-preserving
    height rounded to a multiple of ``patch_size``; heights above ``target_width`` are
    centre-cropped to ``target_width``. Pixel centres sit at integer coordinates.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"crop_preprocess needs an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if target_width % patch_size:
        raise ValueError(f"target width {target_width} is not a multiple of the patch size {patch_size}")
    H, W = image.shape[:2]
    resized_h, out_h, top = crop_size(W, H, target_width, patch_size)
    resized = np.asarray(Image.fromarray(image).resize((target_width, resized_h), Image.Resampling.BICUBIC))
    sx, sy = target_width / W, resized_h / H
    # Resampling maps pixel centres: x' + 0.5 = (x + 0.5) * s; cropping shifts rows by `top`.
    affine = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5 - top], [0.0, 0.0, 1.0]])
    return np.ascontiguousarray(resized[top:top + out_h]), affine


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """``uint8 [S, H, W, 3]`` -> float ``[S, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
