"""DINOv2 vision transformer with register tokens: VGGT's per-frame patch encoder.

Tokens are ``[cls, registers, patches]``; the learned position embedding
(defined on a square ``img_size / patch`` grid for cls + patches) is resized
bicubically (antialiased) to the input's patch grid. The output is the final
LayerNorm of the patch tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.vggt.layers.block import Block
from recon.vggt.layers.patch_embed import PatchEmbed


class DinoV2Encoder(nn.Module):
    """State-dict keys: ``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``,
    ``patch_embed.proj.*``, ``blocks.<i>.*``, ``norm.*`` (as DINOv2 / VGGT name them).

    ``mask_token`` is only used for masked pre-training; it is kept so checkpoints load strictly.
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, num_register_tokens: int = 4,
                 init_values: float = 1.0) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=1e-6) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def position_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """``[1, 1 + grid_h * grid_w, C]``: cls entry plus the patch grid resized to ``grid_h x grid_w``."""
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(round(patch_pos.shape[1] ** 0.5))
        if (grid_h, grid_w) == (side, side):
            return self.pos_embed
        grid = patch_pos.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(self.pos_embed.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images ``[B, 3, H, W]`` -> patch tokens ``[B, (H/p)*(W/p), C]``."""
        B, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + self.position_embedding(H // self.patch_size, W // self.patch_size)
        x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens:]
