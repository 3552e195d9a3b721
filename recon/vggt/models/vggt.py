"""The assembled VGGT network (Wang et al., CVPR 2025), state-dict compatible with VGGT-1B."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from recon.vggt.heads.camera_head import CameraHead
from recon.vggt.heads.dpt_head import DPTHead
from recon.vggt.heads.track_head import TrackHead
from recon.vggt.models.aggregator import Aggregator
from recon.vggt.models.config import VGGTConfig
from recon.vggt.models.streaming import StreamState

HEAD_NAMES = ("camera_head", "point_head", "depth_head", "track_head")


class VGGT(nn.Module):
    """Aggregator + camera, point, depth and track heads.

    ``VGGT()`` builds VGGT-1B; its ``state_dict()`` keys and shapes equal the
    official checkpoint's, so ``load_state_dict(official, strict=True)`` works.
    A disabled head has no parameters, and :meth:`load_state_dict` drops its
    keys explicitly (listed in ``skipped_keys``) instead of failing.
    ``config`` (a :class:`VGGTConfig`) overrides every size, for small networks.
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, enable_camera: bool = True,
                 enable_point: bool = True, enable_depth: bool = True, enable_track: bool = True,
                 *, config: VGGTConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = VGGTConfig(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                                enable_camera=enable_camera, enable_point=enable_point, enable_depth=enable_depth,
                                enable_track=enable_track)
        c = self.config = config
        dim = 2 * c.embed_dim  # heads read frame ++ global tokens
        self.aggregator = Aggregator(c)
        self.camera_head = CameraHead(dim, c.camera_trunk_depth, c.camera_num_heads, c.mlp_ratio,
                                      c.layer_scale_init, c.camera_iterations) if c.enable_camera else None
        dense = dict(patch_size=c.patch_size, features=c.dpt_features, out_channels=c.dpt_out_channels,
                     layers=c.dpt_layers)
        self.point_head = DPTHead(dim, output_dim=4, activation="inv_log", **dense) if c.enable_point else None
        self.depth_head = DPTHead(dim, output_dim=2, activation="exp", **dense) if c.enable_depth else None
        self.track_head = TrackHead(c) if c.enable_track else None
        self.skipped_keys: list[str] = []

    @property
    def disabled_heads(self) -> tuple[str, ...]:
        return tuple(name for name in HEAD_NAMES if getattr(self, name) is None)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` after dropping (and recording) the keys of disabled heads."""
        prefixes = tuple(f"{name}." for name in self.disabled_heads)
        self.skipped_keys = [k for k in state_dict if k.startswith(prefixes)] if prefixes else []
        if self.skipped_keys:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, images: Tensor, query_points: Tensor | None = None, *, causal: bool = False,
                stream: StreamState | None = None) -> dict[str, Tensor | list[Tensor]]:
        """Predict cameras, depth, point maps (and tracks) for a set of frames.

        Args:
            images: ``[S, 3, H, W]`` or ``[B, S, 3, H, W]`` in [0, 1]; H, W multiples of the patch size.
            query_points: ``[N, 2]`` or ``[B, N, 2]`` pixels in the first frame to track (needs the track head).
            causal: frame ``s`` only sees frames ``<= s`` (the streaming model's batch form).
            stream: continue a stream: these frames follow ``stream.frames_seen`` earlier ones, whose
                keys/values the caches in ``stream`` hold; the caches and the counter are updated.

        Returns VGGT's dict: ``pose_enc [B, S, 9]`` (last iteration), ``pose_enc_list``,
        ``depth [B, S, H, W, 1]``, ``depth_conf [B, S, H, W]``, ``world_points [B, S, H, W, 3]``,
        ``world_points_conf [B, S, H, W]``, ``images [B, S, 3, H, W]``; with query points also
        ``track [B, S, N, 2]``, ``vis`` and ``conf [B, S, N]``. World = the first frame's camera
        (the stream's first frame when streaming).
        """
        if images.ndim == 4:
            images = images.unsqueeze(0)
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"VGGT expects images [S, 3, H, W] or [B, S, 3, H, W], got {tuple(images.shape)}")
        if query_points is not None and query_points.ndim == 2:
            query_points = query_points.unsqueeze(0)
        B, S, _, H, W = images.shape
        frame_ids = None
        if stream is not None:
            frame_ids = torch.arange(stream.frames_seen, stream.frames_seen + S, device=images.device)
        layers, patch_start = self.aggregator(
            images, causal=causal, kv_cache=None if stream is None else stream.kv_cache, frame_ids=frame_ids,
            starts_stream=stream is None or stream.frames_seen == 0)
        if stream is not None:
            stream.frames_seen += S
        # The heads run in fp32 even when the aggregator ran under autocast.
        layers = [None if t is None else t.float() for t in layers]
        out: dict[str, Tensor | list[Tensor]] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            if self.camera_head is not None:
                encs = self.camera_head(layers[-1], causal=causal, frame_ids=frame_ids,
                                        cache=None if stream is None else stream.camera_cache)
                out["pose_enc"], out["pose_enc_list"] = encs[-1], encs
            if self.depth_head is not None:
                out["depth"], out["depth_conf"] = self.depth_head(layers, (H, W), patch_start)
            if self.point_head is not None:
                out["world_points"], out["world_points_conf"] = self.point_head(layers, (H, W), patch_start)
            if self.track_head is not None and query_points is not None:
                tracks, vis, conf = self.track_head(layers, (H, W), patch_start, query_points.float())
                out["track"], out["vis"], out["conf"] = tracks[-1], vis, conf
        out["images"] = images
        return out
