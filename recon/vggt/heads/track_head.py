"""Track head: DPT features at half resolution + the iterative point tracker."""

from __future__ import annotations

from torch import Tensor, nn

from recon.vggt.heads.dpt_head import DPTHead
from recon.vggt.heads.tracker import TrackPredictor
from recon.vggt.models.config import VGGTConfig


class TrackHead(nn.Module):
    """State-dict keys: ``feature_extractor.*`` (a feature-only DPT head), ``tracker.*``."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.iterations = c.track_iterations
        self.feature_extractor = DPTHead(2 * c.embed_dim, c.patch_size, features=c.track_features,
                                         out_channels=c.dpt_out_channels, layers=c.dpt_layers, feature_only=True,
                                         down_ratio=2)
        self.tracker = TrackPredictor(c.track_features, c.track_hidden, c.track_depth, c.track_num_heads,
                                      c.track_corr_levels, c.track_corr_radius, stride=2,
                                      num_virtual=c.track_virtual_tokens)

    def forward(self, layers: list[Tensor | None], image_hw: tuple[int, int], patch_start_idx: int,
                query_points: Tensor, iters: int | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """``query_points [B, N, 2]`` in pixels of the first frame -> (tracks per iteration
        ``[B, S, N, 2]``, visibility ``[B, S, N]``, confidence ``[B, S, N]``)."""
        fmaps = self.feature_extractor(layers, image_hw, patch_start_idx)  # [B, S, C, H/2, W/2]
        return self.tracker(query_points, fmaps, iters or self.iterations)
