"""How attention layers talk to a key/value cache when frames are streamed.

Streaming (StreamVGGT): every global-attention layer attends over the keys and
values of earlier frames plus the current ones. The model never owns that
memory: it hands each layer's new keys/values to a cache through
:class:`KVCacheProtocol`. ``UnboundedKVCache`` keeps everything (exact
block-causal streaming); ``memory.kv_cache.PrunedKVCache`` bounds it
(InfiniteVGGT).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class KVCacheProtocol(Protocol):
    """Per-layer store of past keys/values.

    ``extend`` receives the current step's keys/values of one layer (already
    normalised and rotated: exactly what attention consumes) and returns what
    the current queries attend over: the retained past followed by all new
    tokens, in that order. The cache may then forget part of it (pruning)
    before the next step, but never the tokens it is returning.
    """

    def extend(self, layer_idx: int, k: Tensor, v: Tensor, frame_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``k, v [B, heads, N_new, D]``, ``frame_ids`` int64 ``[N_new]`` (stream position of each token).

        Returns ``k_all, v_all [B, heads, N_past + N_new, D]``.
        """
        ...

    def reset(self) -> None:
        """Forget every layer (a new stream starts)."""
        ...


class UnboundedKVCache:
    """Keeps every token of every frame: streaming equals one block-causal forward exactly.

    Memory grows linearly with the stream; use it for short streams and parity
    checks, and ``memory.kv_cache.PrunedKVCache`` for endless ones.
    """

    def __init__(self) -> None:
        self._k: dict[int, Tensor] = {}
        self._v: dict[int, Tensor] = {}

    def extend(self, layer_idx: int, k: Tensor, v: Tensor, frame_ids: Tensor) -> tuple[Tensor, Tensor]:
        if layer_idx in self._k:
            k = torch.cat([self._k[layer_idx], k], dim=2)
            v = torch.cat([self._v[layer_idx], v], dim=2)
        self._k[layer_idx], self._v[layer_idx] = k, v
        return k, v

    def reset(self) -> None:
        self._k.clear()
        self._v.clear()

    def num_tokens(self, layer_idx: int) -> int:
        """Tokens held for one layer."""
        return int(self._k[layer_idx].shape[2]) if layer_idx in self._k else 0

    def tensors(self, layer_idx: int) -> tuple[Tensor, Tensor]:
        """The keys and values ``[B, heads, N, D]`` held for one layer."""
        return self._k[layer_idx], self._v[layer_idx]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self._k, self._v) for t in d.values())


def layer_hook(cache: KVCacheProtocol, layer_idx: int, frame_ids: Tensor):
    """The ``kv_hook`` an attention layer calls: extends ``cache`` layer ``layer_idx``."""

    def hook(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return cache.extend(layer_idx, k, v, frame_ids)

    return hook
