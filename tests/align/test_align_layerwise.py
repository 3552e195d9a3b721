import numpy as np
import pytest

from align.layers import segment_window
from align.layerwise import cross_window_seeds, propagate_scales, segment_links


def test_segment_links_pairs_segments_by_iou_threshold():
    a = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    b = np.array([[0, 0, 0, 1, 1, 1, 1, 1]])
    links = segment_links(a, b, min_iou=0.3)
    got = {(int(i), int(j)): float(w) for i, j, w in zip(links.a, links.b, links.iou)}
    # 0-0: 3 / 4, 1-1: 4 / 5, 0-1: 1 / 8 (below the threshold), 1-0: no overlap.
    assert got == {(0, 0): pytest.approx(0.75), (1, 1): pytest.approx(0.8)}
    assert len(segment_links(a, b, min_iou=0.1).a) == 3


def test_cross_window_seeds_measure_each_layers_depth_scale(plane_scene):
    truth = plane_scene.depth[3]
    fg = plane_scene.layers[3] == 1
    window = truth * np.where(fg, 1.0 / 1.2, 1.0 / 0.9)  # panel 20 % too near, wall 10 % too far
    world_labels = segment_window(truth[None].astype(np.float32), truth[None] > 0)[0]
    window_labels = segment_window(window[None].astype(np.float32), window[None] > 0)[0]
    seg, scale, weight = cross_window_seeds(world_labels, truth, window_labels, window, truth > 0)
    assert len(seg) == 2
    panel = np.bincount(window_labels[fg]).argmax()
    scales = dict(zip(seg.tolist(), scale.tolist()))
    assert scales[panel] == pytest.approx(1.2, rel=1e-6)
    assert scales[1 - panel] == pytest.approx(0.9, rel=1e-6)
    assert np.all(weight > 0.9)


def test_cross_window_seeds_ignore_links_beyond_the_scale_limit(plane_scene):
    truth = plane_scene.depth[0]
    labels = segment_window(truth[None].astype(np.float32), truth[None] > 0)[0]
    seg, _, _ = cross_window_seeds(labels, truth * 3.0, labels, truth, truth > 0, scale_limit=2.0)
    assert len(seg) == 0


def test_propagation_carries_seeds_forward_as_iou_weighted_means():
    # Frame 0: segments 0 | 1. Frame 1: one segment 0 spanning both. Frame 2: 0 | 1 again, and a new segment 2.
    f0 = np.array([[0, 0, 1, 1, 1, 1]])
    f1 = np.array([[0, 0, 0, 0, 0, 0]])
    f2 = np.array([[0, 0, 0, 0, 1, 2]])
    labels = np.stack([f0, f1, f2])
    seeds = {0: (np.array([0, 1]), np.array([2.0, 1.0]), np.array([1.0, 1.0]))}
    result = propagate_scales(labels, seeds, link_iou=0.3)
    # Frame 1 receives 2.0 with IoU 2/6 and 1.0 with IoU 4/6.
    expected_f1 = (2.0 * 2 / 6 + 1.0 * 4 / 6) / (2 / 6 + 4 / 6)
    assert result.segment_scales[1][0] == pytest.approx(expected_f1)
    assert result.segment_scales[2][0] == pytest.approx(expected_f1)  # IoU 4/6 link
    assert np.isnan(result.segment_scales[2][1])  # IoU 1/6: below the threshold
    np.testing.assert_allclose(result.scale_map[2], [[expected_f1] * 4 + [1.0, 1.0]])
    assert result.reached_fraction == pytest.approx(16 / 18)


def test_propagation_without_seeds_leaves_the_global_scale():
    labels = np.zeros((3, 4, 4), np.int32)
    result = propagate_scales(labels, {}, link_iou=0.3)
    assert np.all(result.scale_map == 1.0)
    assert result.reached_fraction == 0.0
