"""Keyframe selection skips near-duplicate frames."""

from __future__ import annotations

import numpy as np
from _ingest_media import VIDEOS, textured_frame, write_video

from recon.ingest import IngestOptions, KeyframeSelector, open_source


def test_video_with_repeated_frames_keeps_one_frame_per_distinct_image(tmp_path):
    frames, numbers = [], []
    for scene, repeats in enumerate([3, 1, 4, 2]):
        numbers.append(len(frames))
        frames += [textured_frame(100 + scene)] * repeats
    path = write_video(tmp_path / "repeats.mp4", frames)
    with open_source(path, IngestOptions(keyframes=True)) as src:
        kept = list(src)
    assert [f.source for f in kept] == [f"repeats.mp4#{n}" for n in numbers]
    assert [f.index for f in kept] == [0, 1, 2, 3]
    assert src.stats.skipped_keyframe == len(frames) - 4
    assert src.stats.yielded == 4 and src.stats.decoded == len(frames)


def test_first_frame_is_always_kept_even_with_an_impossible_threshold(tmp_path):
    path = write_video(tmp_path / "two.mp4", [textured_frame(1), textured_frame(2)])
    with open_source(path, IngestOptions(keyframes=True, keyframe_min_motion=1.0)) as src:
        kept = [f.source for f in src]
    assert kept == ["two.mp4#0"]
    assert src.stats.skipped_keyframe == 1


def test_default_threshold_thins_a_slow_24fps_pan_but_keeps_it_moving():
    with open_source(VIDEOS / "great_wall.mp4", IngestOptions(keyframes=True, max_frames=10)) as src:
        kept = [f for f in src]
    numbers = [int(f.source.split("#")[1]) for f in kept]
    gaps = np.diff(numbers)
    assert len(kept) == 10
    assert 2 <= gaps.min() and gaps.max() <= 12  # measured: ~4-5 frames of this pan per keyframe


def test_motion_is_measured_against_the_last_kept_frame_not_the_previous_one():
    base = textured_frame(7, 128, 96).astype(np.int16)
    selector = KeyframeSelector(min_motion=0.02)
    assert selector.keep(base.astype(np.uint8))
    # Each step brightens by 3 grey levels (~0.012): below the threshold alone, above it once accumulated.
    decisions = [selector.keep(np.clip(base + 3 * k, 0, 255).astype(np.uint8)) for k in range(1, 5)]
    assert decisions == [False, True, False, True]
