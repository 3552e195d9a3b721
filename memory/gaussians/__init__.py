"""The Gaussian-splat geometry cache: accumulate, merge, bound, split static / dynamic, render, export."""

from stream4d.lazy import lazy_exports

__all__ = ["GaussianCache", "GaussianCacheConfig", "read_splats_ply", "write_points_ply", "write_splats_ply", "render_gaussians"]
__getattr__ = lazy_exports(__name__, {
    "GaussianCache": "memory.gaussians.cache",
    "GaussianCacheConfig": "memory.gaussians.config",
    "read_splats_ply": "memory.gaussians.export",
    "write_points_ply": "memory.gaussians.export",
    "write_splats_ply": "memory.gaussians.export",
    "render_gaussians": "memory.gaussians.render",
})
