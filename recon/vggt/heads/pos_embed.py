"""Fixed sinusoidal position embeddings used by the DPT and track heads."""

from __future__ import annotations

import torch
from torch import Tensor


def sincos(pos: Tensor, dim: int, omega_0: float) -> Tensor:
    """``[M] -> [M, dim]``: ``[sin(pos * w_i), cos(pos * w_i)]`` with ``w_i = omega_0 ** (-i / (dim/2))``.

    Computed in float64 (returned as float32) so large grids stay exact.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / omega_0 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    angles = pos.reshape(-1).to(torch.float64)[:, None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def uv_grid(width: int, height: int, aspect: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised pixel-centre coordinates ``[height, width, 2]`` (u, v).

    The image plane spans ``[-a, a] x [-1, 1] / sqrt(a^2 + 1)`` (``a = aspect``,
    unit half-diagonal) and the grid samples cell centres of it.
    """
    diag = (aspect ** 2 + 1.0) ** 0.5
    span_x, span_y = aspect / diag, 1.0 / diag
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype,
                        device=device)
    v, u = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([u, v], dim=-1)


def uv_embedding(width: int, height: int, aspect: float, channels: int, dtype: torch.dtype,
                 device: torch.device) -> Tensor:
    """``[channels, height, width]``: half the channels encode u, half v (``omega_0 = 100``)."""
    uv = uv_grid(width, height, aspect, dtype, device).reshape(-1, 2)
    emb = torch.cat([sincos(uv[:, 0], channels // 2, 100.0), sincos(uv[:, 1], channels // 2, 100.0)], dim=-1)
    return emb.reshape(height, width, channels).permute(2, 0, 1)


def grid_embedding(dim: int, height: int, width: int, device: torch.device | None = None) -> Tensor:
    """``[1, dim, height, width]`` embedding of integer grid cells: x on the first half, y on the second."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    emb = torch.cat([sincos(xs, dim // 2, 10000.0), sincos(ys, dim // 2, 10000.0)], dim=-1)
    return emb.reshape(1, height, width, dim).permute(0, 3, 1, 2).to(device)


def offset_embedding(xy: Tensor, dim: int) -> Tensor:
    """2-D offsets ``[B, N, 2]`` -> ``[B, N, 2 * dim]``: per axis, sin/cos interleaved at
    frequencies ``k * 1000 / dim`` for even ``k``."""
    freq = torch.arange(0, dim, 2, device=xy.device, dtype=torch.float32) * (1000.0 / dim)  # [dim/2]
    parts = []
    for axis in range(2):
        angles = xy[..., axis:axis + 1].float() * freq  # [B, N, dim/2]
        parts.append(torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2))  # interleave
    return torch.cat(parts, dim=-1)
