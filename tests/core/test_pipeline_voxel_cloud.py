"""The point cloud kept when the splat cache is off: one voxel grid per world segment."""

from dataclasses import replace

import numpy as np

from stream4d.contracts import AlignedWindow, Reattachment, WindowPrediction
from stream4d.geometry import Sim3
from stream4d.pipeline.sink import VoxelCloud


def _window(segment: int, offset: float = 0.0, index: int = 0) -> AlignedWindow:
    """Two 8x8 views of a plane at depth 2 (x, y in [0, 1)), shifted by ``offset`` along x."""
    S, H, W = 2, 8, 8
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    points = np.stack([u / W + offset, v / H, np.full_like(u, 2.0)], axis=-1)
    pred = WindowPrediction(
        frame_indices=np.arange(S, dtype=np.int64) + 10 * index, timestamps=np.arange(S, dtype=np.float64),
        sources=("a", "b"), images=np.full((S, H, W, 3), 100, np.uint8), depth=np.full((S, H, W), 2.0, np.float32),
        depth_conf=np.ones((S, H, W), np.float32), c2w=np.tile(np.eye(4), (S, 1, 1)),
        K=np.tile(np.array([[8.0, 0, 3.5], [0, 8.0, 3.5], [0, 0, 1]]), (S, 1, 1)),
        points=np.broadcast_to(points, (S, H, W, 3)).copy(), points_conf=np.linspace(0, 1, S * H * W, dtype=np.float32)
        .reshape(S, H, W), pixel_maps=np.tile(np.eye(3), (S, 1, 1)),
        input_sizes=np.tile([W, H], (S, 1)).astype(np.int64), backend="plane")
    return AlignedWindow(prediction=pred, sim3_scale=1.0, sim3_R=np.eye(3), sim3_t=np.zeros(3),
                         is_new=np.ones(S, bool), window_index=index, segment=segment)


def test_segments_far_apart_in_number_never_share_a_voxel():
    cloud = VoxelCloud()
    cloud.add(_window(0, index=0))
    first = len(cloud.points()[0])
    assert first > 0
    cloud.add(_window(16, index=1))  # the same place, seen again by segment 16 (0 + 16: one nibble apart)
    assert len(cloud.points()[0]) == first  # segment 16's own points, not merged into segment 0
    cloud.segment = 0
    assert len(cloud.points()[0]) == first  # and segment 0 still has all of its own


def test_a_revisited_voxel_keeps_its_first_point_and_reattachment_moves_a_segment():
    cloud = VoxelCloud()
    cloud.add(_window(0, index=0))
    n = len(cloud.points()[0])
    cloud.add(replace(_window(0, index=1)))  # the same voxels again: nothing new
    assert len(cloud.points()[0]) == n
    cloud.add(_window(3, offset=5.0, index=2))
    link = Reattachment(from_segment=3, to_segment=0, sim3=Sim3(1.0, np.eye(3), np.array([-5.0, 0, 0])), inliers=30,
                        keyframe_index=0, frame_index=20)
    cloud.reattach(link)
    cloud.segment = 0
    pts, _ = cloud.points()
    assert len(pts) == 2 * n  # both segments' points, now in one world
    assert np.abs(pts[:, 0]).max() < 1.0 + 1e-6  # the moved ones landed on top of the first ones


def test_the_largest_segment_is_the_one_with_the_most_points():
    cloud = VoxelCloud()
    cloud.add(_window(0, index=0))
    cloud.add(_window(0, offset=5.0, index=1))  # segment 0 grows past what segment 1 will hold
    cloud.add(_window(1, index=2))
    assert cloud.segment == 1 and cloud.largest_segment() == 0
    assert len(cloud.points(0)[0]) > len(cloud.points()[0]) > 0


def test_a_saturated_confidence_still_keeps_points():
    # A backend whose confidence sits at its ceiling: nothing lies above the median.
    window = _window(0)
    conf = np.ones_like(window.prediction.points_conf)
    cloud = VoxelCloud()
    cloud.add(replace(window, prediction=replace(window.prediction, points_conf=conf)))
    pts, _ = cloud.points()
    assert len(pts) == 16  # every other pixel each way of the plane both views see
    zero = replace(window, prediction=replace(window.prediction, points_conf=np.zeros_like(conf)), window_index=1)
    cloud = VoxelCloud()
    cloud.add(zero)
    assert len(cloud.points()[0]) == 0  # no confidence at all is no point
