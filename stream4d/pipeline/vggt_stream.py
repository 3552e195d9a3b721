"""The VGGT window model with bounded streaming memory: ``recon.vggt`` wired to ``PrunedKVCache``.

recon must not import memory, and the two stages meet only in the orchestration, so
the wiring lives here: the model talks to any cache through
``recon.vggt.layers.kv.KVCacheProtocol`` and ``recon.vggt.backend.build_vggt_backend``
takes cache factories.
"""

from __future__ import annotations

from pathlib import Path

from memory.kv_cache import DEFAULT_TOTAL_BUDGET_TOKENS, PrunedKVCache
from recon.vggt.backend import VGGTBackend, build_vggt_backend
from recon.vggt.models.vggt import VGGT
from recon.vggt.utils.checkpoint import CheckpointError

__all__ = ["load_vggt_backend", "CheckpointError", "DEFAULT_CAMERA_BUDGET_FRAMES"]

DEFAULT_CAMERA_BUDGET_FRAMES = 256


def load_vggt_backend(weights: str | Path, device: str | None = None,
                      total_budget_tokens: int = DEFAULT_TOTAL_BUDGET_TOKENS, streaming: bool = True, *,
                      camera_budget_frames: int = DEFAULT_CAMERA_BUDGET_FRAMES, adaptive: bool = True,
                      **kw) -> VGGTBackend:
    """The VGGT window model with bounded streaming memory.

    Args:
        weights: ``model.pt`` / ``model.safetensors`` (official VGGT-1B), a directory holding one,
            or ``hf:facebook/VGGT-1B`` (local Hugging Face cache only; never downloads).
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available). fp32 on CPU,
            bf16 autocast on CUDA.
        total_budget_tokens: KV tokens over the aggregator's global layers together
            (default 1.2 M, about 48 frames of 518x392 per layer).
        streaming: causal streaming across windows (bounded by the pruned cache) or
            independent windows.
        camera_budget_frames: camera-trunk tokens kept per trunk layer (one per frame).
        adaptive: InfiniteVGGT's adaptive layer budgets (else an even split).
        **kw: ``recon.vggt.backend.build_vggt_backend`` options (``model_config``,
            ``image_width``, ``points_source``, ``cuda_dtype``).

    Raises ``CheckpointError`` (from ``recon.vggt.utils.checkpoint``) for a missing,
    truncated or mismatched checkpoint, naming the wrong keys/shapes.
    """

    def kv_cache(model: VGGT) -> PrunedKVCache:
        return PrunedKVCache(model.config.depth, total_budget_tokens, adaptive=adaptive)

    def camera_cache(model: VGGT) -> PrunedKVCache:
        layers = model.config.camera_iterations * model.config.camera_trunk_depth
        return PrunedKVCache(layers, camera_budget_frames * layers, adaptive=False)

    return build_vggt_backend(weights, device, streaming, kv_cache_factory=kv_cache,
                              camera_cache_factory=camera_cache, **kw)
