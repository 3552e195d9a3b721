"""Layer-wise scale alignment (LASER, arXiv 2512.13680).

After the global Sim(3), the layers of a feed-forward depth map can still be
off by different factors (a foreground object 10 % too near, the background
5 % too far). For each layer of the new window this finds a depth scale
relative to the global one:

1. On every frame both windows share, link the earlier window's layers to
   the new window's layers whose masks overlap with IoU >= ``cross_iou``; a
   link's scale is a robust depth ratio over the two layers' intersection.
2. Walk forward through the new window's frames: a layer also receives the
   scale of every layer of the previous frame it is linked to (IoU >=
   ``link_iou``), weighted by that IoU. Its scale is the IoU-weighted mean of
   all it received; a layer nothing reaches keeps 1 (the global scale).
3. Each pixel's depth (and camera-frame point) is multiplied by its layer's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from align.sim3 import robust_scale


@dataclass(frozen=True)
class Links:
    """Pairs of segments of two label maps that overlap enough."""

    a: np.ndarray  # int64 [P], segment id in the first map
    b: np.ndarray  # int64 [P], segment id in the second map
    iou: np.ndarray  # float64 [P]


def segment_links(
    labels_a: np.ndarray,  # int [H, W], ids 0..A-1
    labels_b: np.ndarray,  # int [H, W], ids 0..B-1
    min_iou: float,
) -> Links:
    """Every pair of segments whose masks have IoU >= ``min_iou``."""
    if labels_a.shape != labels_b.shape:
        raise ValueError(f"label maps differ in shape: {labels_a.shape} vs {labels_b.shape}")
    na, nb = int(labels_a.max()) + 1, int(labels_b.max()) + 1
    code = labels_a.ravel().astype(np.int64) * nb + labels_b.ravel()
    inter = np.bincount(code, minlength=na * nb).reshape(na, nb).astype(np.float64)
    union = inter.sum(axis=1, keepdims=True) + inter.sum(axis=0, keepdims=True) - inter
    iou = inter / np.maximum(union, 1.0)
    a, b = np.nonzero(iou >= max(min_iou, 1e-12))  # a zero IoU is never a link
    return Links(a.astype(np.int64), b.astype(np.int64), iou[a, b])


def cross_window_seeds(
    world_labels: np.ndarray,  # int [H, W], earlier window's layers of a shared frame
    world_depth: np.ndarray,  # [H, W], world scale (its layer scales applied)
    window_labels: np.ndarray,  # int [H, W], new window's layers of the same frame
    window_depth: np.ndarray,  # [H, W], after the global Sim(3) scale
    mask: np.ndarray,  # bool [H, W], confident in both windows
    min_iou: float = 0.3,
    min_pixels: int = 20,
    min_fraction: float = 0.05,
    iters: int = 10,
    tol: float = 0.05,
    scale_limit: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # segment ids [P], scales [P], weights [P]
    """Scales the new window's layers receive on one shared frame.

    A link gives nothing when its intersection has fewer confident pixels
    than ``min_pixels`` or than ``min_fraction`` of the new window's layer (a
    handful of trusted pixels must not rescale a layer covering half the
    image), or when its scale is outside [1/scale_limit, scale_limit] (taken
    for a mismatched link).
    """
    links = segment_links(world_labels, window_labels, min_iou)
    nb = int(window_labels.max()) + 1
    layer_size = np.bincount(window_labels.ravel(), minlength=nb)
    use = mask & (world_depth > 0) & (window_depth > 0)
    code = world_labels[use].astype(np.int64) * nb + window_labels[use]
    order = np.argsort(code, kind="stable")
    code_sorted = code[order]
    src = window_depth[use][order]
    dst = world_depth[use][order]
    link_code = links.a * nb + links.b
    start = np.searchsorted(code_sorted, link_code, side="left")
    stop = np.searchsorted(code_sorted, link_code, side="right")
    segs, scales, weights = [], [], []
    for k in range(len(link_code)):
        if stop[k] - start[k] < max(min_pixels, min_fraction * layer_size[links.b[k]]):
            continue
        s = robust_scale(src[start[k]:stop[k]], dst[start[k]:stop[k]], iters=iters, tol=tol).scale
        if 1.0 / scale_limit <= s <= scale_limit:
            segs.append(links.b[k])
            scales.append(s)
            weights.append(links.iou[k])
    return np.asarray(segs, np.int64), np.asarray(scales, np.float64), np.asarray(weights, np.float64)


@dataclass
class LayerScales:
    """Per-pixel layer scales of a window and how much of it they reached."""

    scale_map: np.ndarray  # float32 [S, H, W], 1 where no scale arrived
    segment_scales: list[np.ndarray]  # per frame: float64 [L_k], NaN where no scale arrived
    reached_fraction: float  # share of the window's pixels whose layer received a scale


def propagate_scales(
    labels: np.ndarray,  # int [S, H, W], the window's layers
    seeds: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],  # frame -> (segment, scale, weight)
    link_iou: float = 0.3,
) -> LayerScales:
    """Carry the seeded layer scales forward through the window's frames (module docstring, step 2)."""
    S = labels.shape[0]
    scale_map = np.ones(labels.shape, np.float32)
    per_frame: list[np.ndarray] = []
    reached = 0
    previous: np.ndarray | None = None
    for k in range(S):
        n = int(labels[k].max()) + 1
        num = np.zeros(n)
        den = np.zeros(n)
        if k in seeds:
            seg, scale, weight = seeds[k]
            np.add.at(num, seg, scale * weight)
            np.add.at(den, seg, weight)
        if previous is not None:
            links = segment_links(labels[k - 1], labels[k], link_iou)
            known = ~np.isnan(previous[links.a])
            np.add.at(num, links.b[known], previous[links.a[known]] * links.iou[known])
            np.add.at(den, links.b[known], links.iou[known])
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(den > 0, num / den, np.nan)
        per_frame.append(value)
        scale_map[k] = np.where(np.isnan(value), 1.0, value)[labels[k]]
        reached += int((~np.isnan(value))[labels[k]].sum())
        previous = value
    return LayerScales(scale_map, per_frame, reached / max(labels.size, 1))
