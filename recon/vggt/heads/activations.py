"""Output activations shared by the heads."""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_log(x: Tensor) -> Tensor:
    """``sign(x) * (exp(|x|) - 1)``: lets a network output span several orders of magnitude."""
    return torch.sign(x) * torch.expm1(x.abs())


def expp1(x: Tensor) -> Tensor:
    """Confidence ``1 + exp(x)`` (always > 1)."""
    return 1 + x.exp()


def activate_pose(enc: Tensor) -> Tensor:
    """Pose encoding ``[..., 9]``: translation and quaternion linear, field of view ReLU (positive)."""
    return torch.cat([enc[..., :7], torch.relu(enc[..., 7:])], dim=-1)


_VALUE_ACTIVATIONS = {"exp": torch.exp, "inv_log": inverse_log, "linear": lambda x: x}


def activate_dense(out: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """Dense head output ``[N, C, H, W]`` -> values ``[N, H, W, C-1]`` and confidence ``[N, H, W]``."""
    fmap = out.permute(0, 2, 3, 1)
    if activation not in _VALUE_ACTIVATIONS:
        raise ValueError(f"unknown dense activation {activation!r}; known: {sorted(_VALUE_ACTIVATIONS)}")
    return _VALUE_ACTIVATIONS[activation](fmap[..., :-1]), expp1(fmap[..., -1])
