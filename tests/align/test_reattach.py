"""Re-attaching a lost segment: keyframes, the 3D-3D similarity, and the aligner's use of them."""

import numpy as np
import pytest
from align_scenes import room_window

from align.aligner import AlignConfig, StreamAligner
from align.reattach import ReattachConfig, ransac_sim3
from align.synthetic import random_sim3, window_from_geometry
from stream4d.geometry import rotation_angle_deg
from stream4d.synthetic import make_scene, make_trajectory, render_view

W, H = 256, 192




def test_ransac_similarity_is_recovered_through_40_percent_outliers():
    rng = np.random.default_rng(0)
    truth = random_sim3(rng)
    src = rng.uniform(-2, 2, (200, 3)) + [0, 0, 5]
    dst = truth.apply(src) + rng.normal(0, 1e-3, src.shape)
    bad = rng.choice(200, 80, replace=False)
    dst[bad] += rng.uniform(-3, 3, (80, 3))
    S, inliers = ransac_sim3(src, dst, np.full(200, 0.05), 300, rng)
    assert inliers.sum() >= 115 and inliers[bad].sum() <= 2
    assert S.s == pytest.approx(truth.s, rel=1e-3)
    assert rotation_angle_deg(S.R @ truth.R.T) < 0.05
    np.testing.assert_allclose(S.t, truth.t, atol=0.02)


def test_a_segment_that_sees_the_earlier_world_again_is_placed_back_in_it(room):
    rng = np.random.default_rng(1)
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    to_world = random_sim3(rng)  # the first window defines the world: truth = to_world(scene)
    first = aligner.add(room_window(room, range(0, 8), to_world))
    # Frames 8-9 are lost; the next window shares no frame with frames 6-7 and comes in its own frame.
    later = aligner.add(room_window(room, range(10, 18), random_sim3(rng)))
    assert first.segment == 0 and later.segment == 0
    link = later.reattached
    assert link is not None and (link.from_segment, link.to_segment) == (1, 0) and link.inliers >= 25
    assert later.info["placement"] == "new segment" and later.info["reattached"]["to_segment"] == 0
    truth_c2w = to_world.apply_c2w(room.c2w[10:18])
    extent = np.ptp(to_world.apply(room.c2w[:, :3, 3]), axis=0).max()
    err = np.linalg.norm(later.prediction.c2w[:, :3, 3] - truth_c2w[:, :3, 3], axis=1)
    assert err.max() < 0.02 * extent
    assert max(rotation_angle_deg(a[:3, :3] @ b[:3, :3].T) for a, b in zip(later.prediction.c2w, truth_c2w)) < 1.0
    # The next window registers as usual, in world 0.
    after = aligner.add(room_window(room, range(16, 20), random_sim3(rng)))
    assert after.segment == 0 and after.reattached is None and after.info["placement"] == "registered"


def test_a_segment_of_unrelated_content_stays_detached(room):
    rng = np.random.default_rng(2)
    street = make_scene("street", seed=5)
    c2w = make_trajectory("sideways", 6, seed=5, scene=street)
    views = [render_view(street, c, room.K, W, H) for c in c2w]
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 8), random_sim3(rng)))
    elsewhere = window_from_geometry(np.arange(30, 36), np.stack([v.rgb for v in views]),
                                     np.stack([v.depth for v in views]), c2w, room.K, random_sim3(rng))
    out = aligner.add(elsewhere)
    assert out.segment == 1 and out.reattached is None


def test_reattaching_can_be_switched_off(room):
    rng = np.random.default_rng(1)
    config = AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False,
                         reattach=ReattachConfig(enabled=False))
    aligner = StreamAligner(config)
    aligner.add(room_window(room, range(0, 8), random_sim3(rng)))
    later = aligner.add(room_window(room, range(10, 18), random_sim3(rng)))
    assert later.segment == 1 and later.reattached is None


def test_segment_numbers_are_not_reused_after_a_reattachment(room):
    rng = np.random.default_rng(4)
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 8), random_sim3(rng)))
    assert aligner.add(room_window(room, range(10, 16), random_sim3(rng))).segment == 0  # 1 came back as 0
    street = make_scene("street", seed=5)
    c2w = make_trajectory("sideways", 4, seed=5, scene=street)
    views = [render_view(street, c, room.K, W, H) for c in c2w]
    lost = window_from_geometry(np.arange(40, 44), np.stack([v.rgb for v in views]),
                                np.stack([v.depth for v in views]), c2w, room.K, random_sim3(rng))
    assert aligner.add(lost).segment == 2


def test_a_detached_window_with_no_new_frame_is_aligned_without_a_reattach_attempt(room):
    """A window whose posed frames were all emitted before (the model posed only the overlap)."""
    rng = np.random.default_rng(5)
    street = make_scene("street", seed=5)
    c2w = make_trajectory("sideways", 6, seed=5, scene=street)
    views = [render_view(street, c, room.K, W, H) for c in c2w]
    rgb, depth = np.stack([v.rgb for v in views]), np.stack([v.depth for v in views])
    aligner = StreamAligner(AlignConfig(window=6, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 6), random_sim3(rng)))
    lost = aligner.add(window_from_geometry(np.arange(30, 36), rgb, depth, c2w, room.K, random_sim3(rng)))
    assert lost.segment == 1
    again = aligner.add(window_from_geometry(np.arange(34, 36), rgb[4:], depth[4:], c2w[4:], room.K,
                                             random_sim3(rng)))
    assert not again.is_new.any() and again.segment == 1 and again.reattached is None
