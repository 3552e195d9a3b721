"""Depth from a window's triangulated tracks, for views dense flow could not follow.

Dense depth triangulates optical flow, which follows small baselines only. A
photo set taken far apart (a few shots around a room) is still posed from its
feature tracks, but its flow fails and its depth maps come out empty, so the
map would be empty although hundreds of points were triangulated. Such views
get those points instead: each point's depth is written over a small square
around the pixel where the view observed it, nearest point in front, wherever
dense depth left the pixel unknown. The square is what lets a point survive
the map's sliver test (a depth pixel must agree with a neighbour) and its
decimation (the Gaussian cache reads every k-th pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream4d.contracts import SparseTracks


@dataclass
class SparseDepthConfig:
    below_share: float = 0.02  # a view whose confident dense pixels are fewer than this share gets them
    patch_px: int = 2  # half-width of the square each point fills, model pixels
    conf: float = 0.5  # a tracked point is seen by at least two views: as sure as two agreeing flows


def fill_sparse_depth(depth: np.ndarray, conf: np.ndarray, sparse: SparseTracks, w2c: list[np.ndarray],
                      cfg: SparseDepthConfig) -> list[int]:
    """Write the tracks ``sparse`` observed in views with too little dense depth into ``depth`` and
    ``conf`` (``[S, H, W]``, z-depth in the window's units, changed in place) where they are 0.
    ``w2c[k]`` ``[4, 4]`` is view k's world-to-camera in the frame of ``sparse.points``.
    Returns the views that were filled."""
    S, H, W = depth.shape
    filled = []
    r = cfg.patch_px
    for k in range(S):
        if (conf[k] > 0).mean() >= cfg.below_share:
            continue
        rows = np.flatnonzero(sparse.obs_view == k)
        if not len(rows):
            continue
        X = sparse.points[sparse.obs_point[rows]]
        z = X @ w2c[k][2, :3] + w2c[k][2, 3]
        xy = np.rint(sparse.obs_xy[rows]).astype(np.int64)
        ok = (z > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
        if not ok.any():
            continue
        free = conf[k] <= 0
        patch_z = np.zeros((H, W), np.float32)
        for i in np.argsort(-z[ok]):  # far first, so a nearer point's square ends on top
            x, y = xy[ok][i]
            ys, xs = slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)
            patch_z[ys, xs] = z[ok][i]
        put = free & (patch_z > 0)
        depth[k][put] = patch_z[put]
        conf[k][put] = cfg.conf
        filled.append(k)
    return filled
