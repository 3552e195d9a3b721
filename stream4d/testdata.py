"""Where the project's real test data lives: ``../shared/data`` beside the repository.

Tests and benchmarks read it from here; ``STREAM4D_SHARED_DATA`` overrides the
location (e.g. a CI machine that mounts it elsewhere). Nothing in the package
itself depends on it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STREAM4D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
