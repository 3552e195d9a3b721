"""DPT head (Ranftl et al. 2021): dense maps from four aggregator layers.

Patch tokens of four layers are projected, resized to 4x, 2x, 1x and 1/2x the
patch grid, fused coarse-to-fine by residual convolution units, upsampled to
the image size and turned into values + confidence. VGGT uses it for depth
(``exp`` activation, 1 channel) and world points (``inv_log``, 3 channels); the
track head uses it as a feature extractor (``feature_only``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.vggt.heads.activations import activate_dense
from recon.vggt.heads.pos_embed import uv_embedding

# F.interpolate indexes with int32 on some backends; split larger batches.
_MAX_INTERP_ELEMENTS = 1_610_612_736


def interpolate(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize ``[N, C, h, w] -> [N, C, *size]`` (align_corners), chunked over N when huge."""
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if elements <= _MAX_INTERP_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    chunks = x.chunk(elements // _MAX_INTERP_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in chunks])


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` (the skip carries the activated input)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FusionBlock(nn.Module):
    """Adds a refined skip feature (``resConfUnit1``), refines (``resConfUnit2``), upsamples, 1x1-projects."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size or (int(x.shape[-2] * 2), int(x.shape[-1] * 2))
        return self.out_conv(interpolate(x, size))


class DPTHead(nn.Module):
    """State-dict keys: ``norm``, ``projects.<0-3>``, ``resize_layers.<0,1,3>``, ``scratch.layer<1-4>_rn``,
    ``scratch.refinenet<1-4>.*``, ``scratch.output_conv1``, ``scratch.output_conv2.<0,2>``."""

    def __init__(self, dim_in: int, patch_size: int = 14, output_dim: int = 4, activation: str = "inv_log",
                 features: int = 256, out_channels: tuple[int, ...] = (256, 512, 1024, 1024),
                 layers: tuple[int, ...] = (4, 11, 17, 23), pos_embed: bool = True, feature_only: bool = False,
                 down_ratio: int = 1) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.activation = activation
        self.layers = tuple(layers)
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        c = out_channels
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c[0], c[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(c[1], c[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FusionBlock(features)
        self.scratch.refinenet2 = FusionBlock(features)
        self.scratch.refinenet3 = FusionBlock(features)
        self.scratch.refinenet4 = FusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1))

    def forward(self, layers: list[Tensor | None], image_hw: tuple[int, int], patch_start_idx: int,
                frames_chunk_size: int | None = 8) -> Tensor | tuple[Tensor, Tensor]:
        """Aggregator layers (``[B, S, P, 2C]`` each) -> dense outputs at the image size ``(H, W)``.

        Returns ``(values [B, S, H, W, output_dim-1], conf [B, S, H, W])``, or features
        ``[B, S, features, H/down, W/down]`` when ``feature_only``. Frames are processed
        ``frames_chunk_size`` at a time to bound memory (None: all at once).
        """
        for i in self.layers:
            if layers[i] is None:
                raise ValueError(f"DPT head needs aggregator layer {i}, which was not retained")
        S = layers[self.layers[0]].shape[1]
        step = S if not frames_chunk_size else frames_chunk_size
        outs = [self._forward_frames(layers, image_hw, patch_start_idx, s, min(s + step, S)) for s in range(0, S, step)]
        if self.feature_only:
            return torch.cat(outs, dim=1)
        return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)

    def _add_pos(self, x: Tensor, image_hw: tuple[int, int]) -> Tensor:
        H, W = image_hw
        emb = uv_embedding(x.shape[-1], x.shape[-2], W / H, x.shape[1], x.dtype, x.device)
        return x + 0.1 * emb.to(x.dtype)

    def _forward_frames(self, layers: list[Tensor | None], image_hw: tuple[int, int], patch_start_idx: int,
                        start: int, end: int) -> Tensor | tuple[Tensor, Tensor]:
        H, W = image_hw
        gh, gw = H // self.patch_size, W // self.patch_size
        feats = []
        for j, layer_idx in enumerate(self.layers):
            x = layers[layer_idx][:, start:end, patch_start_idx:]  # [B, s, gh*gw, 2C]
            B, s = x.shape[:2]
            x = self.norm(x.reshape(B * s, gh * gw, -1))
            x = x.transpose(1, 2).reshape(B * s, -1, gh, gw)
            x = self.projects[j](x)
            if self.pos_embed:
                x = self._add_pos(x, image_hw)
            feats.append(self.resize_layers[j](x))
        l1, l2, l3, l4 = (getattr(self.scratch, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        x = self.scratch.refinenet4(l4, size=tuple(l3.shape[2:]))
        x = self.scratch.refinenet3(x, l3, size=tuple(l2.shape[2:]))
        x = self.scratch.refinenet2(x, l2, size=tuple(l1.shape[2:]))
        x = self.scratch.refinenet1(x, l1)
        x = self.scratch.output_conv1(x)
        x = interpolate(x, (int(gh * self.patch_size / self.down_ratio), int(gw * self.patch_size / self.down_ratio)))
        if self.pos_embed:
            x = self._add_pos(x, image_hw)
        if self.feature_only:
            return x.reshape(B, s, *x.shape[1:])
        values, conf = activate_dense(self.scratch.output_conv2(x), self.activation)
        return values.reshape(B, s, *values.shape[1:]), conf.reshape(B, s, *conf.shape[1:])
