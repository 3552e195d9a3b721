"""The served web viewer, opened by headless Chromium, shows the stream in its 3D view."""

from __future__ import annotations

import pytest
from viz_fixtures import make_snapshot

from stream4d.contracts import StreamStats
from viz import RerunObserver, VizConfig
from viz.browser import IMAGE_BOX, SCENE_BOX, capture_viewer, chromium_binary, region_variety, shows_data

pytestmark = pytest.mark.skipif(
    chromium_binary() is None,
    reason="needs headless Chromium for the web viewer screenshot: apt-get install -y chromium",
)


def test_served_web_viewer_shows_a_non_empty_3d_view_and_the_jpeg_image(tmp_path, fern_windows):
    obs = RerunObserver(VizConfig(mode="serve", announce=False))
    try:
        for i, w in enumerate(fern_windows):
            obs.on_window(w)
            obs.on_stats(StreamStats(windows=i + 1, fps=2.0 + i))
        obs.on_gaussians(make_snapshot(fern_windows, n_static=20_000))
        obs.close()  # the gRPC server keeps serving the finished recording
        # Waits for the image panel: the JPEG (EncodedImage) is decoded by the viewer itself.
        shot = capture_viewer(obs.viewer_url, tmp_path / "viewer.png", size=(1024, 640),
                              timeout=240, settle=0, box=IMAGE_BOX)
    finally:
        obs.shutdown()
    assert shows_data(shot, SCENE_BOX), f"3D view looks empty: (grey std, coloured) = {region_variety(shot, SCENE_BOX)}"
    assert shows_data(shot, IMAGE_BOX), f"image looks empty: (grey std, coloured) = {region_variety(shot, IMAGE_BOX)}"
