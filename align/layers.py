"""Depth layers: Felzenszwalb superpixels on a depth map, merged by mean depth.

LASER (arXiv 2512.13680) segments each predicted depth map into layers whose
scale may be wrong independently of the others. The superpixel parameters
(scale 300, sigma 1.1, min size 500) are LASER's at about 518 px width; the
minimum size here follows the image's pixel count so a small model
resolution gets proportionally small layers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import felzenszwalb

# Pixel count LASER's min size was chosen at (518 x 392, a 4:3 frame at 518 px width).
REFERENCE_PIXELS = 518 * 392


def scaled_min_size(min_size: int, height: int, width: int) -> int:
    """``min_size`` (given at REFERENCE_PIXELS) for an image of ``height x width``."""
    return max(1, int(round(min_size * height * width / REFERENCE_PIXELS)))


def confident_depth_range(
    depth: np.ndarray,  # [S, H, W]
    mask: np.ndarray,  # bool [S, H, W]
    low: float = 1.0,
    high: float = 99.0,
) -> float:
    """Spread of the window's confident depths (``high`` - ``low`` percentile: one stray pixel must not set it)."""
    values = depth[mask & (depth > 0)]
    if values.size == 0:
        return 0.0
    lo, hi = np.percentile(values, [low, high])
    return float(hi - lo)


def merge_adjacent_regions(
    labels: np.ndarray,  # int [H, W], any non-negative ids
    depth: np.ndarray,  # [H, W]
    threshold: float,
    valid: np.ndarray | None = None,  # bool [H, W], pixels whose depth is trusted
) -> np.ndarray:  # int32 [H, W], ids 0..L-1
    """Join 4-adjacent regions whose mean depths differ by less than ``threshold`` (transitively).

    Mean depths use ``valid`` pixels only (all positive depths when None); a
    region with no such pixel joins nothing.
    """
    if labels.shape != depth.shape:
        raise ValueError(f"labels {labels.shape} and depth {depth.shape} must have the same shape")
    ids, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(labels.shape)
    n = len(ids)
    if n == 1:
        return np.zeros(labels.shape, np.int32)
    use = (depth > 0) if valid is None else (valid & (depth > 0))
    counts = np.bincount(compact[use], minlength=n)
    sums = np.bincount(compact[use], weights=depth[use], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts  # NaN for regions without trusted depth

    pairs = [
        np.stack([compact[:, :-1].ravel(), compact[:, 1:].ravel()]),  # right neighbours
        np.stack([compact[:-1, :].ravel(), compact[1:, :].ravel()]),  # lower neighbours
    ]
    a, b = np.concatenate(pairs, axis=1)
    border = a != b
    a, b = a[border], b[border]
    close = np.abs(mean[a] - mean[b]) < threshold  # NaN compares False
    graph = coo_matrix((np.ones(int(close.sum())), (a[close], b[close])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    return group[compact].astype(np.int32)


def segment_depth(
    depth: np.ndarray,  # [H, W]
    merge_threshold: float,
    normaliser: float,
    valid: np.ndarray | None = None,  # bool [H, W]
    scale: float = 300.0,
    sigma: float = 1.1,
    min_size: int = 500,
) -> np.ndarray:  # int32 [H, W], layer ids 0..L-1
    """Layers of one depth map.

    The depth is divided by ``normaliser`` (a typical depth of the window)
    before Felzenszwalb so the superpixels do not depend on the window's
    arbitrary scale. ``min_size`` is used as given (see :func:`scaled_min_size`).
    """
    if depth.ndim != 2:
        raise ValueError(f"segment_depth needs one [H, W] depth map, got {depth.shape}")
    if not normaliser > 0:
        raise ValueError(f"segment_depth needs a positive depth normaliser, got {normaliser}")
    image = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64) / normaliser
    superpixels = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=None)
    return merge_adjacent_regions(superpixels, depth, merge_threshold, valid)


def layer_thresholds(
    depth: np.ndarray,  # [S, H, W]
    mask: np.ndarray,  # bool [S, H, W], confident pixels
    merge_fraction: float = 0.1,
) -> tuple[float, float]:
    """A window's typical depth (Felzenszwalb's normaliser) and its layer merge threshold
    (``merge_fraction`` x the confident depth range), from every 4th row and column: these are
    robust statistics of millions of pixels, and a quarter of a quarter gives the same numbers."""
    depth, mask = depth[:, ::4, ::4], mask[:, ::4, ::4]
    confident = depth[mask & (depth > 0)]
    positive = depth[depth > 0]
    typical = np.median(confident) if confident.size else (np.median(positive) if positive.size else 1.0)
    return float(typical), merge_fraction * confident_depth_range(depth, mask)


def segment_window(
    depth: np.ndarray,  # [S, H, W]
    mask: np.ndarray,  # bool [S, H, W], confident pixels
    frames: np.ndarray | None = None,  # int [F], which frames to segment (all when None)
    merge_fraction: float = 0.1,
    scale: float = 300.0,
    sigma: float = 1.1,
    min_size: int = 500,
    max_side: int | None = None,
    thresholds: tuple[float, float] | None = None,
    threads: int = 2,
) -> np.ndarray:  # int32 [F, H, W]
    """Layers of a window's frames; the merge threshold is ``merge_fraction`` x the window's confident depth range.

    ``thresholds`` (typical depth, merge threshold) are :func:`layer_thresholds`
    of ``depth`` unless given (a caller segmenting some frames later passes the
    whole window's). ``min_size`` is given at REFERENCE_PIXELS and scaled to
    the window's resolution. With ``max_side`` smaller than the frames,
    segmentation runs on a copy decimated by ``f`` (longest side <= max_side;
    Felzenszwalb's scale times ``f^2`` and sigma times ``f``, which keeps its
    segments) and the labels are brought back by nearest neighbour: layers are
    large regions, and Felzenszwalb's cost grows with the pixel count. Frames
    are segmented on ``threads`` threads (scikit-image releases the GIL).
    """
    S, H, W = depth.shape
    frames = np.arange(S) if frames is None else np.asarray(frames, np.int64)
    typical, threshold = thresholds if thresholds is not None else layer_thresholds(depth, mask, merge_fraction)
    f = 1.0 if max_side is None else min(1.0, max_side / max(H, W))
    h, w = (H, W) if f == 1.0 else (max(1, round(H * f)), max(1, round(W * f)))
    size = scaled_min_size(min_size, h, w)
    out = np.zeros((len(frames), H, W), np.int32)

    def segment(k: int) -> None:
        i = frames[k]
        if f == 1.0:
            out[k] = segment_depth(depth[i], threshold, typical, mask[i], scale, sigma, size)
            return
        small_depth = cv2.resize(depth[i], (w, h), interpolation=cv2.INTER_NEAREST)
        small_mask = cv2.resize(mask[i].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        small = segment_depth(small_depth, threshold, typical, small_mask, scale * f * f, sigma * f, size)
        out[k] = cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST)

    if threads > 1 and len(frames) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(segment, range(len(frames))))
    else:
        for k in range(len(frames)):
            segment(k)
    return out
