"""Window-to-world similarity from the frames two windows share.

Scale comes from depth (robust ratio of the overlap frames' camera-frame
points), rotation and translation from Kabsch on camera anchors with that
scale held fixed. Point maps only inform the scale: camera poses of a
feed-forward model are more stable than its far-away points, so they decide
the rigid part (the choice LASER makes, arXiv 2512.13680).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from stream4d.geometry import Sim3, camera_centres, umeyama

# Cauchy kernel width in robust standard deviations: 95 % efficiency on Gaussian noise.
CAUCHY_WIDTH = 2.385
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ScaleFit:
    """Result of :func:`robust_scale`."""

    scale: float  # s with s * src ~ dst
    iterations: int  # IRLS iterations run after the least-squares start
    num: int  # samples used
    inlier_fraction: float  # share of samples with Cauchy weight >= 0.5 at the end


def robust_scale(
    src: np.ndarray,  # [N] (any shape, flattened), positive
    dst: np.ndarray,  # [N]
    iters: int = 10,
    tol: float = 0.05,
    kernel_width: float = CAUCHY_WIDTH,
) -> ScaleFit:
    """Scale ``s`` minimising a Cauchy loss of ``s * src - dst``.

    Starts from the least-squares ratio ``<src, dst> / <src, src>`` and runs
    iteratively reweighted least squares; the Cauchy width is
    ``kernel_width`` robust standard deviations (1.4826 x MAD of the current
    residuals). Stops when ``s`` changes by less than ``tol`` (relative) or
    after ``iters`` iterations, or at once when most residuals are exactly
    zero (exact data).
    """
    a = np.asarray(src, np.float64).ravel()
    b = np.asarray(dst, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"robust_scale needs matching samples, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    den = float(a @ a)
    if a.size == 0 or den <= 0.0:
        raise ValueError("robust_scale needs at least one finite, non-zero source sample")
    s = float(a @ b) / den
    weights = np.ones_like(a)
    updates = 0
    for _ in range(iters):
        r = s * a - b
        # Spread about the median, not zero: a biased start shifts every
        # inlier residual alike, and must not widen the kernel.
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
        if sigma <= 1e-12 * float(np.median(np.abs(b))):
            # Over half the samples fit exactly: s is already the answer.
            weights = (np.abs(r) <= 1e-9 * np.abs(b)).astype(np.float64)
            break
        weights = 1.0 / (1.0 + (r / (kernel_width * sigma)) ** 2)
        wa = weights * a
        s_new = float(wa @ b) / float(wa @ a)
        updates += 1
        change = abs(s_new - s) / max(abs(s), 1e-300)
        s = s_new
        if change < tol:
            break
    return ScaleFit(scale=s, iterations=updates, num=int(a.size), inlier_fraction=float(np.mean(weights >= 0.5)))


def camera_anchors(
    c2w: np.ndarray,  # [N, 4, 4]
    scale: float = 1.0,
) -> np.ndarray:  # [3N, 3]
    """Camera centre (times ``scale``), centre + viewing direction, centre + up direction.

    OpenCV axes: the viewing direction is the camera's +z, up is its -y. The
    offsets are unit vectors whatever ``scale`` is, so the anchors pin the
    rotation with the same weight at any scene scale.
    """
    c2w = np.asarray(c2w, np.float64)
    centre = scale * camera_centres(c2w)
    view = c2w[:, :3, 2] / np.linalg.norm(c2w[:, :3, 2], axis=-1, keepdims=True)
    up = -c2w[:, :3, 1] / np.linalg.norm(c2w[:, :3, 1], axis=-1, keepdims=True)
    return np.concatenate([centre, centre + view, centre + up], axis=0)


def kabsch_on_anchors(
    src_c2w: np.ndarray,  # [N, 4, 4], the new window's frame
    dst_c2w: np.ndarray,  # [N, 4, 4], the same cameras in the world
    scale: float,
) -> Sim3:
    """Similarity with the given ``scale`` whose rotation/translation best map the src cameras' anchors onto dst's."""
    if src_c2w.shape != dst_c2w.shape or src_c2w.ndim != 3 or src_c2w.shape[1:] != (4, 4):
        raise ValueError(f"kabsch_on_anchors needs two [N, 4, 4] pose stacks, got {src_c2w.shape} and {dst_c2w.shape}")
    if len(src_c2w) == 0:
        raise ValueError("kabsch_on_anchors needs at least one shared camera")
    rigid = umeyama(camera_anchors(src_c2w, scale), camera_anchors(dst_c2w), with_scale=False)
    return Sim3(float(scale), rigid.R, rigid.t)


def centre_spread_scale(
    src_c2w: np.ndarray,  # [N, 4, 4]
    dst_c2w: np.ndarray,  # [N, 4, 4]
    min_spread: float = 1e-9,
) -> float | None:
    """Scale from how far the shared cameras lie from their centroid, or None if they (nearly) coincide."""
    if len(src_c2w) < 2:
        return None
    cs = camera_centres(src_c2w)
    cd = camera_centres(dst_c2w)
    spread_s = float(np.linalg.norm(cs - cs.mean(axis=0), axis=1).sum())
    spread_d = float(np.linalg.norm(cd - cd.mean(axis=0), axis=1).sum())
    if spread_s <= min_spread or spread_d <= min_spread:
        return None
    return spread_d / spread_s


@dataclass(frozen=True)
class Registration:
    """Window-to-world similarity and how its scale was found."""

    sim3: Sim3
    scale_source: str  # "depth", "camera_centres" or "unit"
    overlap_pixels: int  # confident pixels shared by both windows
    scale_fit: ScaleFit | None  # None unless scale_source == "depth"
    fallback_reason: str = ""  # why the depth could not give the scale ("" when it did)


def register_overlap(
    world_depth: np.ndarray,  # [O, H, W], earlier window's overlap frames, world scale
    window_depth: np.ndarray,  # [O, H, W], new window's copies, its own scale
    mask: np.ndarray,  # bool [O, H, W], confident in both
    world_c2w: np.ndarray,  # [O, 4, 4]
    window_c2w: np.ndarray,  # [O, 4, 4]
    iters: int = 10,
    tol: float = 0.05,
    min_pixels: int = 100,
) -> Registration:
    """Sim(3) taking the new window's frame onto the world, from its overlap frames.

    With shared intrinsics the camera-frame points of a pixel are its depth
    times a fixed ray, so the point-map scale is the depth ratio. Too few
    confident pixels: the scale falls back to the camera-centre spread, then
    to 1 (``scale_source`` says which), where the window stands on the last
    shared frame.
    """
    pixels = int(mask.sum())
    if pixels >= min_pixels:
        fit = robust_scale(window_depth[mask], world_depth[mask], iters=iters, tol=tol)
        return Registration(kabsch_on_anchors(window_c2w, world_c2w, fit.scale), "depth", pixels, fit)
    reason = (f"{pixels} pixels of the {len(mask)} shared frame(s) have a positive depth trusted by both "
              f"windows, fewer than min_pixels={min_pixels}")
    centre_scale = centre_spread_scale(window_c2w, world_c2w)
    if centre_scale is not None:
        return Registration(kabsch_on_anchors(window_c2w, world_c2w, centre_scale), "camera_centres", pixels,
                            None, reason)
    reason += "; the shared cameras do not spread either, so the scale is set to 1"
    unit = kabsch_on_anchors(window_c2w, world_c2w, 1.0)
    # The window's shared cameras stand on one spot (no parallax) while the world's may not: the
    # spot is where the last shared frame, the one next to the window's new frames, stands.
    last = camera_centres(world_c2w[-1]) - unit.R @ camera_centres(window_c2w[-1])
    return Registration(Sim3(1.0, unit.R, last), "unit", pixels, None, reason)


def overlap_noise(
    sim3: Sim3,
    world_depth: np.ndarray,  # [O, H, W], earlier window's overlap frames, world scale
    window_depth: np.ndarray,  # [O, H, W], new window's copies, its own scale
    mask: np.ndarray,  # bool [O, H, W], confident in both
    world_c2w: np.ndarray,  # [O, 4, 4]
    window_c2w: np.ndarray,  # [O, 4, 4]
    min_frames: int = 3,
    min_pixels: int = 100,
) -> tuple[float, float, float] | None:
    """How far the two windows still disagree on their shared frames once ``sim3`` maps the new one
    onto the world: RMS over the frames of the rotation between the two poses (rad), of the distance
    between the two centres (world units) and of the log of each frame's median depth ratio. It is how
    well this placement was measured, the noise of the sequential edge it makes (None: fewer than
    ``min_frames`` shared frames with ``min_pixels`` confident pixels each, too few to tell)."""
    frames = [f for f in range(len(mask)) if int(mask[f].sum()) >= min_pixels]
    if len(frames) < min_frames:
        return None
    placed = sim3.apply_c2w(window_c2w[frames])
    ref = world_c2w[frames]
    rel = np.einsum("nji,njk->nik", ref[:, :3, :3], placed[:, :3, :3])
    angles = Rotation.from_matrix(rel).magnitude()
    shifts = np.linalg.norm(camera_centres(placed) - camera_centres(ref), axis=1)
    logs = [float(np.median(np.log(world_depth[f][mask[f]] / (sim3.s * window_depth[f][mask[f]])))) for f in frames]
    rms = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
    return rms(angles), rms(shifts), rms(np.asarray(logs) - np.median(logs))


def noise_at(sigma: tuple[float, float, float], measured_at: np.ndarray, anchor: np.ndarray) -> tuple[float, float, float]:
    """A placement's noise ``sigma`` (rad, world units, log scale), measured at the point ``measured_at [3]``,
    as it shows at ``anchor [3]``: a rotation or scale error about the measured point moves the anchor by
    that error times the lever between them."""
    rotation, centre, log_scale = sigma
    lever = float(np.linalg.norm(np.asarray(anchor, np.float64) - np.asarray(measured_at, np.float64)))
    return rotation, centre + (rotation + log_scale) * lever, log_scale
