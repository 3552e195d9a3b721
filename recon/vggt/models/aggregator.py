"""VGGT's aggregator: per-frame DINOv2 tokens refined by alternating frame / global attention."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recon.vggt.layers.block import Block
from recon.vggt.layers.dinov2 import DinoV2Encoder
from recon.vggt.layers.kv import KVCacheProtocol, layer_hook
from recon.vggt.layers.patch_embed import PatchEmbed
from recon.vggt.layers.rope import RotaryEmbedding2D, token_positions
from recon.vggt.models.config import VGGTConfig

# ImageNet statistics: the DINOv2 encoder expects normalised images.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    """Images ``[B, S, 3, H, W]`` in [0, 1] -> per-layer tokens ``[B, S, P, 2C]``.

    Each frame's tokens are ``[camera (1), registers (R), patches]``; the first
    frame of a stream gets its own learned camera/register tokens, every later
    frame shares a second set. ``depth`` frame-attention blocks (within one
    frame) alternate with ``depth`` global-attention blocks (across frames);
    layer ``i``'s output is ``concat(frame_i, global_i)`` on channels.

    State-dict keys: ``camera_token [1, 2, 1, C]``, ``register_token [1, 2, R, C]``,
    ``patch_embed.*``, ``frame_blocks.<i>.*``, ``global_blocks.<i>.*``.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.patch_size = c.patch_size
        self.patch_start_idx = 1 + c.num_register_tokens
        if c.patch_embed == "dinov2":
            self.patch_embed = DinoV2Encoder(c.img_size, c.patch_size, c.embed_dim, c.dino_depth, c.dino_num_heads,
                                             c.mlp_ratio, c.num_register_tokens)
        else:
            self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.rope = RotaryEmbedding2D(c.rope_base)

        def block() -> Block:
            return Block(c.embed_dim, c.num_heads, c.mlp_ratio, init_values=c.layer_scale_init, qk_norm=True,
                         rope=self.rope)

        self.frame_blocks = nn.ModuleList(block() for _ in range(c.depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(c.depth))
        # Index 0: the stream's first frame; index 1: every other frame.
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c.embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, c.num_register_tokens, c.embed_dim) * 1e-6)

    def _special_tokens(self, B: int, S: int, starts_stream: bool) -> Tensor:
        """Camera + register tokens ``[B*S, 1+R, C]``; only a stream's first frame uses set 0."""
        special = torch.cat([self.camera_token, self.register_token], dim=2)  # [1, 2, 1+R, C]
        index = torch.ones(S, dtype=torch.long, device=special.device)
        if starts_stream:
            index[0] = 0
        return special[0, index].unsqueeze(0).expand(B, -1, -1, -1).reshape(B * S, *special.shape[2:])

    def forward(self, images: Tensor, *, causal: bool = False, kv_cache: KVCacheProtocol | None = None,
                frame_ids: Tensor | None = None, starts_stream: bool = True,
                retained: tuple[int, ...] | None = None) -> tuple[list[Tensor | None], int]:
        """Run the aggregator.

        Args:
            images: ``[B, S, 3, H, W]`` in [0, 1], H and W multiples of the patch size.
            causal: block-causal global attention (frame ``s`` sees frames ``<= s``), as when streaming.
            kv_cache: streaming: global layers also attend over the cache's earlier frames and
                hand it this step's keys/values (implies ``causal`` within the step).
            frame_ids: int64 ``[S]`` stream positions of the frames (default ``0..S-1``).
            starts_stream: the first frame is the stream's first (gets the first-frame tokens).
            retained: layer indices to return (default: those the enabled heads read).

        Returns:
            ``(layers, patch_start_idx)``: ``layers[i]`` is ``[B, S, P, 2C]`` for retained
            ``i`` and None otherwise; patch tokens start at ``patch_start_idx``.
        """
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"Aggregator expects images [B, S, 3, H, W], got {tuple(images.shape)}")
        B, S, _, H, W = images.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {W}x{H} is not a multiple of the patch size {p}")
        device = images.device
        if frame_ids is None:
            frame_ids = torch.arange(S, device=device)
        retained_set = set(self.config.retained_layers if retained is None else retained)

        # Constants, not buffers: a model built on the meta device then loads with assign=True.
        mean = torch.tensor(_IMAGENET_MEAN, dtype=images.dtype, device=device).view(1, 1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, dtype=images.dtype, device=device).view(1, 1, 3, 1, 1)
        normalised = ((images - mean) / std).reshape(B * S, 3, H, W)
        patches = self.patch_embed(normalised)  # [B*S, P - 1 - R, C]
        tokens = torch.cat([self._special_tokens(B, S, starts_stream).to(patches.dtype), patches], dim=1)
        P, C = tokens.shape[1:]
        pos = token_positions(H // p, W // p, self.patch_start_idx, device)  # [P, 2]
        frame_pos = pos.unsqueeze(0).expand(B * S, -1, -1)
        global_pos = pos.repeat(S, 1).unsqueeze(0).expand(B, -1, -1)  # [B, S*P, 2]
        token_frames = frame_ids.to(device).repeat_interleave(P)  # [S*P]
        query_frames = token_frames if (causal or kv_cache is not None) else None

        outputs: list[Tensor | None] = [None] * len(self.frame_blocks)
        for i, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = frame_block(tokens.reshape(B * S, P, C), pos=frame_pos)
            frame_out = tokens.reshape(B, S, P, C)
            hook = None if kv_cache is None else layer_hook(kv_cache, i, token_frames)
            tokens = global_block(tokens.reshape(B, S * P, C), pos=global_pos, query_frames=query_frames,
                                  kv_hook=hook)
            if i in retained_set:
                outputs[i] = torch.cat([frame_out, tokens.reshape(B, S, P, C)], dim=-1)
        return outputs, self.patch_start_idx
