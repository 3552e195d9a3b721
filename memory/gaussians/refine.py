"""Optional photometric refinement of the static Gaussians (WorldWarp-style), CUDA only.

A few Adam steps fit the Gaussians seen by the most recent views to those views'
images through ``gsplat.rasterization`` (L1 loss). Learning rates are the
reference 3DGS ones, the position rate scaled by the voxel size as a proxy for the
scene extent. On the CPU (gsplat cannot rasterize there) it logs and does nothing.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from memory.gaussians.free_space import RecentView
from memory.gaussians.spatial_index import VoxelHashIndex
from memory.gaussians.store import GaussianStore

log = logging.getLogger(__name__)

LR_MEANS_PER_VOXEL = 1.6e-4 * 16  # 3DGS: 1.6e-4 x scene extent; a voxel is ~1/16 of a view's depth
LR_SCALES = 5e-3
LR_QUATS = 1e-3
LR_OPACITY = 5e-2
LR_COLORS = 2.5e-3


def refine_static(store: GaussianStore, index: VoxelHashIndex | None, views: Sequence[RecentView],
                  steps: int) -> dict:
    """Fit the static Gaussians visible in ``views`` to their images; returns what was done."""
    if not torch.cuda.is_available():
        log.info("Gaussian refinement skipped: it needs CUDA (gsplat cannot rasterize on the CPU)")
        return {"refined": 0, "steps": 0, "skipped": "no CUDA"}
    if steps <= 0 or not views or index is None or len(store) == 0:
        return {"refined": 0, "steps": 0, "skipped": "nothing to refine"}
    from gsplat import rasterization

    ids = np.unique(np.concatenate([
        index.query_frustum(v.c2w, v.K, v.image.shape[1], v.image.shape[0],
                            float(v.depth_min.max()) * 1.05 if v.depth_min.max() > 0 else np.inf)
        for v in views]))
    if ids.size == 0:
        return {"refined": 0, "steps": 0, "skipped": "no Gaussian in the recent views"}
    dev = torch.device("cuda")

    def param(x: np.ndarray) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=dev))

    op = np.clip(store["opacities"][ids].astype(np.float64), 1e-4, 1 - 1e-4)
    means = param(store["means"][ids])
    log_scales = param(np.log(store["scales"][ids]))
    quats = param(store["quats"][ids])
    logit_op = param(np.log(op / (1 - op)))
    colors = param(store["colors"][ids])
    optim = torch.optim.Adam([
        {"params": [means], "lr": LR_MEANS_PER_VOXEL * index.voxel_size},
        {"params": [log_scales], "lr": LR_SCALES},
        {"params": [quats], "lr": LR_QUATS},
        {"params": [logit_op], "lr": LR_OPACITY},
        {"params": [colors], "lr": LR_COLORS},
    ], eps=1e-15)
    targets = []
    for v in views:
        K = torch.as_tensor(v.K, dtype=torch.float32, device=dev).clone()
        K[:2, 2] += 0.5  # gsplat samples pixel (i, j) at (i + 0.5, j + 0.5)
        targets.append((torch.as_tensor(v.w2c, dtype=torch.float32, device=dev), K,
                        torch.as_tensor(v.image, device=dev).float() / 255.0))
    loss_value = float("nan")
    for step in tqdm(range(steps), desc="refine", unit="step", leave=False):
        w2c, K, image = targets[step % len(targets)]
        H, W = image.shape[:2]
        rendered, _, _ = rasterization(means, quats, torch.exp(log_scales), torch.sigmoid(logit_op),
                                       colors, w2c[None], K[None], W, H, eps2d=0.3)
        loss = torch.abs(rendered[0] - image).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        loss_value = float(loss.detach())
    with torch.no_grad():
        store["means"][ids] = means.cpu().numpy()
        store["scales"][ids] = torch.exp(log_scales).cpu().numpy()
        store["quats"][ids] = torch.nn.functional.normalize(quats, dim=-1).cpu().numpy()
        store["opacities"][ids] = torch.sigmoid(logit_op).cpu().numpy()
        store["colors"][ids] = colors.clamp(0.0, 1.0).cpu().numpy()
    index.set(ids, store["means"][ids])
    return {"refined": int(ids.size), "steps": int(steps), "loss": loss_value}
