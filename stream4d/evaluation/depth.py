"""Depth accuracy against exact (synthetic) ground truth, up to one scale.

Predicted depth has an arbitrary scale, so it is multiplied by
``median(gt) / median(pred)`` over the scored pixels before scoring:
once per sequence (``depth_metrics``) or once per frame
(``depth_metrics_per_frame``). Metrics follow the usual monocular-depth
definitions (Eigen et al. 2014):

- AbsRel = mean(|s * pred - gt| / gt)
- delta1 = fraction of pixels with max(s * pred / gt, gt / (s * pred)) < 1.25
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from stream4d.evaluation.trajectory import EvaluationError

DELTA_THRESHOLD = 1.25


@dataclass
class DepthMetrics:
    abs_rel: float
    delta1: float  # fraction in [0, 1]
    scale: float  # the median scale applied to the prediction
    num_pixels: int

    def to_dict(self) -> dict:
        return asdict(self)


def _stack(name: str, maps: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be [H, W] or [S, H, W], got shape {arr.shape}")
    return arr


def _inputs(pred, gt, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pred, gt [S, H, W] and the scored pixels [S, H, W] (valid in both, and in ``mask``)."""
    p = _stack("pred depth", pred)
    g = _stack("gt depth", gt)
    if p.shape != g.shape:
        raise ValueError(f"pred depth {p.shape} and gt depth {g.shape} differ in shape; "
                         "resample one to the other's resolution first")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(p) & np.isfinite(g) & (p > 0) & (g > 0)
    if mask is not None:
        mk = np.asarray(mask)
        mk = mk[None] if mk.ndim == 2 else mk
        if mk.shape != p.shape or mk.dtype != bool:
            raise ValueError(f"depth mask must be bool with shape {p.shape}, got {mk.dtype} {mk.shape}")
        valid &= mk
    return p, g, valid


def _score(p: np.ndarray, g: np.ndarray) -> DepthMetrics:
    """Median-scale 1-D arrays of positive depths ``p`` onto ``g`` and score them."""
    if p.size == 0:
        raise EvaluationError("no pixel has a valid depth in both prediction and ground truth")
    s = float(np.median(g) / np.median(p))
    sp = s * p
    abs_rel = float(np.mean(np.abs(sp - g) / g))
    delta1 = float(np.mean(np.maximum(sp / g, g / sp) < DELTA_THRESHOLD))
    return DepthMetrics(abs_rel=abs_rel, delta1=delta1, scale=s, num_pixels=int(p.size))


def depth_metrics(pred, gt, mask: np.ndarray | None = None) -> DepthMetrics:
    """AbsRel and delta1 over a sequence with one median scale.

    pred, gt: [S, H, W] (or [H, W]) z-depths, <= 0 / non-finite = invalid;
    mask: optional bool [S, H, W] of pixels to score (e.g. confident ones).
    """
    p, g, valid = _inputs(pred, gt, mask)
    return _score(p[valid], g[valid])


def depth_metrics_per_frame(pred, gt, mask: np.ndarray | None = None) -> list[DepthMetrics | None]:
    """Like ``depth_metrics`` but with a median scale per frame; None for frames with no valid pixel."""
    p, g, valid = _inputs(pred, gt, mask)
    return [_score(p[i][valid[i]], g[i][valid[i]]) if valid[i].any() else None for i in range(len(p))]


def confidence_mask(conf: np.ndarray, keep_fraction: float = 0.5) -> np.ndarray:
    """Bool mask [S, H, W] of the most confident ``keep_fraction`` of pixels with conf > 0.

    Confidence values are only ordered within one backend, so the cut is a quantile.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    c = _stack("conf", conf)
    positive = np.isfinite(c) & (c > 0)
    if not positive.any():
        return positive
    cut = np.quantile(c[positive], 1.0 - keep_fraction)
    return positive & (c >= cut)


def evaluate_depth(pred, gt, conf: np.ndarray | None = None, mask: np.ndarray | None = None,
                   keep_fraction: float = 0.5) -> dict:
    """Sequence metrics on all valid pixels and on confident ones, plus per-frame metrics.

    The confident pixels are ``mask`` if given, else ``confidence_mask(conf, keep_fraction)``.
    Returns {"all": DepthMetrics, "confident": DepthMetrics | None,
             "per_frame": [DepthMetrics | None], "per_frame_confident": [...] | None}.
    """
    if mask is None and conf is not None:
        mask = confidence_mask(conf, keep_fraction)
    out = {"all": depth_metrics(pred, gt), "per_frame": depth_metrics_per_frame(pred, gt),
           "confident": None, "per_frame_confident": None}
    if mask is not None:
        out["confident"] = depth_metrics(pred, gt, mask)
        out["per_frame_confident"] = depth_metrics_per_frame(pred, gt, mask)
    return out
