"""The Gaussian-splat geometry cache: accumulate, merge, bound, split static / dynamic, render, export."""

from memory.gaussians.cache import GaussianCache
from memory.gaussians.config import GaussianCacheConfig
from memory.gaussians.export import read_splats_ply, write_points_ply, write_splats_ply
from memory.gaussians.render import render_gaussians

__all__ = [
    "GaussianCache", "GaussianCacheConfig", "read_splats_ply", "render_gaussians", "write_points_ply",
    "write_splats_ply",
]
