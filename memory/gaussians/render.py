"""One verb to render Gaussians: ``gsplat.rasterization`` on CUDA, the torch reference elsewhere.

Both backends use the same projection (EWA, 0.3 px^2 low-pass), the same
compositing (front to back, alpha clamped at 0.999, contributions below 1/255
skipped) and return depth as the alpha-normalised expected z (gsplat's "ED"
mode). Colours are composited over ``background`` (black when None), so
``rgb = sum(w c) + (1 - alpha) * background``.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np
import torch

from memory.gaussians.render_torch import render_torch
from stream4d.contracts import GaussianSnapshot
from stream4d.geometry import invert_se3

Backend = Literal["auto", "gsplat", "torch"]
_KEYS = ("means", "quats", "scales", "opacities", "colors")
PROGRESS_ABOVE = 1_000_000  # show a progress bar when rendering more Gaussians than this on the CPU


def gaussian_tensors(gaussians: GaussianSnapshot | Mapping | Sequence, device: str | torch.device = "cpu"
                     ) -> dict[str, torch.Tensor]:
    """float32 tensors ``means [N,3], quats [N,4], scales [N,3], opacities [N], colors [N,C]``.

    Accepts a :class:`GaussianSnapshot`, a mapping with those keys, or a sequence in that order.
    """
    if isinstance(gaussians, GaussianSnapshot):
        raw = {k: getattr(gaussians, k) for k in _KEYS}
    elif isinstance(gaussians, Mapping):
        missing = [k for k in _KEYS if k not in gaussians]
        if missing:
            raise ValueError(f"gaussians mapping lacks {missing}; needs {list(_KEYS)}")
        raw = {k: gaussians[k] for k in _KEYS}
    elif isinstance(gaussians, Sequence) and len(gaussians) == len(_KEYS):
        raw = dict(zip(_KEYS, gaussians))
    else:
        raise TypeError(f"gaussians must be a GaussianSnapshot, a mapping or a sequence of {_KEYS}, "
                        f"got {type(gaussians).__name__}")
    out = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v, dtype=torch.float32).to(device)
           for k, v in raw.items()}
    n = out["means"].shape[0]
    expect = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
    for k, shape in expect.items():
        if tuple(out[k].shape) != shape:
            raise ValueError(f"gaussians.{k} has shape {tuple(out[k].shape)}, expected {shape}")
    if out["colors"].ndim != 2 or out["colors"].shape[0] != n:
        raise ValueError(f"gaussians.colors has shape {tuple(out['colors'].shape)}, expected ({n}, C)")
    return out


def resolve_backend(backend: Backend) -> str:
    """``"gsplat"`` or ``"torch"``; ``"auto"`` picks gsplat only when CUDA is available."""
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"render backend must be 'auto', 'gsplat' or 'torch', got {backend!r}")
    if backend == "auto":
        return "gsplat" if torch.cuda.is_available() else "torch"
    if backend == "gsplat" and not torch.cuda.is_available():
        raise RuntimeError("render backend 'gsplat' needs CUDA (gsplat cannot rasterize on the CPU)")
    return backend


def _check_camera(c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    c2w = np.asarray(c2w, np.float64)
    K = np.asarray(K, np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise ValueError(f"c2w must be a finite [4, 4] camera-to-world matrix, got shape {c2w.shape}")
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must be a finite [3, 3] intrinsic matrix with positive focals, got {K.tolist()}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"render size must be positive, got width={width}, height={height}")
    return c2w, K


def _render_gsplat(g: dict[str, torch.Tensor], w2c: torch.Tensor, K: torch.Tensor, width: int, height: int,
                   background: torch.Tensor | None, near_plane: float, far_plane: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from gsplat import rasterization

    C = g["colors"].shape[1]
    K_gs = K.clone()
    K_gs[0, 2] += 0.5  # gsplat samples pixel (i, j) at (i + 0.5, j + 0.5)
    K_gs[1, 2] += 0.5
    bg = None
    if background is not None:
        bg = torch.cat([background, background.new_zeros(1)])[None]  # [1, C + 1], no depth background
    colors, alphas, _ = rasterization(
        g["means"], g["quats"], g["scales"], g["opacities"], g["colors"], w2c[None], K_gs[None],
        width, height, near_plane=near_plane, far_plane=far_plane, eps2d=0.3,
        render_mode="RGB+ED", backgrounds=bg,
    )
    out = colors[0]  # [H, W, C + 1]
    return out[..., :C], out[..., C], alphas[0, ..., 0]


def render_gaussians(
    gaussians: GaussianSnapshot | Mapping | Sequence,
    c2w: np.ndarray,  # [4, 4] camera-to-world, OpenCV axes
    K: np.ndarray,  # [3, 3] pixels of the rendered image
    width: int,
    height: int,
    backend: Backend = "auto",
    background: Sequence[float] | np.ndarray | None = None,  # [C], defaults to black
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render Gaussians into a pinhole camera.

    Returns float32 numpy arrays: colour ``[H, W, C]`` (RGB in [0, 1] for the cache),
    depth ``[H, W]`` (alpha-normalised expected z, 0 where nothing was drawn) and
    alpha ``[H, W]``. ``progress`` None shows a progress bar for large CPU renders.
    """
    c2w, K = _check_camera(c2w, K, width, height)
    name = resolve_backend(backend)
    device = "cuda" if name == "gsplat" else "cpu"
    g = gaussian_tensors(gaussians, device)
    w2c = torch.as_tensor(invert_se3(c2w), dtype=torch.float32, device=device)
    K_t = torch.as_tensor(K, dtype=torch.float32, device=device)
    bg = None if background is None else torch.as_tensor(np.asarray(background), dtype=torch.float32,
                                                           device=device)
    if bg is not None and bg.shape != (g["colors"].shape[1],):
        raise ValueError(f"background must have {g['colors'].shape[1]} channels, got shape {tuple(bg.shape)}")
    if g["means"].shape[0] == 0:
        C = g["colors"].shape[1]
        rgb = np.zeros((height, width, C), np.float32)
        if bg is not None:
            rgb[:] = bg.cpu().numpy()
        return rgb, np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
    with torch.no_grad():
        if name == "gsplat":
            rgb, depth, alpha = _render_gsplat(g, w2c, K_t, int(width), int(height), bg, near_plane, far_plane)
        else:
            show = g["means"].shape[0] > PROGRESS_ABOVE if progress is None else progress
            rgb, depth, alpha = render_torch(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                                             w2c, K_t, int(width), int(height), background=bg,
                                             near_plane=near_plane, far_plane=far_plane, progress=show)
    return (rgb.float().cpu().numpy(), depth.float().cpu().numpy(), alpha.float().cpu().numpy())
