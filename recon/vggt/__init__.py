"""VGGT window model: our own implementation, state-dict compatible with the official VGGT-1B.

Layout mirrors the reference repository so a reader finds each part by name:
``models/`` (assembled network, aggregator, streaming state), ``heads/`` (camera,
DPT depth/point, track), ``layers/`` (attention, block, RoPE, DINOv2 patch
embedding, ...), ``utils/`` (pose encoding, geometry, checkpoints,
preprocessing) and ``backend.py`` (the :class:`stream4d.contracts.WindowModel`).

Streaming memory is bounded by a KV cache that talks to the model through
``layers.kv.KVCacheProtocol``; the pruned InfiniteVGGT cache lives in
``memory.kv_cache`` (recon never imports memory).
"""

from recon.vggt.models.config import VGGTConfig
from recon.vggt.models.vggt import VGGT

__all__ = ["VGGT", "VGGTConfig"]
