"""Point tracker of the track head (after CoTracker / VGGSfM): correlation pyramid + update transformer.

Query points are tracked from the first frame through all frames by iterative
refinement: each round samples multi-scale feature correlations around the
current estimate, mixes them with the offset from the query and the track's
feature, and a transformer (attention over time per track, and across tracks
through a few learned "virtual" tracks) predicts coordinate and feature updates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.vggt.heads.pos_embed import grid_embedding, offset_embedding
from recon.vggt.layers.mlp import Mlp


def sample_bilinear(x: Tensor, coords: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample ``x [N, C, H, W]`` at pixel coordinates ``coords [N, h, w, 2]`` (x, y; pixel centres
    at integers) -> ``[N, C, h, w]``."""
    H, W = x.shape[-2:]
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], device=x.device, dtype=x.dtype)
    grid = coords.to(x.dtype) * scale - 1
    return F.grid_sample(x, grid, align_corners=True, padding_mode=padding_mode)


def sample_points(fmap: Tensor, points: Tensor) -> Tensor:
    """Features ``[B, C, H, W]`` at points ``[B, N, 2]`` -> ``[B, N, C]``."""
    return sample_bilinear(fmap, points.unsqueeze(2))[..., 0].transpose(1, 2)


class CorrelationPyramid:
    """Correlations of track features with every frame's feature map, sampled around points.

    Level ``i`` average-pools the maps ``2**i`` times; around each point a
    ``(2r+1)^2`` window is sampled (the first window axis steps x, the second y).
    """

    def __init__(self, fmaps: Tensor, levels: int, radius: int) -> None:
        # fmaps: [B, S, C, H, W]
        self.radius = radius
        self.pyramid = [fmaps]
        for _ in range(levels - 1):
            B, S, C, H, W = fmaps.shape
            fmaps = F.avg_pool2d(fmaps.reshape(B * S, C, H, W), 2, stride=2)
            fmaps = fmaps.reshape(B, S, C, *fmaps.shape[-2:])
            self.pyramid.append(fmaps)
        steps = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        dx, dy = torch.meshgrid(steps, steps, indexing="ij")
        self.window = torch.stack([dx, dy], dim=-1)  # [2r+1, 2r+1, 2]

    def sample(self, feats: Tensor, coords: Tensor) -> Tensor:
        """``feats [B, S, N, C]``, ``coords [B, S, N, 2]`` -> ``[B, S, N, levels * (2r+1)^2]``."""
        B, S, N, C = feats.shape
        out = []
        for i, fmaps in enumerate(self.pyramid):
            H, W = fmaps.shape[-2:]
            corr = torch.matmul(feats, fmaps.reshape(B, S, C, H * W)) / math.sqrt(C)  # [B, S, N, H*W]
            centres = coords.reshape(B * S * N, 1, 1, 2) / 2 ** i
            window = centres + self.window.to(coords.dtype)[None]
            sampled = sample_bilinear(corr.reshape(B * S * N, 1, H, W), window, padding_mode="zeros")
            out.append(sampled.reshape(B, S, N, -1))
        return torch.cat(out, dim=-1)


class AttnBlock(nn.Module):
    """Self-attention block on the normalised input: ``y = norm1(x); y += attn(y); y += mlp(norm2(y))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x)
        # need_weights keeps its default: the fused path rounds differently and 4 refinement
        # rounds amplify that to ~1e-4 px against the reference implementation.
        x = x + self.attn(x, x, x)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: ``y = norm1(x); y += attn(y, norm_context(ctx)); y += mlp(norm2(y))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context)[0]
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """Tokens ``[B, N, T, in_dim]`` (tracks x frames) -> updates ``[B, N, T, out_dim]``.

    State-dict keys: ``input_norm``, ``input_transform``, ``output_norm``, ``flow_head``,
    ``virual_tracks`` (sic), ``time_blocks``, ``space_virtual_blocks``,
    ``space_point2virtual_blocks``, ``space_virtual2point_blocks``.
    """

    def __init__(self, depth: int, in_dim: int, hidden: int, out_dim: int, num_heads: int = 8,
                 mlp_ratio: float = 4.0, num_virtual: int = 64) -> None:
        super().__init__()
        self.num_virtual = num_virtual
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_transform = nn.Linear(in_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, out_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual, 1, hidden))
        self.time_blocks = nn.ModuleList(AttnBlock(hidden, num_heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(AttnBlock(hidden, num_heads, mlp_ratio) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(CrossAttnBlock(hidden, num_heads, mlp_ratio)
                                                        for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(CrossAttnBlock(hidden, num_heads, mlp_ratio)
                                                        for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_transform(self.input_norm(x))
        init = x
        B, _, T, _ = x.shape
        x = torch.cat([x, self.virual_tracks.repeat(B, 1, T, 1)], dim=1)
        N, V = x.shape[1], self.num_virtual
        for time, virtual_self, point2virtual, virtual2point in zip(
                self.time_blocks, self.space_virtual_blocks, self.space_point2virtual_blocks,
                self.space_virtual2point_blocks):
            x = time(x.reshape(B * N, T, -1)).reshape(B, N, T, -1)
            space = x.permute(0, 2, 1, 3).reshape(B * T, N, -1)
            points, virtual = space[:, :N - V], space[:, N - V:]
            virtual = virtual_self(virtual2point(virtual, points))
            points = point2virtual(points, virtual)
            x = torch.cat([points, virtual], dim=1).reshape(B, T, N, -1).permute(0, 2, 1, 3)
        x = x[:, :N - V] + init
        return self.flow_head(self.output_norm(x))


class TrackPredictor(nn.Module):
    """Tracks query points through feature maps.

    State-dict keys: ``corr_mlp``, ``query_ref_token``, ``updateformer.*``, ``fmap_norm``,
    ``ffeat_norm``, ``ffeat_updater.0``, ``vis_predictor.0``, ``conf_predictor.0``.
    """

    def __init__(self, latent_dim: int = 128, hidden: int = 384, depth: int = 6, num_heads: int = 8,
                 corr_levels: int = 7, corr_radius: int = 4, stride: int = 2, num_virtual: int = 64,
                 max_scale: float = 518.0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.stride = stride
        self.max_scale = max_scale
        self.transformer_dim = 3 * latent_dim + 4  # offset embedding (+4 raw), correlations, track feature
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = UpdateTransformer(depth, self.transformer_dim, hidden, latent_dim + 2, num_heads,
                                              num_virtual=num_virtual)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(self, query_points: Tensor, fmaps: Tensor, iters: int) -> tuple[list[Tensor], Tensor, Tensor]:
        """``query_points [B, N, 2]`` (pixels of the first frame), ``fmaps [B, S, C, h, w]`` at 1/stride.

        Returns per-iteration tracks ``[B, S, N, 2]`` (pixels), visibility and confidence ``[B, S, N]`` in (0, 1).
        """
        B, N, _ = query_points.shape
        S, C, h, w = fmaps.shape[1:]
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        coords = (query_points / float(self.stride)).reshape(B, 1, N, 2).repeat(1, S, 1, 1)  # [B, S, N, 2]
        query = coords[:, 0].clone()
        feats = sample_points(fmaps[:, 0], query).unsqueeze(1).repeat(1, S, 1, 1)  # [B, S, N, C]
        pyramid = CorrelationPyramid(fmaps, self.corr_levels, self.corr_radius)
        pos = sample_points(grid_embedding(self.transformer_dim, h, w, fmaps.device).expand(B, -1, -1, -1), query)
        pos = pos.reshape(B * N, 1, -1)
        ref = torch.cat([self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, S - 1, -1)], dim=1)
        tracks = []
        for _ in range(iters):
            corr = self.corr_mlp(pyramid.sample(feats, coords).permute(0, 2, 1, 3).reshape(B * N, S, -1))
            offsets = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
            scaled = offsets / self.max_scale
            track_feats = feats.permute(0, 2, 1, 3).reshape(B * N, S, C)
            x = torch.cat([offset_embedding(offsets, C // 2), scaled, scaled, corr, track_feats], dim=2)
            x = (x + pos + ref.to(x.dtype)).reshape(B, N, S, -1)
            delta = self.updateformer(x).reshape(B * N * S, -1)
            track_feats = track_feats.reshape(B * N * S, C)
            track_feats = track_feats + self.ffeat_updater(self.ffeat_norm(delta[:, 2:]))
            feats = track_feats.reshape(B, N, S, C).permute(0, 2, 1, 3)
            coords = coords + delta[:, :2].reshape(B, N, S, 2).permute(0, 2, 1, 3)
            coords = torch.cat([query.unsqueeze(1), coords[:, 1:]], dim=1)  # the query frame stays put
            tracks.append(coords * self.stride)
        flat = feats.reshape(B * S * N, C)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(B, S, N))
        conf = torch.sigmoid(self.conf_predictor(flat).reshape(B, S, N))
        return tracks, vis, conf
