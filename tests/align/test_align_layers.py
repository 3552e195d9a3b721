import numpy as np

from align.layers import merge_adjacent_regions, scaled_min_size, segment_window


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of pixels whose layer's majority ground-truth layer is their own."""
    agree = 0
    for k in np.unique(labels):
        agree += np.bincount(truth[labels == k]).max()
    return agree / labels.size


def test_two_plane_depth_map_splits_into_one_layer_per_plane(plane_scene):
    depth = plane_scene.depth.astype(np.float32)
    labels = segment_window(depth, depth > 0)
    for frame, truth in zip(labels, plane_scene.layers):
        assert frame.max() + 1 == 2
        assert purity(frame, truth) > 0.995


def test_segmentation_does_not_depend_on_the_windows_depth_units(plane_scene):
    depth = plane_scene.depth[:3].astype(np.float32)
    metres = segment_window(depth, depth > 0)
    millimetres = segment_window(depth * 1000, depth > 0)
    np.testing.assert_array_equal(metres, millimetres)


def test_segment_window_segments_only_the_requested_frames(plane_scene):
    depth = plane_scene.depth[:6].astype(np.float32)
    everything = segment_window(depth, depth > 0)
    tail = segment_window(depth, depth > 0, frames=np.array([4, 5]))
    np.testing.assert_array_equal(tail, everything[4:])


def test_merge_joins_adjacent_regions_with_close_mean_depths_transitively():
    labels = np.repeat(np.array([[0, 0, 1, 1, 2, 2, 3, 3]]), 4, axis=0)
    depth = np.repeat(np.array([[1.0, 1.0, 1.05, 1.05, 1.1, 1.1, 3.0, 3.0]]), 4, axis=0)
    merged = merge_adjacent_regions(labels, depth, threshold=0.08)
    assert len(np.unique(merged[:, :6])) == 1  # 1.0 - 1.05 - 1.1 chain into one layer
    assert merged[0, 6] != merged[0, 0]  # 3.0 stays apart
    assert merged.max() == 1


def test_merge_never_joins_regions_that_do_not_touch():
    labels = np.array([[0, 1, 2]] * 3)
    depth = np.array([[1.0, 5.0, 1.0]] * 3)
    merged = merge_adjacent_regions(labels, depth, threshold=0.5)
    assert merged[0, 0] != merged[0, 2]


def test_min_size_scales_with_pixel_count_from_laser_resolution():
    assert scaled_min_size(500, 392, 518) == 500
    assert scaled_min_size(500, 196, 259) == 125
    assert scaled_min_size(500, 2, 2) == 1


def test_decimated_segmentation_keeps_the_layers_at_full_resolution(plane_scene):
    depth = plane_scene.depth[:4].astype(np.float32)
    H, W = depth.shape[1:]
    labels = segment_window(depth, depth > 0, max_side=max(H, W) // 2)
    assert labels.shape == depth.shape
    for frame, truth in zip(labels, plane_scene.layers):
        assert frame.max() + 1 == 2
        assert purity(frame, truth) > 0.99  # only the boundary's nearest-neighbour staircase differs


def test_max_side_at_or_above_the_frame_size_changes_nothing(plane_scene):
    depth = plane_scene.depth[:2].astype(np.float32)
    np.testing.assert_array_equal(segment_window(depth, depth > 0, max_side=max(depth.shape[1:])),
                                  segment_window(depth, depth > 0))
