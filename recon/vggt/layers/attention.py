"""Multi-head self-attention with optional q/k LayerNorm, 2D RoPE, block-causal mask and KV cache."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.vggt.layers.rope import RotaryEmbedding2D

# Receives the current (k, v) ``[B, heads, N, D]`` and returns what to attend over:
# cached past keys/values followed by the current ones.
KVHook = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def block_causal_mask(query_frames: Tensor, num_past: int) -> Tensor | None:
    """Boolean mask ``[N, num_past + N]`` (True = may attend) or None when nothing is masked.

    Every query sees all ``num_past`` cached tokens and the current tokens of
    its own or earlier frames (``query_frames [N]``).
    """
    if bool((query_frames == query_frames[0]).all()):
        return None  # a single frame: nothing to hide, keep the fused kernel's fast path
    current = query_frames[:, None] >= query_frames[None, :]
    past = torch.ones(len(query_frames), num_past, dtype=torch.bool, device=query_frames.device)
    return torch.cat([past, current], dim=1)


class Attention(nn.Module):
    """State-dict keys: ``qkv``, ``q_norm``/``k_norm`` (when ``qk_norm``), ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 qk_norm: bool = False, rope: RotaryEmbedding2D | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def forward(self, x: Tensor, pos: Tensor | None = None, query_frames: Tensor | None = None,
                kv_hook: KVHook | None = None) -> Tensor:
        """``x [B, N, C]``; ``pos [B, N, 2]`` for RoPE; ``query_frames [N]`` makes the
        attention block-causal over frames; ``kv_hook`` splices in cached keys/values."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)  # [B, heads, N, D]
        if self.rope is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        # Under autocast the norms return fp32: store and attend in the values' precision.
        q, k = q.to(v.dtype), k.to(v.dtype)
        if kv_hook is not None:
            k, v = kv_hook(k, v)
        mask = None if query_frames is None else block_causal_mask(query_frames, k.shape[2] - N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # fused; no [N, N] matrix
        return self.proj(out.transpose(1, 2).reshape(B, N, C))
