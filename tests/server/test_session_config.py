"""Session options onto the run's configuration tree (server.session_config)."""

from __future__ import annotations

from pathlib import Path

from server.models import SessionOptions
from server.session_config import reconstruct_config
from stream4d.pipeline import ReconstructConfig


def test_default_session_options_are_the_pipelines_defaults():
    # SessionOptions restates window, overlap, resolution, ... for the API schema: they must agree.
    assert reconstruct_config(SessionOptions(), None) == ReconstructConfig()


def test_every_session_option_lands_in_the_tree():
    options = SessionOptions(backend="vggt", window=10, overlap=4, target_fps=5.0, resolution=256, stride=2,
                             max_frames=40, keyframes="parallax", min_parallax=0.01, drop_duplicates=True,
                             gaussians=False, viewer=False, final_ba=True)
    config = reconstruct_config(options, Path("/weights/model.pt"))
    assert (config.backend, config.weights) == ("vggt", "/weights/model.pt")
    assert (config.align.window, config.align.overlap, config.tail_merge) == (10, 4, 4)
    ingest = config.ingest
    assert (ingest.resize, ingest.stride, ingest.target_fps, ingest.max_frames, ingest.keyframes) == \
        ("vggt", 2, 5.0, 40, True)  # vggt always takes its own preprocessing
    assert (config.keyframes.policy, config.keyframes.min_parallax) == ("parallax", 0.01)
    assert not config.gaussians and config.rrd and config.viz.mode == "none"
    assert config.final_ba
    assert reconstruct_config(SessionOptions(resolution=256), None).ingest.resize == 256


def test_the_servers_pixel_limit_reaches_what_a_job_decodes_itself():
    assert reconstruct_config(SessionOptions(), None, max_pixels=1234).ingest.max_pixels == 1234


def test_the_servers_keyframer_lag_reaches_a_live_job():
    assert reconstruct_config(SessionOptions(), None, keyframer_lag_s=3600).live.keyframer_lag_s == 3600.0
    assert reconstruct_config(SessionOptions(), None).live.keyframer_lag_s == ReconstructConfig().live.keyframer_lag_s


def test_keyframe_options_map_onto_the_parallax_keyframer_and_bad_values_are_refused():
    import pytest
    from pydantic import ValidationError

    for policy in ("auto", "parallax", "all"):
        assert reconstruct_config(SessionOptions(keyframes=policy), None).keyframes.policy == policy
    assert reconstruct_config(SessionOptions(), None).keyframes.min_parallax == ReconstructConfig().keyframes.min_parallax
    for bad in ({"keyframes": True}, {"keyframes": "some"}, {"keyframes": None}, {"min_parallax": 0},
                {"min_parallax": 1.5}, {"min_parallax": "0.01"}, {"drop_duplicates": "yes"}):
        with pytest.raises(ValidationError):
            SessionOptions(**bad)


def test_a_camera_the_client_knows_reaches_ingest_and_bad_ones_are_refused():
    import pytest
    from pydantic import ValidationError

    assert reconstruct_config(SessionOptions(fov_deg=70.0), None).ingest.fov_deg == 70.0
    assert reconstruct_config(SessionOptions(), None).ingest.metadata_focal is True
    assert reconstruct_config(SessionOptions(metadata_focal=False), None).ingest.metadata_focal is False
    given = SessionOptions.model_validate({"intrinsics": [500, 500, 319.5, 179.5]})
    assert reconstruct_config(given, None).ingest.intrinsics == (500.0, 500.0, 319.5, 179.5)
    for bad in ({"intrinsics": [500, 500, 320]}, {"intrinsics": [0, 500, 320, 180]}, {"fov_deg": 0},
                {"fov_deg": 180}, {"fov_deg": 70, "intrinsics": [500, 500, 320, 180]}, {"fov_deg": "70"}):
        with pytest.raises(ValidationError):
            SessionOptions.model_validate(bad)
