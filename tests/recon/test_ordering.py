"""Retrieval frame order (recon/ordering.py) on a rendered room orbit whose frames were shuffled."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recon.features import detect_features
from recon.ordering import OrderingConfig, OrderReport, chain_order, order_frames
from recon.retrieval import similar_pairs

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


def run_order(frames, kind="images", mode="auto", cfg=None):
    report = OrderReport(mode)
    out = list(order_frames(iter(frames), kind, mode, cfg, report=report))
    return out, report


# The orbit as if it were a long input: past 8 frames, pairs come from retrieval, not from all pairs.
LONG = OrderingConfig(all_pairs_frames=8, retrieval_top=4, probe_pairs=5)


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


def test_retrieval_candidates_of_each_frame_include_its_neighbours_on_the_circle(orbit):
    descriptors = [detect_features(f.image, 1024).descriptors for f in orbit]
    pairs = similar_pairs(descriptors, top=4)
    assert len(pairs) < FRAMES * 4  # not every pair: at most 4 per frame
    for k in range(FRAMES):
        neighbours = {b if a == k else a for a, b in pairs if k in (a, b)}
        assert (k + 1) % FRAMES in neighbours or (k - 1) % FRAMES in neighbours, (k, neighbours)
        assert min(ring_gap(k, j) for j in neighbours) == 1


def test_a_shuffled_input_past_the_all_pairs_limit_is_ordered_from_retrieval_candidates(orbit):
    shuffled = list(orbit)
    random.Random(3).shuffle(shuffled)
    out, report = run_order(shuffled, cfg=LONG)
    assert report.reordered and sorted(f.index for f in out) == list(range(FRAMES))
    gaps = [ring_gap(a.index, b.index) for a, b in zip(out, out[1:])]
    assert max(gaps) <= 2, gaps
    assert not report.groups


def test_an_ordered_input_past_the_all_pairs_limit_is_kept_after_a_spread_probe(orbit):
    out, report = run_order(orbit, cfg=LONG)
    assert [f.index for f in out] == list(range(FRAMES))
    assert report.reason == "5 consecutive pairs spread over the input overlap"
    assert report.chain_median is None


def test_an_input_longer_than_the_buffer_keeps_its_order(orbit):
    shuffled = list(orbit)
    random.Random(4).shuffle(shuffled)
    out, report = run_order(shuffled, cfg=OrderingConfig(max_frames=10))
    assert [f.index for f in out] == [f.index for f in shuffled]
    assert report.reason == "more than 10 frames: kept in order" and not report.reordered


def test_frames_are_described_once_when_the_probe_does_not_keep_the_order(orbit, monkeypatch):
    import recon.ordering as ordering

    calls = []
    real = ordering.detect_features
    monkeypatch.setattr(ordering, "detect_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    shuffled = list(orbit)
    random.Random(5).shuffle(shuffled)
    _, report = run_order(shuffled)
    assert report.reordered and len(calls) == FRAMES
