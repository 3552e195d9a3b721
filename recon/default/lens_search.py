"""Growing a window through candidate lenses when its pinhole solve has read a lens as a wide view.

A camera that slides sideways or drives straight leaves its focal length free: a focal s f with a
radial coefficient s^2 k1 and depths stretched by s reproject the same. A window of such a camera
behind a strong barrel lens, solved as a pinhole, turns its views to explain the bend (degrees over
a window) and reads the focal length at a field of view no rectilinear lens has; the lens pass that
starts from that structure falls into the opposite basin (docs/benchmarks.md, "Growing the
barrel-lens window through candidate lenses"). Grown through a candidate lens from the start, the
window lands in the right basin from candidates well off the truth, and a free adjustment of the
coefficient finishes it (``recon.default.sfm.WindowSfm.grow_k1``).

Candidates are barrel bends at the image corner, ``bend = -k1 r^2`` with ``r`` the corner's distance
from the centre in units of the focal length: under the trade above it does not depend on the
focal, so one stream's lens is one bend whatever focal its windows are held at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LensSearchConfig:
    # Corner bends tried (empty: no search). Grown through 0.1, the street walk's window reaches its
    # lens's 0.23; through 0.05 it does not (docs/benchmarks.md). Once a stream has taken a lens, its
    # later windows try only that lens's bend.
    bends: tuple[float, ...] = (0.1, 0.2)
    # A lens is taken when its window's median reprojection error is at most this share of the
    # pinhole's: the free coefficient lowers it a little on any camera, a lens the camera has
    # roughly halves it.
    max_median_ratio: float = 0.8


def corner_radius2(K: np.ndarray, size: tuple[int, int]) -> float:
    """Squared distance of the image corner from ``K``'s principal point, in units of its focal length,
    for an image of ``size`` (W, H) px."""
    W, H = size
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    return float((max(cx, W - 1 - cx) ** 2 + max(cy, H - 1 - cy) ** 2) / float(K[0, 0]) ** 2)


def k1_of_bend(bend: float, K: np.ndarray, size: tuple[int, int]) -> float:
    """The radial coefficient at ``K`` that moves the image corner inward by ``bend`` of its radius."""
    return -float(bend) / corner_radius2(K, size)


def bend_of_k1(k1: float, K: np.ndarray, size: tuple[int, int]) -> float:
    """The inverse of ``k1_of_bend``."""
    return -float(k1) * corner_radius2(K, size)


@dataclass
class LensTrial:
    """One candidate's window: the bend it was grown through, the coefficient it ended at, and its
    median reprojection error (px, the pixels as seen) and views held with points."""

    bend: float
    radial_k1: float
    median_px: float
    held_views: int

    def as_info(self) -> dict:
        return {"bend": round(self.bend, 4), "radial_k1": round(self.radial_k1, 6),
                "median_reproj_px": round(self.median_px, 4), "held_views": self.held_views}


def chosen_trial(trials: list[LensTrial], pinhole_median_px: float, pinhole_held: int,
                 config: LensSearchConfig) -> LensTrial | None:
    """The candidate whose window fits best, if it holds as many views as the pinhole's and fits
    within ``max_median_ratio`` of its median; else None (the pinhole stands)."""
    fit = [t for t in trials if np.isfinite(t.median_px) and t.held_views >= pinhole_held]
    if not fit:
        return None
    best = min(fit, key=lambda t: t.median_px)
    good = not np.isfinite(pinhole_median_px) or best.median_px <= config.max_median_ratio * pinhole_median_px
    return best if good else None
