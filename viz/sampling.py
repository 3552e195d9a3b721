"""Choosing what to draw: confidence masks and budgets that keep the viewer smooth."""

from __future__ import annotations

import numpy as np


def subsample_indices(n: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``budget`` of ``n`` items, uniformly at random (all when n <= budget)."""
    if n <= budget:
        return np.arange(n)
    return np.sort(rng.choice(n, size=budget, replace=False))


def confident_points(
    points: np.ndarray,  # [H, W, 3] world-frame point map
    conf: np.ndarray,  # [H, W] confidence, 0 = invalid
    colors: np.ndarray,  # [H, W, 3] uint8
    quantile: float,
    budget: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Finite points whose confidence is positive and at least the ``quantile`` of the valid ones.

    Returns positions ``[M, 3]`` float32 and colours ``[M, 3]`` uint8 with ``M <= budget``.
    Only the order of confidences is used (backends differ in scale).
    """
    pts = points.reshape(-1, 3)
    c = conf.reshape(-1)
    valid = np.isfinite(pts).all(axis=1) & np.isfinite(c) & (c > 0)
    if quantile > 0 and valid.any():
        valid &= c >= np.quantile(c[valid], quantile)
    idx = np.flatnonzero(valid)
    idx = idx[subsample_indices(idx.size, budget, rng)]
    return pts[idx].astype(np.float32), colors.reshape(-1, 3)[idx]


def decimate_depth(
    depth: np.ndarray,  # [H, W] z-depth
    conf: np.ndarray,  # [H, W] confidence
    K: np.ndarray,  # [3, 3] pixels of the [H, W] image
    max_side: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every k-th pixel each way (the smallest k with both sides <= ``max_side``) and the matching
    intrinsics: pixel (i, j) of the result is pixel (k i, k j) of the input, so K scales by 1/k
    (centres at integer pixels). Picking pixels, not averaging, keeps depth edges and zeros exact."""
    H, W = depth.shape
    k = 1 if max_side is None else max(1, -(-max(H, W) // max_side))
    if k == 1:
        return depth, conf, K
    scale = np.diag([1.0 / k, 1.0 / k, 1.0])
    return depth[::k, ::k], conf[::k, ::k], scale @ K


def thin_polyline(points: np.ndarray, budget: int) -> np.ndarray:
    """At most ``budget`` vertices of ``points [N, 3]``, evenly spaced, always keeping the last."""
    n = len(points)
    if n <= budget:
        return points
    keep = np.unique(np.linspace(0, n - 1, budget).round().astype(np.int64))
    return points[keep]
