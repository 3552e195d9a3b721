"""Where the cached static Gaussians fall in a new view: per-pixel picks of their projected centres."""

from __future__ import annotations

import numpy as np

from memory.gaussians.config import GaussianCacheConfig
from memory.gaussians.spatial_index import VoxelHashIndex
from memory.gaussians.store import GaussianStore
from stream4d.geometry import invert_se3


class Centres:
    """Static Gaussians whose centres fall in each pixel of a view (flat arrays, -1 / inf = none)."""

    front_id: np.ndarray  # int64 [H*W] front-most
    front_z: np.ndarray  # float64 [H*W]
    match_id: np.ndarray  # int64 [H*W] closest to the observed depth
    match_z: np.ndarray  # float64 [H*W]
    match_u: np.ndarray  # float64 [H*W] its sub-pixel projection
    match_v: np.ndarray  # float64 [H*W]

    def __init__(self, n: int):
        self.front_id = np.full(n, -1, np.int64)
        self.front_z = np.full(n, np.inf)
        self.match_id = np.full(n, -1, np.int64)
        self.match_z = np.full(n, np.inf)
        self.match_u = np.full(n, np.inf)
        self.match_v = np.full(n, np.inf)


def project_centres(static: GaussianStore, index: VoxelHashIndex, cfg: GaussianCacheConfig, c2w: np.ndarray,
                    K: np.ndarray, W: int, H: int, z_far: float, z_obs: np.ndarray) -> Centres:
    """Static Gaussians centred in each pixel of this view (flat ``[H*W]`` arrays).

    Two picks per pixel: the front-most (what the view should see: carving, free-space
    witnesses) and the one closest to the observed depth ``z_obs [H*W]`` (what a pixel
    fuses into; at a silhouette the front-most may belong to the other surface).
    """
    out = Centres(H * W)
    z_limit = z_far * (1 + cfg.merge_rel_tol) + cfg.merge_abs_tol
    cand = index.query_frustum(c2w, K, W, H, z_limit)
    if cand.size == 0:
        return out
    w2c = invert_se3(c2w)
    pc = static["means"][cand].astype(np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    ok = (z > 1e-9) & (z <= z_limit)
    cand, pc, z = cand[ok], pc[ok], z[ok]
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    ui, vi = np.rint(u), np.rint(v)
    inside = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    cand, z, u, v = cand[inside], z[inside], u[inside], v[inside]
    flat = (vi[inside] * W + ui[inside]).astype(np.int64)
    np.minimum.at(out.front_z, flat, z)  # nearest depth per pixel, then who has it
    sel = np.flatnonzero(z == out.front_z[flat])
    out.front_id[flat[sel]] = cand[sel]
    seen = z_obs[flat]
    err = np.where(seen > 0, np.abs(z - seen), z)  # no observation: fall back to the front-most
    best = np.full(H * W, np.inf)
    np.minimum.at(best, flat, err)
    sel = np.flatnonzero(err == best[flat])
    out.match_id[flat[sel]], out.match_z[flat[sel]] = cand[sel], z[sel]
    out.match_u[flat[sel]], out.match_v[flat[sel]] = u[sel], v[sel]
    return out
