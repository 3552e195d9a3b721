"""Fixtures shared by the recon tests."""

from __future__ import annotations

import pytest
import torch

from recon.vggt import VGGT, VGGTConfig


@pytest.fixture(scope="module")
def small_vggt() -> VGGT:
    """A small VGGT (same code, tiny configuration) with fixed random weights, no track head."""
    torch.manual_seed(0)
    return VGGT(config=VGGTConfig.small(enable_track=False)).eval()
