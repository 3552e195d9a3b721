"""Camera head: iterative refinement of a 9-D pose encoding from each frame's camera token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recon.vggt.heads.activations import activate_pose
from recon.vggt.layers.block import Block
from recon.vggt.layers.kv import KVCacheProtocol, layer_hook
from recon.vggt.layers.mlp import Mlp

POSE_ENCODING_DIM = 9  # translation (3), quaternion xyzw (4), fov_h, fov_w


class CameraHead(nn.Module):
    """Predicts ``[t, q_xyzw, fov_h, fov_w]`` (camera-from-world) per frame.

    Each of ``iterations`` rounds embeds the current estimate (a learned empty
    pose at first), modulates the normalised camera tokens with it (adaLN:
    shift, scale, gate), runs a ``trunk_depth``-block transformer across the
    frames' camera tokens and adds a predicted delta.

    State-dict keys: ``trunk.<i>.*``, ``token_norm``, ``trunk_norm``, ``empty_pose_tokens``,
    ``embed_pose``, ``poseLN_modulation.1``, ``pose_branch.fc1/fc2``.
    """

    def __init__(self, dim_in: int = 2048, trunk_depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0,
                 init_values: float = 0.01, iterations: int = 4) -> None:
        super().__init__()
        self.trunk_depth = trunk_depth
        self.iterations = iterations
        self.trunk = nn.Sequential(*(Block(dim_in, num_heads, mlp_ratio, init_values=init_values)
                                     for _ in range(trunk_depth)))
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    @property
    def num_cache_layers(self) -> int:
        """Attention layers a streaming cache must hold: one per (iteration, trunk block)."""
        return self.iterations * self.trunk_depth

    def forward(self, last_layer: Tensor, *, causal: bool = False, cache: KVCacheProtocol | None = None,
                frame_ids: Tensor | None = None) -> list[Tensor]:
        """``last_layer [B, S, P, 2C]`` (the aggregator's last layer) -> one ``[B, S, 9]`` per iteration.

        ``causal`` / ``cache`` make the trunk attention block-causal / streaming as in the
        aggregator; cache layer ``it * trunk_depth + b`` belongs to iteration ``it``, block ``b``.
        """
        tokens = self.token_norm(last_layer[:, :, 0])  # camera tokens [B, S, 2C]
        B, S, _ = tokens.shape
        if frame_ids is None:
            frame_ids = torch.arange(S, device=tokens.device)
        frame_ids = frame_ids.to(tokens.device)
        query_frames = frame_ids if (causal or cache is not None) else None
        normed = self.adaln_norm(tokens)
        encodings: list[Tensor] = []
        enc = None
        for it in range(self.iterations):
            condition = self.empty_pose_tokens.expand(B, S, -1) if enc is None else enc
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(condition)).chunk(3, dim=-1)
            x = tokens + gate * (normed * (1 + scale) + shift)
            for b, block in enumerate(self.trunk):
                hook = None if cache is None else layer_hook(cache, it * self.trunk_depth + b, frame_ids)
                x = block(x, query_frames=query_frames, kv_hook=hook)
            delta = self.pose_branch(self.trunk_norm(x))
            enc = delta if enc is None else enc + delta
            encodings.append(activate_pose(enc))
        return encodings
