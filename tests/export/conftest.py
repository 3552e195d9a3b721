"""A small finished run to export: a synthetic clip with exact geometry and known intrinsics."""

from __future__ import annotations

from pathlib import Path

# Before any pycolmap import: pycolmap loaded first brings its own zlib, and PNG writes (cv2, PIL) in the
# same process then abort with "free(): invalid pointer"; the reconstructions here write PNGs.
import cv2  # noqa: F401
import pytest

FRAMES = 30
SIZE = (320, 240)


@pytest.fixture(scope="session")
def synthetic_clip(tmp_path_factory) -> Path:
    """A rendered room orbit (images/ + cameras.json), a dataset folder for ``reconstruct``."""
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence, write_sequence

    root = tmp_path_factory.mktemp("clip")
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("orbit", FRAMES, seed=0, scene=scene)
    K = intrinsics_for(*SIZE, 60.0)
    views = render_sequence(scene, c2w, K, *SIZE, fps=10.0, seed=0, progress=False)
    write_sequence(root, views)
    return root


@pytest.fixture(scope="session")
def finished_run(synthetic_clip, tmp_path_factory) -> Path:
    """``reconstruct`` of the clip in windows of 10 sharing 3 (4 windows), with the Gaussian cache."""
    from stream4d.pipeline import ReconstructConfig, reconstruct

    out = tmp_path_factory.mktemp("run")
    reconstruct(synthetic_clip, out, ReconstructConfig(rrd=False).override({"align.window": 10, "align.overlap": 3}), progress=False)
    return out
