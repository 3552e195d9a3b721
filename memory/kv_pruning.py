"""InfiniteVGGT's KV-cache pruning policy, as plain tensor functions.

A layer's cache is pruned by key diversity: each candidate token is scored,
per head, by the cosine similarity of its (normalised, post-RoPE) key to the
mean of all candidates' normalised keys; the least similar (most diverse)
tokens are kept, in temporal order. Layers whose keys are diverse (low mean
score) get more of the total budget: ``softmax((1 - mean_score) / T) * total``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BUDGET_TEMPERATURE = 0.5


def key_similarity_scores(keys: Tensor) -> Tensor:
    """``keys [B, heads, N, D]`` -> cosine similarity ``[B, heads, N]`` of each key to the heads' mean key.

    Keys are L2-normalised first, so every token weighs the same in the mean. Computed in fp32.
    """
    unit = F.normalize(keys.float(), dim=-1)
    mean = F.normalize(unit.mean(dim=2, keepdim=True), dim=-1)  # [B, heads, 1, D]
    return (unit * mean).sum(-1)


def select_diverse(scores: Tensor, keep: int) -> Tensor:
    """Indices ``[B, heads, keep]`` of the ``keep`` lowest scores per head, ascending (temporal order)."""
    if keep < 0:
        raise ValueError(f"select_diverse: keep must be >= 0, got {keep}")
    keep = min(keep, scores.shape[-1])
    return torch.topk(scores, keep, dim=-1, largest=False).indices.sort(dim=-1).values


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x [B, heads, N, ...]`` at per-head token indices ``[B, heads, K]`` -> ``[B, heads, K, ...]``."""
    index = index.reshape(*index.shape, *([1] * (x.ndim - 3))).expand(*index.shape, *x.shape[3:])
    return torch.gather(x, 2, index)


def layer_budgets(mean_scores: Sequence[float] | Tensor, total_budget: int,
                  temperature: float = BUDGET_TEMPERATURE) -> list[int]:
    """Per-layer token budgets ``floor(softmax((1 - s_l) / T) * total)``; equal scores split evenly."""
    if total_budget < 0:
        raise ValueError(f"total KV budget must be >= 0 tokens, got {total_budget}")
    s = torch.as_tensor(mean_scores, dtype=torch.float64)
    share = torch.softmax((1.0 - s) / temperature, dim=0)
    return [int(b) for b in torch.floor(share * total_budget + 1e-6)]  # 1e-6: 1/L * L*n stays n
