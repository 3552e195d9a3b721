"""Streaming KV cache with InfiniteVGGT pruning (used by the VGGT backend through ``stream4d.pipeline.vggt_stream``).

``PrunedKVCache`` implements ``recon.vggt.layers.kv.KVCacheProtocol``: the
VGGT model hands it each global layer's keys/values per step and attends over
what it returns (everything retained plus the new tokens); afterwards the
cache prunes itself back to the layer's budget (see ``memory.kv_pruning``).
The first frame's tokens (the anchor) are never evicted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from memory.kv_pruning import BUDGET_TEMPERATURE, gather_tokens, key_similarity_scores, layer_budgets, select_diverse

__all__ = ["PrunedKVCache", "DEFAULT_TOTAL_BUDGET_TOKENS"]

# ~48 frames of 518x392 (1041 tokens each) in each of VGGT-1B's 24 global layers.
DEFAULT_TOTAL_BUDGET_TOKENS = 1_200_000


@dataclass
class _Layer:
    k: Tensor  # [B, heads, N, D]: anchor tokens first, then retained tokens in temporal order
    v: Tensor  # [B, heads, N, D]
    frames: Tensor  # int64 [B, heads, N]: stream frame of each token (heads retain different sets)
    num_anchor: int


class PrunedKVCache:
    """Bounded per-layer KV cache (InfiniteVGGT, Yuan et al. 2025).

    Args:
        num_layers: attention layers served (VGGT-1B: 24 global layers).
        total_budget_tokens: tokens kept over all layers together (per batch item and head).
        adaptive: split the budget by ``softmax((1 - mean_score_l) / temperature)``,
            refreshed at the start of every step (the first ``extend`` of layer 0) from
            each layer's last pruning scores, uniform until a layer has pruned. ``False``:
            an even split.
        temperature: softmax temperature of the adaptive split (0.5).

    A layer is pruned when it holds more than its budget after a step: its
    non-anchor tokens are scored per head (``memory.kv_pruning``) and the most
    diverse ``budget - anchor`` are kept. Anchor tokens (all tokens of the first
    frame after a reset) are never evicted, even beyond the budget.
    """

    def __init__(self, num_layers: int, total_budget_tokens: int = DEFAULT_TOTAL_BUDGET_TOKENS,
                 adaptive: bool = True, temperature: float = BUDGET_TEMPERATURE) -> None:
        if num_layers < 1:
            raise ValueError(f"PrunedKVCache needs at least one layer, got {num_layers}")
        if total_budget_tokens < 0:
            raise ValueError(f"total_budget_tokens must be >= 0, got {total_budget_tokens}")
        self.num_layers = num_layers
        self.total_budget_tokens = int(total_budget_tokens)
        self.adaptive = adaptive
        self.temperature = temperature
        self.reset()

    def reset(self) -> None:
        self._layers: dict[int, _Layer] = {}
        self._anchor_frame: int | None = None
        self.mean_scores = [0.0] * self.num_layers  # last pruning's mean similarity per layer
        self.budgets = layer_budgets(self.mean_scores, self.total_budget_tokens, self.temperature)
        self.prunings = 0

    def _refresh_budgets(self) -> None:
        scores = self.mean_scores if self.adaptive else [0.0] * self.num_layers
        self.budgets = layer_budgets(scores, self.total_budget_tokens, self.temperature)

    def extend(self, layer_idx: int, k: Tensor, v: Tensor, frame_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Append a step's ``k, v [B, heads, N_new, D]`` (tokens of frames ``frame_ids [N_new]``);
        return retained past + new for attention, then prune the layer to its budget."""
        if not 0 <= layer_idx < self.num_layers:
            raise IndexError(f"layer {layer_idx} outside this cache's {self.num_layers} layers")
        if layer_idx == 0:
            self._refresh_budgets()
        if self._anchor_frame is None:
            self._anchor_frame = int(frame_ids[0])
        B, H, N_new, _ = k.shape
        new_frames = frame_ids.to(k.device).view(1, 1, N_new).expand(B, H, N_new)
        layer = self._layers.get(layer_idx)
        if layer is None:
            num_anchor = int((frame_ids == self._anchor_frame).sum())
            layer = _Layer(k, v, new_frames, num_anchor)
        else:
            layer = _Layer(torch.cat([layer.k, k], dim=2), torch.cat([layer.v, v], dim=2),
                           torch.cat([layer.frames, new_frames], dim=2), layer.num_anchor)
        k_all, v_all = layer.k, layer.v
        self._layers[layer_idx] = self._prune(layer_idx, layer)
        return k_all, v_all

    def _prune(self, layer_idx: int, layer: _Layer) -> _Layer:
        budget = self.budgets[layer_idx]
        n_a = layer.num_anchor
        if layer.k.shape[2] <= max(budget, n_a):
            return layer
        scores = key_similarity_scores(layer.k[:, :, n_a:])  # [B, heads, N_candidates]
        keep = select_diverse(scores, max(budget - n_a, 0))
        self.mean_scores[layer_idx] = float(scores.mean())
        self.prunings += 1

        def pruned(x: Tensor) -> Tensor:
            return torch.cat([x[:, :, :n_a], gather_tokens(x[:, :, n_a:], keep)], dim=2)

        return _Layer(pruned(layer.k), pruned(layer.v), pruned(layer.frames), n_a)

    def num_tokens(self, layer_idx: int) -> int:
        """Tokens (per head) held for one layer."""
        layer = self._layers.get(layer_idx)
        return 0 if layer is None else int(layer.k.shape[2])

    def retained_frames(self, layer_idx: int) -> Tensor:
        """Stream frame of every held token of one layer, int64 ``[B, heads, N]``."""
        layer = self._layers.get(layer_idx)
        return torch.zeros(0, dtype=torch.long) if layer is None else layer.frames

    def num_anchor_tokens(self, layer_idx: int) -> int:
        layer = self._layers.get(layer_idx)
        return 0 if layer is None else layer.num_anchor

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens(i) for i in self._layers)

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held."""
        return sum(t.numel() * t.element_size() for layer in self._layers.values() for t in (layer.k, layer.v))

    def summary(self) -> dict:
        """JSON-friendly state for diagnostics."""
        return {"total_tokens": self.total_tokens, "total_budget_tokens": self.total_budget_tokens,
                "megabytes": round(self.nbytes / 2 ** 20, 3), "prunings": self.prunings,
                "budgets": list(self.budgets), "tokens": [self.num_tokens(i) for i in range(self.num_layers)]}
