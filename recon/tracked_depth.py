"""Depth maps for the frames between keyframes, from the keyframes' own depth.

A tracked frame (``recon.tracking``) never goes through the window model, so it
has a pose but no depth. Its two bracketing keyframes do: their confident depth
pixels are lifted to world points once (``lift_keyframe``) and, for each tracked
frame, projected into its camera (``depth_from_keyframes``). Each keyframe is
z-buffered on its own (nearest point per pixel); a point far behind most of its
neighbours (background seen through a crack of a magnified surface) is dropped.
The two maps are then combined: where both see a pixel and agree (relative
difference below ``agree``) the depth is their confidence-weighted mean and the
confidence the larger one; where they disagree the nearer surface wins at half
its confidence; a pixel only one keyframe sees keeps half of that keyframe's
confidence. Small holes (a pixel most of whose 8 neighbours have depth, and
those neighbours agree) are filled with the neighbours' mean at half their
lowest confidence. Pixels nobody sees have depth 0 and confidence 0, as the
keyframes' own maps have where their depth is unknown.

The work runs at ``TrackedDepthConfig.scale`` of the model resolution (every
``1/scale``-th keyframe pixel lifted, the frame rendered at that size) and is
brought back to the model resolution by nearest-neighbour upsampling, so the
map has the keyframes' size and intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TrackedDepthConfig:
    """enabled: give tracked frames depth maps (``reconstruct --no-tracked-depth`` turns it off).
    scale: working resolution as a share of the model's (1/scale an integer: 1, 2, 4).
    agree: relative depth difference under which two keyframes (or hole neighbours) agree.
    behind: a pixel this much (relative) farther than at least ``crack_neighbours`` of its 8 neighbours
        is background seen through a crack and dropped.
    fill_neighbours: a hole is filled when at least this many of its 8 neighbours have depth.
    min_coverage: a tracked frame counts as posed with depth when its map has valid pixels on at
        least this share of the pixels its two keyframes have on average (and at least one)."""

    enabled: bool = True
    scale: float = 0.5
    agree: float = 0.03
    behind: float = 0.05
    crack_neighbours: int = 5
    fill_neighbours: int = 5
    min_coverage: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"tracked_depth.enabled must be true or false, got {self.enabled!r}")
        step = 1.0 / self.scale if self.scale > 0 else 0.0
        if not (self.scale > 0 and abs(step - round(step)) < 1e-9 and round(step) <= 8):
            raise ValueError(f"tracked depth scale must be 1, 1/2, 1/3, ... 1/8, got {self.scale!r}")
        if not 0 < self.agree < 1 or not 0 < self.behind < 1:
            raise ValueError(f"tracked depth agree and behind must be in (0, 1), got {self.agree}, {self.behind}")
        for name in ("crack_neighbours", "fill_neighbours"):
            if not 1 <= getattr(self, name) <= 8:
                raise ValueError(f"tracked depth {name} must be in 1..8, got {getattr(self, name)}")
        if not 0 <= self.min_coverage <= 1:
            raise ValueError(f"tracked depth min_coverage must be in [0, 1], got {self.min_coverage}")

    @property
    def step(self) -> int:
        return int(round(1.0 / self.scale))


@dataclass
class KeyframeCloud:
    """A keyframe's confident depth pixels as world points."""

    index: int  # Frame.index of the keyframe
    points: np.ndarray  # float32 [N, 3], world
    conf: np.ndarray  # float32 [N], > 0
    valid_share: float  # share of the keyframe's pixels with depth and confidence > 0 (full resolution)


@dataclass
class TrackedDepth:
    depth: np.ndarray  # float32 [H, W] z-depth at model resolution, 0 where unknown
    conf: np.ndarray  # float32 [H, W], 0 where unknown
    valid_share: float  # share of pixels with depth
    sources: tuple[int, ...]  # Frame.index of the keyframes that gave points


def lift_keyframe(index: int, depth: np.ndarray, conf: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                  step: int = 1) -> KeyframeCloud:
    """World points of every ``step``-th pixel of a keyframe with depth > 0 and conf > 0.

    depth, conf: [H, W] (model resolution); K [3, 3] model pixels; c2w [4, 4] world of the window."""
    depth = np.asarray(depth, np.float32)
    conf = np.asarray(conf, np.float32)
    good_full = (depth > 0) & (conf > 0) & np.isfinite(depth)
    d, c, good = depth[::step, ::step], conf[::step, ::step], good_full[::step, ::step]
    v, u = np.nonzero(good)
    z = d[v, u].astype(np.float64)
    Kinv = np.linalg.inv(np.asarray(K, np.float64))
    pix = np.stack([u * step, v * step, np.ones_like(u)], axis=1).astype(np.float64)
    cam = (pix @ Kinv.T) * z[:, None]
    c2w = np.asarray(c2w, np.float64)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return KeyframeCloud(int(index), world.astype(np.float32), c[v, u].astype(np.float32),
                         float(good_full.mean()) if good_full.size else 0.0)


def _scaled_K(K: np.ndarray, step: int) -> np.ndarray:
    """Intrinsics of an image ``step`` times smaller (pixel centres at integers)."""
    S = np.diag([1.0 / step, 1.0 / step, 1.0])
    S[:2, 2] = 0.5 / step - 0.5
    return S @ np.asarray(K, np.float64)


def _zbuffer(cloud: KeyframeCloud, K: np.ndarray, w2c: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest depth and its confidence per pixel ([h, w] float32, 0 where no point lands)."""
    cam = cloud.points @ w2c[:3, :3].T.astype(np.float32) + w2c[:3, 3].astype(np.float32)
    z = cam[:, 2]
    front = z > 1e-6
    cam, z, conf = cam[front], z[front], cloud.conf[front]
    u = np.rint(cam[:, 0] / z * K[0, 0] + K[0, 2])
    v = np.rint(cam[:, 1] / z * K[1, 1] + K[1, 2])
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    flat = (v[inside] * w + u[inside]).astype(np.int64)
    z, conf = z[inside], conf[inside]
    zbuf = np.full(w * h, np.inf, np.float32)
    np.minimum.at(zbuf, flat, z)
    cbuf = np.zeros(w * h, np.float32)
    won = z <= zbuf[flat]
    cbuf[flat[won]] = conf[won]
    zbuf[~np.isfinite(zbuf)] = 0.0
    return zbuf.reshape(h, w), cbuf.reshape(h, w)


def _neighbours(a: np.ndarray) -> np.ndarray:
    """The 8 neighbours of every pixel, [8, h, w] (0 beyond the border)."""
    p = np.pad(a, 1)
    h, w = a.shape
    return np.stack([p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])


def _drop_cracks(z: np.ndarray, conf: np.ndarray, cfg: TrackedDepthConfig) -> None:
    """Background points seen through cracks of a nearer surface: set to 0 in place."""
    nb = _neighbours(z)
    nearer = ((nb > 0) & (nb * (1 + cfg.behind) < z[None])).sum(axis=0)
    crack = (z > 0) & (nearer >= cfg.crack_neighbours)
    z[crack] = 0.0
    conf[crack] = 0.0


def _fill_holes(z: np.ndarray, conf: np.ndarray, cfg: TrackedDepthConfig) -> None:
    """Pixels without depth whose neighbours mostly have it and agree: their mean, in place."""
    nb = _neighbours(z)
    have = nb > 0
    count = have.sum(axis=0)
    hole = (z == 0) & (count >= cfg.fill_neighbours)
    if not hole.any():
        return
    nz, nh = nb[:, hole], have[:, hole]
    hi = np.where(nh, nz, 0).max(axis=0)
    lo = np.where(nh, nz, np.inf).min(axis=0)
    ok = hi <= lo * (1 + cfg.agree)
    nc = _neighbours(conf)[:, hole]
    mean = np.where(nh, nz, 0).sum(axis=0) / np.maximum(nh.sum(axis=0), 1)
    low_conf = np.where(nh, nc, np.inf).min(axis=0)
    rows, cols = np.nonzero(hole)
    z[rows[ok], cols[ok]] = mean[ok]
    conf[rows[ok], cols[ok]] = 0.5 * low_conf[ok]


def depth_from_keyframes(clouds: list[KeyframeCloud], K: np.ndarray, c2w: np.ndarray, size: tuple[int, int],
                         config: TrackedDepthConfig | None = None) -> TrackedDepth:
    """The depth map of a camera (``K`` [3, 3] model pixels, ``c2w`` [4, 4] world, ``size`` (W, H) of the
    model resolution) from the lifted keyframes around it (one or two ``KeyframeCloud``)."""
    cfg = config or TrackedDepthConfig()
    W, H = (int(s) for s in size)
    step = cfg.step
    w, h = (W + step - 1) // step, (H + step - 1) // step
    Ks = _scaled_K(K, step)
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    maps = []
    for cloud in clouds:
        if len(cloud.points) == 0:
            continue
        z, c = _zbuffer(cloud, Ks, w2c, w, h)
        _drop_cracks(z, c, cfg)
        maps.append((z, c))
    if not maps:
        zeros = np.zeros((H, W), np.float32)
        return TrackedDepth(zeros, zeros.copy(), 0.0, ())
    z, c = maps[0][0].copy(), 0.5 * maps[0][1]
    for zb, cb in maps[1:]:
        both = (z > 0) & (zb > 0)
        agree = both & (np.abs(z - zb) <= cfg.agree * np.minimum(z, zb))
        ca = 2.0 * c  # the first map's own confidence
        mean = (ca * z + cb * zb) / np.maximum(ca + cb, 1e-12)
        only_b = (z == 0) & (zb > 0)
        b_nearer = both & ~agree & (zb < z)
        z = np.where(agree, mean, np.where(only_b | b_nearer, zb, z)).astype(np.float32)
        c = np.where(agree, np.maximum(ca, cb), np.where(only_b | b_nearer, 0.5 * cb, c)).astype(np.float32)
    _fill_holes(z, c, cfg)
    if step > 1:
        z = cv2.resize(z, (w * step, h * step), interpolation=cv2.INTER_NEAREST)[:H, :W]
        c = cv2.resize(c, (w * step, h * step), interpolation=cv2.INTER_NEAREST)[:H, :W]
    valid = z > 0
    c[~valid] = 0.0
    sources = tuple(cl.index for cl in clouds if len(cl.points))
    return TrackedDepth(np.ascontiguousarray(z, np.float32), np.ascontiguousarray(c, np.float32),
                        float(valid.mean()), sources)


def enough_depth(result: TrackedDepth, clouds: list[KeyframeCloud], config: TrackedDepthConfig | None = None) -> bool:
    """Whether a tracked frame's map counts as depth: valid on at least ``min_coverage`` of the share its
    keyframes have on average, and on at least one pixel."""
    cfg = config or TrackedDepthConfig()
    if not clouds or result.valid_share <= 0:
        return False
    keyframes = float(np.mean([cl.valid_share for cl in clouds]))
    return result.valid_share >= cfg.min_coverage * keyframes
