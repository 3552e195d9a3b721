"""run.json records the stream's self-calibrated focal length; the aligner uses the same K."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_clips import H, W, write_images

from stream4d.outputs import read_trajectory
from stream4d.pipeline import ReconstructConfig, reconstruct
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view


def orbit_room(n: int) -> list[np.ndarray]:
    """An orbit: the focal length is observable (sideways motion alone leaves it free)."""
    scene = make_scene("room", seed=0)
    K = intrinsics_for(W, H)
    return [render_view(scene, c, K, W, H).rgb for c in make_trajectory("orbit", n, seed=0, scene=scene)]


def test_run_json_carries_the_stream_focal_estimate(tmp_path):
    folder = write_images(tmp_path / "in", orbit_room(14))  # an image folder: no intrinsics
    config = ReconstructConfig().override({"gaussians": False, "rrd": False, "align.window": 8,
                                           "align.overlap": 3, "ingest.resize": None})
    reconstruct(folder, tmp_path / "out", config, progress=False)
    cal = json.loads((tmp_path / "out" / "run.json").read_text())["intrinsics"]
    true_f = intrinsics_for(W, H)[0, 0]
    assert len(cal["windows"]) == 2  # 0-7, and 5-13 (the tail merged)
    assert abs(cal["focal_px"] / true_f - 1) < 0.03, cal
    assert 0 < cal["focal_sigma_rel"] < 0.03
    assert cal["model_size"] == [W, H] and cal["principal_point"] == "image centre"
    # The last window's frames carry the stream's K (the aligner's reference is the model's estimate).
    last = max(read_trajectory(tmp_path / "out"), key=lambda f: f.index)
    assert abs(last.K[0, 0] / cal["focal_px"] - 1) < 0.01


def test_run_json_intrinsics_come_from_a_model_that_keeps_a_stream_estimate():
    from stream4d.pipeline.run import _intrinsics_report

    class NoCalibration:  # a window model that keeps no stream state (e.g. vggt)
        pass

    assert _intrinsics_report(NoCalibration()) is None
    from recon.default.model import DefaultWindowModel

    model = DefaultWindowModel()
    assert _intrinsics_report(model) is None
    model._focal.add(0, (W, H), float(np.log(200.0)), 0.01, 0.3)
    assert _intrinsics_report(model)["focal_rel"] == pytest.approx(200.0 / W)
