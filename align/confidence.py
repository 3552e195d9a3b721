"""Which pixels of a window are trusted for alignment.

Confidence values are only ordered within one backend (see
``stream4d.contracts``), so the threshold is a quantile of the window's own
confidence rather than an absolute number.
"""

from __future__ import annotations

import numpy as np


def confidence_mask(
    conf: np.ndarray,  # [S, H, W], >= 0, 0 = invalid
    depth: np.ndarray,  # [S, H, W], 0 = unknown
    quantile: float,
) -> np.ndarray:  # bool [S, H, W]
    """Pixels at or above the window's ``quantile`` of confidence with a finite positive depth.

    The quantile is taken over the valid pixels of the whole window (one
    threshold for all its frames, so a frame the model is unsure about keeps
    fewer pixels). ``quantile=0`` keeps every valid pixel.
    """
    if conf.shape != depth.shape:
        raise ValueError(f"confidence {conf.shape} and depth {depth.shape} must have the same shape")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"conf_quantile must be in [0, 1), got {quantile}")
    valid = np.isfinite(depth) & (depth > 0) & np.isfinite(conf) & (conf > 0)
    if not valid.any():
        return valid
    # "lower" picks an existing confidence value, so a constant-confidence
    # window keeps all of its valid pixels instead of none.
    threshold = np.quantile(conf[valid], quantile, method="lower")
    return valid & (conf >= threshold)

