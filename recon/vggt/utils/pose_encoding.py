"""VGGT's 9-D camera encoding ``[t (3), q_xyzw (4), fov_h, fov_w]`` and its conversions.

``t`` and the quaternion (scalar last) describe the camera-from-world
transform (OpenCV axes); the fields of view are in radians. Intrinsics have
the principal point at ``(W/2, H/2)``, VGGT's convention.
"""

from __future__ import annotations

import torch
from torch import Tensor


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Quaternions ``[..., 4]`` (x, y, z, w; any norm) -> rotation matrices ``[..., 3, 3]``."""
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    rows = (
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (x, y, z, w), ``w >= 0``.

    Uses the best-conditioned of the four closed forms (Shepperd's method).
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must be [..., 3, 3], got {tuple(R.shape)}")
    m = R.reshape(*R.shape[:-2], 9).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    # 4 * (w^2, x^2, y^2, z^2)
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    root = torch.sqrt(four_sq.clamp(min=0))  # 2|w|, 2|x|, 2|y|, 2|z|
    # Candidate (w, x, y, z), each scaled by one of 2w, 2x, 2y, 2z.
    candidates = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], -1),
    ], dim=-2) / (2.0 * root.clamp(min=0.1))[..., None]
    best = root.argmax(dim=-1)
    wxyz = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    xyzw = torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)
    return torch.where(xyzw[..., 3:] < 0, -xyzw, xyzw)


def encoding_to_extrinsics_intrinsics(enc: Tensor, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``enc [..., 9]`` -> camera-from-world ``[..., 3, 4]`` and intrinsics ``[..., 3, 3]`` in pixels
    of an ``image_hw = (H, W)`` image."""
    H, W = image_hw
    R = quaternion_to_matrix(enc[..., 3:7])
    extrinsics = torch.cat([R, enc[..., :3, None]], dim=-1)
    K = torch.zeros(*enc.shape[:-1], 3, 3, dtype=enc.dtype, device=enc.device)
    K[..., 0, 0] = (W / 2.0) / torch.tan(enc[..., 8] / 2.0)
    K[..., 1, 1] = (H / 2.0) / torch.tan(enc[..., 7] / 2.0)
    K[..., 0, 2] = W / 2
    K[..., 1, 2] = H / 2
    K[..., 2, 2] = 1.0
    return extrinsics, K


def extrinsics_intrinsics_to_encoding(extrinsics: Tensor, K: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Inverse of :func:`encoding_to_extrinsics_intrinsics` (the principal point is dropped)."""
    H, W = image_hw
    fov_h = 2 * torch.atan((H / 2) / K[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2) / K[..., 0, 0])
    quat = matrix_to_quaternion(extrinsics[..., :3, :3])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)
