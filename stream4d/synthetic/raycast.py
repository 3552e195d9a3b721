"""Ray intersection helpers (numpy, float64): spheres, boxes, and the hit record they fill."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-9  # smallest accepted ray parameter: hits at the origin itself do not count


@dataclass
class Hits:
    """First intersections of M rays. ``t`` is the ray parameter (z-depth for camera rays with unit z)."""

    t: np.ndarray  # float64 [M], inf where nothing was hit
    surface: np.ndarray  # int32 [M], surface id, -1 where nothing was hit
    normal: np.ndarray  # float64 [M, 3], unit, facing against the ray
    uv: np.ndarray  # float64 [M, 2], metres on the surface (texture coordinates)

    @property
    def hit(self) -> np.ndarray:
        return self.surface >= 0


def rows_times(rows: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``rows [N, 3] @ M [3, k]`` by broadcasting: BLAS is slow (and threaded) on this tall shape."""
    return rows[:, :1] * M[0] + rows[:, 1:2] * M[1] + rows[:, 2:3] * M[2]


def dot_rows(rows: np.ndarray, vec: np.ndarray) -> np.ndarray:
    """Row-wise dot products of ``rows [N, 3]`` with ``vec [3]`` or ``[N, 3]``."""
    return np.einsum("ij,ij->i", rows, np.broadcast_to(vec, rows.shape))


def all_or_indices(mask: np.ndarray) -> np.ndarray | slice:
    """Indices of the true entries of ``mask``, or a plain slice when all are true (skips gather copies)."""
    return slice(None) if mask.all() else np.nonzero(mask)[0]


def unit_rows32(dirs: np.ndarray) -> np.ndarray:
    """Unit directions float32 [M, 3], for the coarse cone test of ``ray_sphere``."""
    return (dirs / np.sqrt(dot_rows(dirs, dirs))[:, None]).astype(np.float32)


def ray_sphere(origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, radius: float,
                unit32: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of rays ``dirs [M, 3]`` from ``origin`` hitting the sphere, and their ray parameter.

    ``unit32`` (``unit_rows32(dirs)``) may be passed when testing many spheres.
    """
    oc = centre - origin
    dist = float(np.linalg.norm(oc))
    if dist > radius:
        # Cone test first (float32, with slack): only rays inside the sphere's angular radius can hit it.
        unit32 = unit_rows32(dirs) if unit32 is None else unit32
        axis = (oc / dist).astype(np.float32)
        cos_cone = np.float32(np.sqrt(1.0 - (radius / dist) ** 2) - 1e-5)
        idx = np.nonzero(unit32[:, 0] * axis[0] + unit32[:, 1] * axis[1] + unit32[:, 2] * axis[2] >= cos_cone)[0]
    else:
        idx = np.arange(len(dirs))
    d = dirs[idx]
    a = dot_rows(d, d)
    b = dot_rows(d, oc)
    disc = b * b - a * (dist * dist - radius * radius)
    ok = disc >= 0
    idx, a, b, disc = idx[ok], a[ok], b[ok], disc[ok]
    sq = np.sqrt(disc)
    near, far = (b - sq) / a, (b + sq) / a
    t = np.where(near > EPS, near, far)
    keep = t > EPS
    return idx[keep], t[keep]


def sphere_uv(local: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """Equirectangular texture coordinates in metres of unit-sphere points ``local [M, 3]``."""
    lon = np.arctan2(local[:, 0], local[:, 2]) + np.pi
    lat = np.arccos(np.clip(local[:, 1], -1.0, 1.0))
    return np.stack([lon * radius, lat * radius], axis=1)


def ray_box(origin: np.ndarray, dirs: np.ndarray, half: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slab test against the axis-aligned box [-half, half]: hit indices, ray parameter, entry axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1 = (-half - origin) * inv
        t2 = (half - origin) * inv
    lo = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
    hi = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
    t_in = lo.max(axis=1)
    t_out = hi.min(axis=1)
    ok = (t_out >= t_in) & (t_out > EPS)
    idx = np.nonzero(ok)[0]
    entering = t_in[idx] > EPS
    t = np.where(entering, t_in[idx], t_out[idx])
    axis = np.where(entering, lo[idx].argmax(axis=1), hi[idx].argmin(axis=1))
    return idx, t, axis


__all__ = ["EPS", "Hits", "rows_times", "dot_rows", "all_or_indices", "unit_rows32", "ray_sphere", "sphere_uv",
           "ray_box"]
