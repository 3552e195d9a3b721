"""Architecture of a VGGT network; the defaults are the official VGGT-1B."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class VGGTConfig:
    """Every size the network is built from. ``VGGTConfig()`` is VGGT-1B (1.26 B parameters).

    Smaller configurations run the same code (tests, benchmarks); only the
    default one loads the official checkpoint.
    """

    img_size: int = 518  # side of the square grid the DINOv2 position embedding is defined on
    patch_size: int = 14
    embed_dim: int = 1024  # aggregator width; heads see 2 * embed_dim (frame ++ global)
    depth: int = 24  # frame blocks = global blocks = depth
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_embed: str = "dinov2"  # "dinov2" (ViT with registers) or "conv" (one strided convolution)
    dino_depth: int = 24
    dino_num_heads: int = 16
    rope_base: float = 100.0
    layer_scale_init: float = 0.01
    # Heads.
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)  # aggregator layers the DPT heads read
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    track_features: int = 128
    track_hidden: int = 384
    track_depth: int = 6  # update-transformer depth (time and space)
    track_num_heads: int = 8
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    track_iterations: int = 4
    track_virtual_tokens: int = 64

    def __post_init__(self) -> None:
        if self.patch_embed not in ("dinov2", "conv"):
            raise ValueError(f"VGGTConfig.patch_embed must be 'dinov2' or 'conv', got {self.patch_embed!r}")
        if len(self.dpt_layers) != 4 or len(self.dpt_out_channels) != 4:
            raise ValueError("VGGTConfig.dpt_layers and dpt_out_channels need exactly 4 entries")
        bad = [i for i in self.dpt_layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"VGGTConfig.dpt_layers {bad} outside the aggregator's {self.depth} layers")
        if (self.embed_dim // self.num_heads) % 4:
            raise ValueError("VGGTConfig: the head dimension must be divisible by 4 for 2D RoPE")

    @property
    def retained_layers(self) -> tuple[int, ...]:
        """Aggregator layers some enabled head reads (the camera head reads the last)."""
        keep = set()
        if self.enable_depth or self.enable_point or self.enable_track:
            keep.update(self.dpt_layers)
        if self.enable_camera:
            keep.add(self.depth - 1)
        return tuple(sorted(keep))

    def with_heads(self, **flags: bool) -> "VGGTConfig":
        """Same architecture with some heads switched, e.g. ``with_heads(enable_track=False)``."""
        return replace(self, **flags)

    @staticmethod
    def small(**overrides) -> "VGGTConfig":
        """A ~2 M-parameter network with every part of VGGT-1B (DINOv2 encoder, all heads), for tests."""
        base = dict(
            img_size=56, embed_dim=64, depth=4, num_heads=4, dino_depth=2, dino_num_heads=4,
            camera_num_heads=4, dpt_layers=(0, 1, 2, 3), dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
            track_features=16, track_hidden=32, track_depth=2, track_num_heads=4, track_corr_levels=3,
            track_corr_radius=2, track_iterations=2, track_virtual_tokens=8,
        )
        base.update(overrides)
        return VGGTConfig(**base)
