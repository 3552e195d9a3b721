"""A real reconstruct run records its stream: the .rrd matches the run's own trajectory."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from viz_fixtures import rrd

from align import AlignConfig
from stream4d.testdata import SHARED_DATA
from viz import paths

FERN = SHARED_DATA / "videos/fern.mp4"
pipeline = pytest.importorskip("stream4d.pipeline")


@pytest.mark.skipif(not FERN.exists(), reason=f"shared test video {FERN} is missing")
def test_reconstruct_records_one_camera_per_posed_frame_with_model_sized_images(tmp_path):
    config = pipeline.ReconstructConfig(align=AlignConfig(window=8, overlap=3))
    summary = pipeline.reconstruct(FERN, tmp_path, config, progress=False)
    rec = rrd(summary.outputs["recording.rrd"])
    frames = json.loads((tmp_path / "trajectory.json").read_text())["frames"]
    # Keyframes (the frames the window model posed) with their images; the frames tracked between
    # them as frusta of their own, without pixels.
    posed = [f["index"] for f in frames if f.get("pose_kind") not in ("tracked", "interpolated")]
    tracked = [f["index"] for f in frames if f.get("pose_kind") in ("tracked", "interpolated")]
    assert posed and tracked, "the run posed no keyframe or tracked no frame: nothing to check"
    assert rec.frames(f"/{paths.CAMERA}") == posed
    assert rec.frames(f"/{paths.TRACKED}") == tracked
    assert f"/{paths.TRACKED_PATH}" in rec.entities()
    assert rec.frames(f"/{paths.IMAGE}") == posed
    for blob in rec.values(f"/{paths.IMAGE}", "EncodedImage:blob"):  # JPEG
        image = cv2.imdecode(np.frombuffer(bytes(blob[0]), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (384, 512, 3)  # fern.mp4 is 1008x756, ingest resizes to max side 512
    # Keyframes: every 8th posed frame, depth decimated to at most 128 px a side (every 4th pixel).
    assert rec.frames(f"/{paths.DEPTH}") == posed[::8]
    sizes = {(f[0]["width"], f[0]["height"]) for f in rec.values(f"/{paths.DEPTH}", "DepthImage:format")}
    assert sizes == {(128, 96)}
    assert len(rec.frames(f"/{paths.ALIGN_SCALE}")) == summary.stats.windows
    assert f"/{paths.FPS}" in rec.entities()
    # The cache the run kept is drawn.
    assert summary.stats.gaussians > 0
    assert f"/{paths.STATIC_GAUSSIANS}" in rec.entities()
    # Once the stream has ended, the final path: every frame's centre as trajectory.json has it.
    assert rec.frames(f"/{paths.FINAL_TRAJECTORY}") == [max(f["index"] for f in frames)]
    strips = rec.values(f"/{paths.FINAL_TRAJECTORY}", "LineStrips3D:strips")[-1]
    centres = np.array([np.asarray(f["c2w"])[:3, 3] for f in sorted(frames, key=lambda f: f["index"])])
    drawn = np.concatenate([np.asarray(s, np.float64).reshape(-1, 3) for s in strips])
    np.testing.assert_allclose(drawn, centres, atol=1e-5)
