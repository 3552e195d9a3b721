"""What a streamed VGGT carries from one step to the next."""

from __future__ import annotations

from dataclasses import dataclass, field

from recon.vggt.layers.kv import KVCacheProtocol, UnboundedKVCache


@dataclass
class StreamState:
    """Caches and frame counter of one stream (StreamVGGT-style causal inference).

    ``kv_cache`` serves the aggregator's global-attention layers (layer ``i`` =
    global block ``i``); ``camera_cache`` the camera head's trunk (layer
    ``iteration * trunk_depth + block``). Frame attention and the dense heads are
    per frame and keep nothing. With the default unbounded caches, streaming
    frames one (or a few) at a time reproduces one block-causal forward over
    all of them; pass ``memory.kv_cache.PrunedKVCache`` instances to bound memory.
    """

    kv_cache: KVCacheProtocol = field(default_factory=UnboundedKVCache)
    camera_cache: KVCacheProtocol = field(default_factory=UnboundedKVCache)
    frames_seen: int = 0

    def reset(self) -> None:
        self.kv_cache.reset()
        self.camera_cache.reset()
        self.frames_seen = 0
