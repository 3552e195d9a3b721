"""Turning VGGT's camera outputs into stream4d's conventions (numpy, float64)."""

from __future__ import annotations

import numpy as np

from stream4d.geometry import invert_se3


def extrinsics_to_c2w(extrinsics: np.ndarray) -> np.ndarray:
    """Camera-from-world ``[..., 3, 4]`` (VGGT's "extrinsic") -> camera-to-world ``[..., 4, 4]``."""
    w2c = np.zeros((*extrinsics.shape[:-2], 4, 4))
    w2c[..., :3, :] = extrinsics
    w2c[..., 3, 3] = 1.0
    return invert_se3(w2c)


def centred_intrinsics(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Intrinsics ``[..., 3, 3]`` with the principal point at the image centre in stream4d's
    convention (pixel centres at integers: ``((W-1)/2, (H-1)/2)``; VGGT writes ``(W/2, H/2)``)."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[..., 0, 2] = (width - 1) / 2.0
    out[..., 1, 2] = (height - 1) / 2.0
    return out
