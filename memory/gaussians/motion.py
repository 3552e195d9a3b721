"""What moved: free-space tests that split a view's pixels into static and dynamic, and carving.

A view that saw a surface at depth ``d`` saw the ray empty in front of it. A point
of a new view lying in such observed-empty space was not there then, so it moved
in (Mem4D's static / dynamic split). Two sources of observed free space:

- the last ``dynamic_history`` views' depth maps (``ViewHistory.votes``);
- the rays along which static Gaussians behind the point were last confirmed
  (their ``seen_from`` camera), tested in the interior of smooth surfaces only.

Seeds come from confident pixels and grow a few pixels over depth-continuous
surface. Carving is the converse: a static Gaussian that a view sees through
loses support.
"""

from __future__ import annotations

import numpy as np

from memory.gaussians.centres import Centres
from memory.gaussians.config import GaussianCacheConfig
from memory.gaussians.free_space import ViewHistory, depth_edges, min_pool
from memory.gaussians.store import GaussianStore


def split_dynamic(static: GaussianStore, history: ViewHistory, cfg: GaussianCacheConfig, pix, P, zp, rank,
                  cz: Centres, z_map) -> np.ndarray:
    """Dynamic mask of the candidate pixels; updates the static layer's support."""
    # Noisy depth violates free space by chance; only confident pixels seed the mask.
    seeds = in_seen_free_space(static, history, cfg, pix, P, zp, cz, z_map.shape) & (rank >= cfg.dynamic_min_rank)
    dynamic = grow(cfg, seeds, pix, z_map)
    carve(static, cfg, cz, z_map)
    # A static Gaussian where a moving surface is now is most likely that surface,
    # cached before it was seen to move: it loses support twice as fast.
    g = cz.match_id[pix[dynamic]]
    same = (g >= 0) & (np.abs(cz.match_z[pix[dynamic]] - zp[dynamic])
                       <= np.maximum(cfg.merge_rel_tol * zp[dynamic], cfg.merge_abs_tol))
    static["support"][g[same]] -= 2
    return dynamic


def in_seen_free_space(static: GaussianStore, history: ViewHistory, cfg: GaussianCacheConfig, pix, P, zp,
                       cz: Centres, shape) -> np.ndarray:
    """Whether each candidate point ``P [M, 3]`` lies where earlier views saw empty space."""
    dynamic = np.zeros(pix.size, bool)
    if len(history):
        votes, seen = history.votes(P, cfg.dynamic_rel_tol, cfg.merge_abs_tol)
        dynamic = (votes > 0) & (votes >= np.minimum(cfg.dynamic_min_votes, seen))
    if cfg.witness_radius_px <= 0 or len(static) == 0:
        return dynamic
    H, W = shape
    # Near a depth edge the witness ray may graze the near surface, so test the interior only.
    z_map = np.zeros(H * W)
    z_map[pix] = zp
    z_map = z_map.reshape(H, W)
    smooth = ~depth_edges(z_map, cfg.merge_rel_tol, radius=int(np.ceil(cfg.witness_radius_px)) + 1)
    interior = smooth.reshape(-1)[pix]
    # When a static Gaussian already agrees with the point, only free space seen after
    # that Gaussian was last confirmed counts (older evidence is stale, or a graze).
    own = cz.match_id[pix]
    agrees = (own >= 0) & (np.abs(cz.match_z[pix] - zp)
                           <= np.maximum(cfg.merge_rel_tol * zp, cfg.merge_abs_tol))
    own_view = np.where(agrees, static["last_view"][np.maximum(own, 0)], -1)
    # Static Gaussians centred in the 3x3 pixels around each point, well behind it.
    row, col = np.divmod(pix, W)
    ids_pad = np.pad(cz.front_id.reshape(H, W), 1, constant_values=-1).reshape(-1)
    z_pad = np.pad(cz.front_z.reshape(H, W), 1, constant_values=np.inf).reshape(-1)
    centre = (row + 1) * (W + 2) + col + 1  # flat index into the padded maps
    behind = zp * (1.0 + cfg.dynamic_rel_tol) + cfg.merge_abs_tol
    s = static
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            at = centre + dy * (W + 2) + dx
            g = ids_pad[at]
            test = np.flatnonzero((g >= 0) & (z_pad[at] > behind) & interior & ~dynamic)
            if test.size == 0:
                continue
            test = test[s["last_view"][g[test]] > own_view[test]]
            gi = g[test]
            C = s["seen_from"][gi].astype(np.float64)
            ray = s["means"][gi].astype(np.float64) - C
            length = np.linalg.norm(ray, axis=-1)
            ray /= np.maximum(length, 1e-12)[:, None]
            rel = P[test] - C
            along = np.einsum("ij,ij->i", rel, ray)
            off = np.linalg.norm(rel - along[:, None] * ray, axis=-1)
            # Pixel footprint of that view at the point: the Gaussian's, shrunk with distance.
            footprint = s["scales"][gi, :2].mean(-1) / cfg.scale_factor * along / np.maximum(length, 1e-12)
            free = ((along > 0) & (along < length * (1.0 - cfg.dynamic_rel_tol) - cfg.merge_abs_tol)
                    & (off <= cfg.witness_radius_px * footprint + cfg.merge_abs_tol))
            # Near the border of the witnessing image its ray may pass just inside the
            # frustum while the point sits just outside it, unseen.
            f = np.flatnonzero(free)
            f = f[history.inside(P[test[f]], s["last_view"][gi[f]], cfg.witness_radius_px + 1.0)]
            dynamic[test[f]] = True
    return dynamic


def grow(cfg: GaussianCacheConfig, dynamic, pix, z_map) -> np.ndarray:
    """Spread dynamic labels over ``dynamic_grow_px`` pixels of depth-continuous surface,
    so the silhouette band the witness test skips follows the object's interior."""
    if cfg.dynamic_grow_px <= 0 or not dynamic.any():
        return dynamic
    H, W = z_map.shape
    label = np.zeros(H * W, bool)
    label[pix[dynamic]] = True
    label = label.reshape(H, W)
    z = np.pad(z_map, 1)
    tol = cfg.merge_rel_tol
    for _ in range(cfg.dynamic_grow_px):
        lab = np.pad(label, 1)
        grown = label.copy()
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nb_lab = lab[1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx]
            nb_z = z[1 + dy:H + 1 + dy, 1 + dx:W + 1 + dx]
            grown |= nb_lab & (z_map > 0) & (np.abs(nb_z - z_map) <= tol * z_map)
        if (grown == label).all():
            break
        label = grown
    return label.reshape(-1)[pix]


def carve(static: GaussianStore, cfg: GaussianCacheConfig, cz: Centres, z_map) -> None:
    """Take support from static Gaussians in front of everything this view sees around them."""
    d = min_pool(z_map).reshape(-1).astype(np.float64)
    through = (cz.front_id >= 0) & (d > 0) & (cz.front_z < d * (1.0 - cfg.merge_rel_tol) - cfg.merge_abs_tol)
    static["support"][cz.front_id[through]] -= 1
