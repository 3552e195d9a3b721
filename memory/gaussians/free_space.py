"""Free-space evidence from recent views: what a static scene cannot explain.

A view that saw a surface at depth ``d`` along a ray also saw the ray empty in
front of it. A point that now lies in that empty stretch (in front of what the
earlier view saw, beyond a tolerance) was not there then: it belongs to
something that moved. The depth maps are min-pooled over 3x3 pixels so that a
point on the near side of a depth edge, projected one pixel off, is not taken
for a violation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from stream4d.geometry import invert_se3


def min_pool(depth: np.ndarray, radius: int = 1) -> np.ndarray:
    """Smallest valid depth within ``radius`` pixels ``[H, W]``; 0 where no neighbour is valid."""
    d = np.where(depth > 0, depth, np.inf).astype(np.float32)
    if radius > 0:
        d = cv2.erode(d, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return np.where(np.isfinite(d), d, 0.0).astype(np.float32)


def depth_edges(depth: np.ndarray, rel_tol: float, radius: int = 1) -> np.ndarray:
    """bool ``[H, W]``: pixels within ``radius`` of a depth jump above ``rel_tol`` or of unknown depth."""
    d = depth.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    lo = cv2.erode(np.where(d > 0, d, 0.0).astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(d, kernel, borderType=cv2.BORDER_REPLICATE)
    edge = (d <= 0) | (lo <= 0) | (hi > d * (1.0 + rel_tol)) | (lo < d * (1.0 - rel_tol))
    if radius > 1:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((2 * radius - 1, 2 * radius - 1), np.uint8)) > 0
    return edge


def isolated_pixels(depth: np.ndarray, rel_tol: float) -> np.ndarray:
    """bool ``[H, W]``: valid pixels with no 4-neighbour within ``rel_tol`` of their depth
    (slivers at depth edges: limbs, flying pixels)."""
    H, W = depth.shape
    d = np.pad(depth, 1)
    lonely = depth > 0
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = d[1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx]
        lonely &= ~((nb > 0) & (np.abs(nb - depth) <= rel_tol * depth))
    return lonely


@dataclass
class RecentView:
    depth_min: np.ndarray  # float32 [H, W], 3x3 min-pooled z-depth, 0 = unknown
    w2c: np.ndarray  # [4, 4]
    K: np.ndarray  # [3, 3]
    image: np.ndarray  # uint8 [H, W, 3], kept for photometric refinement
    c2w: np.ndarray  # [4, 4]
    view_id: int = -1  # the cache's view counter when it was added


class ViewHistory:
    """The last ``size`` views' depth maps and poses."""

    def __init__(self, size: int):
        self.views: deque[RecentView] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.views)

    def clear(self) -> None:
        self.views.clear()

    def push(self, depth: np.ndarray, c2w: np.ndarray, K: np.ndarray, image: np.ndarray, view_id: int = -1) -> None:
        self.views.append(RecentView(min_pool(depth), invert_se3(c2w), np.asarray(K, np.float64),
                                     image, np.asarray(c2w, np.float64), view_id))

    def inside(self, points: np.ndarray, view_ids: np.ndarray, margin: float) -> np.ndarray:
        """Whether each point ``[M, 3]`` projects at least ``margin`` px inside the image of the
        recent view ``view_ids [M]``; False when that view is no longer kept."""
        ok = np.zeros(points.shape[0], bool)
        for view in self.views:
            sel = np.flatnonzero(view_ids == view.view_id)
            if sel.size == 0:
                continue
            H, W = view.depth_min.shape
            pc = points[sel] @ view.w2c[:3, :3].T + view.w2c[:3, 3]
            z = pc[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = view.K[0, 0] * pc[:, 0] / z + view.K[0, 2]
                v = view.K[1, 1] * pc[:, 1] / z + view.K[1, 2]
            ok[sel] = ((z > 0) & (u >= margin - 0.5) & (u <= W - 0.5 - margin)
                       & (v >= margin - 0.5) & (v <= H - 0.5 - margin))
        return ok

    def votes(self, points: np.ndarray, rel_tol: float, abs_tol: float) -> tuple[np.ndarray, np.ndarray]:
        """For world points ``[M, 3]``: how many recent views saw through them, and how many saw their pixel.

        Returns ``(violations [M], seen [M])`` as int arrays.
        """
        violations = np.zeros(points.shape[0], np.int32)
        seen = np.zeros(points.shape[0], np.int32)
        for view in self.views:
            H, W = view.depth_min.shape
            pc = points @ view.w2c[:3, :3].T + view.w2c[:3, 3]
            z = pc[:, 2]
            front = z > 1e-9
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.rint(view.K[0, 0] * pc[:, 0] / z + view.K[0, 2])
                v = np.rint(view.K[1, 1] * pc[:, 1] / z + view.K[1, 2])
            inside = front & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            idx = np.flatnonzero(inside)
            d = view.depth_min.reshape(-1)[v[idx].astype(np.int64) * W + u[idx].astype(np.int64)]
            known = d > 0
            idx, d = idx[known], d[known]
            seen[idx] += 1
            violations[idx] += z[idx] < d * (1.0 - rel_tol) - abs_tol
        return violations, seen
