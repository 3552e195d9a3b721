"""Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

from __future__ import annotations

from torch import Tensor, nn

from recon.vggt.layers.attention import Attention, KVHook
from recon.vggt.layers.layer_scale import LayerScale
from recon.vggt.layers.mlp import Mlp
from recon.vggt.layers.rope import RotaryEmbedding2D


class Block(nn.Module):
    """State-dict keys: ``norm1``, ``attn.*``, ``ls1.gamma``, ``norm2``, ``mlp.*``, ``ls2.gamma``.

    ``init_values`` None means no LayerScale; ``norm_eps`` is 1e-5 in VGGT's own
    blocks and 1e-6 in the DINOv2 encoder.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, init_values: float | None = None,
                 qk_norm: bool = False, rope: RotaryEmbedding2D | None = None, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor | None = None, query_frames: Tensor | None = None,
                kv_hook: KVHook | None = None) -> Tensor:
        """``x [B, N, C]`` -> ``[B, N, C]``; arguments as in :class:`Attention`."""
        x = x + self.ls1(self.attn(self.norm1(x), pos=pos, query_frames=query_frames, kv_hook=kv_hook))
        return x + self.ls2(self.mlp(self.norm2(x)))
