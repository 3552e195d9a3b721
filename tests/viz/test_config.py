"""VizConfig rejects bad settings with a message naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from viz import VizConfig


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "window"}, "mode"),
    ({"gaussian_style": "voxels"}, "gaussian_style"),
    ({"point_budget": 0}, "point_budget"),
    ({"cache_every": 0}, "cache_every"),
    ({"queue_size": 0}, "queue_size"),
    ({"conf_quantile": 1.0}, "conf_quantile"),
    ({"jpeg_quality": 0}, "jpeg_quality"),
    ({"keyframe_every": 0}, "keyframe_every"),
    ({"depth_max_side": 0}, "depth_max_side"),
    ({"final_point_budget": 0}, "final_point_budget"),
    ({"grpc_port": 70000}, "grpc_port"),
])
def test_bad_setting_raises_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VizConfig(**kwargs)


def test_rrd_path_is_a_path_and_enables_logging_without_a_viewer(tmp_path):
    config = VizConfig(rrd_path=str(tmp_path / "r.rrd"))
    assert isinstance(config.rrd_path, Path)
    assert config.enabled
    assert not VizConfig().enabled
