"""Retrieval frame order (recon/ordering.py) on a rendered room orbit whose frames were shuffled."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recon.ordering import OrderReport, chain_order, order_frames

FRAMES = 24  # a full circle: 15 degrees between neighbours, opposite views share nothing
SIZE = (256, 192)


@pytest.fixture(scope="module")
def orbit():
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

    scene = make_scene("room", seed=0)
    c2w = make_trajectory("orbit", FRAMES, seed=0, scene=scene, arc_deg=360.0 * (FRAMES - 1) / FRAMES)
    K = intrinsics_for(*SIZE, 60.0)
    return [v.to_frame() for v in render_sequence(scene, c2w, K, *SIZE, seed=0)]


def ring_gap(a: int, b: int) -> int:
    d = abs(a - b) % FRAMES
    return min(d, FRAMES - d)


def run_order(frames, kind="images", mode="auto"):
    report = OrderReport(mode)
    out = list(order_frames(iter(frames), kind, mode, report=report))
    return out, report


def test_shuffled_orbit_comes_back_as_a_chain_of_neighbours(orbit):
    shuffled = list(orbit)
    random.Random(0).shuffle(shuffled)
    out, report = run_order(shuffled)
    assert report.reordered and report.reason == "retrieval order"
    assert sorted(f.index for f in out) == list(range(FRAMES))  # every frame once, index kept
    assert [f.index for f in out] == report.order
    gaps = [ring_gap(a.index, b.index) for a, b in zip(out, out[1:])]
    assert max(gaps) <= 2, gaps  # consecutive frames are neighbours on the circle
    assert report.given_median < report.chain_median
    assert not report.groups  # one connected ring


def test_given_keeps_the_order(orbit):
    shuffled = list(orbit)
    random.Random(1).shuffle(shuffled)
    out, report = run_order(shuffled, mode="given")
    assert [f.index for f in out] == [f.index for f in shuffled]
    assert not report.reordered


def test_auto_leaves_an_ordered_sequence_alone(orbit):
    out, report = run_order(orbit)
    assert [f.index for f in out] == list(range(FRAMES))
    assert not report.reordered and report.reason == "every consecutive pair overlaps"
    assert report.chain_median is None  # decided without scoring every pair


def test_live_inputs_and_ordered_videos_are_streamed_as_given(orbit):
    shuffled = list(orbit)
    random.Random(2).shuffle(shuffled)
    out, report = run_order(shuffled, kind="camera", mode="retrieval")
    assert [f.index for f in out] == [f.index for f in shuffled] and report.reason == "live input"
    out, report = run_order(orbit, kind="video")
    assert [f.index for f in out] == list(range(FRAMES)) and report.frames == 0  # decided on the probe


def test_disconnected_parts_become_groups():
    # Two triangles of overlapping frames and nothing between them.
    scores = np.zeros((6, 6), np.int64)
    for a, b, s in [(0, 2, 90), (2, 4, 80), (0, 4, 30), (1, 3, 70), (3, 5, 60)]:
        scores[a, b] = scores[b, a] = s
    order = chain_order(scores)
    assert sorted(order) == list(range(6))
    assert set(order[:3]) == {0, 2, 4} and set(order[3:]) == {1, 3, 5}


def test_bad_mode_is_refused(orbit):
    with pytest.raises(ValueError, match="order must be one of"):
        list(order_frames(iter(orbit), "images", "random"))


def test_an_input_that_breaks_while_buffered_keeps_the_frames_before_it(orbit):
    from recon.ingest import IngestError

    def breaking():
        yield from orbit[:5]
        raise IngestError("photos", "unreadable", "a broken file")

    out, report = [], OrderReport("auto")
    with pytest.raises(IngestError, match="broken file"):
        for f in order_frames(breaking(), "images", "auto", report=report):
            out.append(f)
    assert [f.index for f in out] == list(range(5)) and not report.reordered
