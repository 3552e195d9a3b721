"""The hand-off between the pipeline and the logging thread: bounded, never blocking, losing no camera."""

from __future__ import annotations

import time

import numpy as np
import pytest

from viz import work_queue as wq


def test_put_never_blocks_and_holds_at_most_maxsize_full_windows(fern_windows):
    q = wq.DropQueue(maxsize=2)
    start = time.perf_counter()
    for _ in range(50):
        for w in fern_windows:
            q.put(wq.WINDOW, w)
    assert time.perf_counter() - start < 1.0
    kinds = q.kinds()
    assert kinds.count(wq.WINDOW) == 2
    assert kinds.count(wq.CAMERAS) == 1  # every degraded window merged into one batch
    assert q.dropped[wq.WINDOW] == 50 * len(fern_windows) - 2


def test_degraded_windows_keep_every_new_camera_in_stream_order(fern_windows):
    q = wq.DropQueue(maxsize=1)
    for w in fern_windows:
        q.put(wq.WINDOW, w)
    first, last = q.get(timeout=0), q.get(timeout=0)
    assert (first.kind, last.kind) == (wq.CAMERAS, wq.WINDOW)
    new_frames = [int(f) for w in fern_windows for f in w.prediction.frame_indices[w.is_new]]
    kept = list(first.payload.frame_indices) + [int(f) for f in last.payload.prediction.frame_indices[last.payload.is_new]]
    assert kept == new_frames
    # The batch carries each frame's pose and one alignment scale per degraded window.
    w0 = fern_windows[0]
    np.testing.assert_array_equal(first.payload.c2w[:5], w0.prediction.c2w)
    assert first.payload.window_scales[:, 0].tolist() == [w.window_index for w in fern_windows[:-1]]


def test_gaussians_and_stats_keep_only_the_newest_pending_item():
    q = wq.DropQueue(maxsize=4)
    for i in range(5):
        q.put(wq.GAUSSIANS, ("snapshot", i))
        q.put(wq.STATS, ("stats", i))
    items = [q.get(timeout=0), q.get(timeout=0)]
    assert q.get(timeout=0) is None
    assert sorted(item.payload for item in items) == [("snapshot", 4), ("stats", 4)]
    assert q.dropped == {wq.GAUSSIANS: 4, wq.STATS: 4}


def test_get_waits_for_an_item_and_times_out_empty():
    q = wq.DropQueue(maxsize=1)
    start = time.perf_counter()
    assert q.get(timeout=0.05) is None
    assert time.perf_counter() - start >= 0.04
    q.put_stop()
    assert q.get(timeout=0).kind == wq.STOP


def test_maxsize_below_one_is_rejected():
    with pytest.raises(ValueError, match="maxsize"):
        wq.DropQueue(maxsize=0)
