"""The quality check's grey statistics: those of the channels' mean, computed from integer sums."""

import numpy as np

from recon.quality import FrameQualityFilter, channel_mean_stats
from stream4d.contracts import Frame


def test_channel_mean_stats_equal_numpy_on_the_mean_of_channels():
    rng = np.random.default_rng(3)
    for shape in [(384, 512, 3), (17, 31, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        image[: shape[0] // 3] = 255  # saturated channels: their sum must not wrap around
        mean, std = channel_mean_stats(image)
        g = image.mean(axis=2)
        assert abs(mean - g.mean()) < 1e-9 and abs(std - g.std()) < 1e-9


def test_black_and_blank_frames_are_refused():
    q = FrameQualityFilter()
    black = np.full((48, 64, 3), 5, np.uint8)
    grey = np.full((48, 64, 3), 128, np.uint8)
    textured = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert q.check(Frame(0, 0.0, black, "a")) == "black"
    assert q.check(Frame(1, 0.1, grey, "b")) == "blank"
    assert q.check(Frame(2, 0.2, textured, "c")) is None
