from __future__ import annotations

import pytest
from viz_fixtures import make_windows


@pytest.fixture(scope="session")
def fern_windows():
    """10 fern frames in windows of 5 with overlap 2: views 0-4, 3-7, 6-9 (10 new views)."""
    return make_windows(n_frames=10, window=5, overlap=2)
