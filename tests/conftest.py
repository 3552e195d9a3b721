"""Fixtures shared across the test packages."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-tensor tests on one torch thread: on a 2-core machine the thread
    hand-offs cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
