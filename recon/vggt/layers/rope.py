"""2D rotary position embedding (RoPE) over patch rows and columns.

Each head's channels are split in two halves: the first half is rotated by the
token's row, the second by its column. Inside a half of ``d`` channels, channel
``i`` pairs with channel ``i + d/2`` and turns by ``position * base**(-2i/d)``.
Special (camera / register) tokens sit at position (0, 0), i.e. are not rotated;
patches start at (1, 1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def token_positions(grid_h: int, grid_w: int, num_special: int, device: torch.device | str) -> Tensor:
    """Integer (row, col) of every token of one frame, ``[num_special + grid_h * grid_w, 2]``."""
    rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w)
    cols = torch.arange(grid_w, device=device).repeat(grid_h)
    patches = torch.stack([rows, cols], dim=-1) + 1
    special = torch.zeros(num_special, 2, dtype=patches.dtype, device=device)
    return torch.cat([special, patches], dim=0)


class RotaryEmbedding2D(nn.Module):
    """Rotate queries/keys ``[B, heads, N, D]`` by positions ``[B or 1, N, 2]`` (row, col)."""

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)

    def _rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        # x: [B, heads, N, d]; pos: [B, N]
        d = x.shape[-1]
        inv_freq = 1.0 / self.base ** (torch.arange(0, d, 2, device=x.device).float() / d)  # [d/2]
        angles = pos.float()[..., None] * inv_freq  # [B, N, d/2]
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, N, d]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        if x.shape[-1] % 4:
            raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {x.shape[-1]}")
        rows, cols = x.chunk(2, dim=-1)
        return torch.cat([self._rotate(rows, pos[..., 0]), self._rotate(cols, pos[..., 1])], dim=-1)
