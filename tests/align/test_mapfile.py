"""Saved-map keyframes: the npz round trip, and a new stream that starts inside a saved map."""

import numpy as np
import pytest
from align_scenes import room_window

from align.aligner import AlignConfig, AlignmentError, StreamAligner
from align.mapfile import (
    MapKeyframe,
    bytes_per_feature,
    keyframes_from_arrays,
    keyframes_to_arrays,
    load_keyframes,
    save_keyframes,
    stored_bytes,
)
from align.reattach import Keyframe
from align.synthetic import random_sim3
from recon.features import Features
from stream4d.geometry import Sim3, rotation_angle_deg


def random_keyframe(rng, n: int, frame: int, run: int) -> MapKeyframe:
    desc = np.sqrt(rng.dirichlet(np.ones(128), n)).astype(np.float32)  # RootSIFT: unit length, in [0, 1]
    kf = Keyframe(frame, Features(rng.uniform(0, 500, (n, 2)), desc), rng.normal(0, 5, (n, 3)),
                  rng.uniform(1, 30, n))
    c2w = np.eye(4)
    c2w[:3, 3] = rng.normal(size=3)
    return MapKeyframe(kf, c2w, np.array([[300.0, 0, 256], [0, 300, 77], [0, 0, 1]]), run)


def test_keyframes_survive_the_npz_round_trip_to_their_stored_precision(tmp_path):
    rng = np.random.default_rng(0)
    kfs = [random_keyframe(rng, 40, 7, 0), random_keyframe(rng, 0, 9, 0), random_keyframe(rng, 25, 3, 1)]
    back = load_keyframes(save_keyframes(tmp_path / "keyframes.npz", kfs))
    assert [(m.frame_index, m.run, len(m.keyframe.points)) for m in back] == [(7, 0, 40), (9, 0, 0), (3, 1, 25)]
    for a, b in zip(kfs, back):
        np.testing.assert_array_equal(a.c2w, b.c2w)
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_allclose(b.keyframe.points, a.keyframe.points, rtol=1e-6, atol=1e-6)  # float32
        np.testing.assert_allclose(b.keyframe.features.keypoints, a.keyframe.features.keypoints, atol=1e-4)
        np.testing.assert_allclose(b.keyframe.features.descriptors, a.keyframe.features.descriptors, atol=6e-4)
        np.testing.assert_allclose(b.keyframe.depth, a.keyframe.depth, rtol=1e-6)
    assert bytes_per_feature() == 280 and stored_bytes(kfs) == 65 * 280 + 3 * 224


def test_a_refocused_keyframe_keeps_each_point_on_its_keypoint_at_its_depth():
    """A global adjustment that refines the focal length: each world point moves onto its keypoint's ray
    through the new camera, at the depth it had; pose, features and run stay."""
    rng = np.random.default_rng(2)
    m = random_keyframe(rng, 30, 4, 1)
    m.c2w[:3, :3] = random_sim3(rng).R
    moved = m.refocused(1.02)
    assert moved.K[0, 0] == pytest.approx(306.0) and moved.K[1, 1] == pytest.approx(306.0)
    np.testing.assert_array_equal(moved.K[:2, 2], m.K[:2, 2])
    np.testing.assert_array_equal(moved.c2w, m.c2w)
    assert moved.run == 1 and moved.frame_index == 4 and moved.keyframe.features is m.keyframe.features
    w2c = np.linalg.inv(moved.c2w)
    cam = moved.keyframe.points @ w2c[:3, :3].T + w2c[:3, 3]
    np.testing.assert_allclose(cam[:, 2], m.keyframe.depth, rtol=1e-9)
    uv = cam @ moved.K.T
    np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], m.keyframe.features.keypoints, atol=1e-8)


def test_inconsistent_keyframe_arrays_are_refused_with_the_reason():
    arrays = keyframes_to_arrays([random_keyframe(np.random.default_rng(1), 10, 0, 0)])
    arrays["offsets"] = np.array([0, 12])
    with pytest.raises(ValueError, match="offsets do not cut 10 features"):
        keyframes_from_arrays(arrays)
    del arrays["points"]
    with pytest.raises(ValueError, match="lacks the arrays"):
        keyframes_from_arrays(arrays)


def test_a_stream_started_in_a_saved_map_is_relocalised_into_its_world(room, tmp_path):
    rng = np.random.default_rng(2)
    config = AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False)
    first = StreamAligner(config)
    first.record_map(per_window=3)
    to_world = random_sim3(rng)
    first.add(room_window(room, range(0, 8), to_world))
    first.add(room_window(room, range(6, 12), to_world))
    saved = first.map_keyframes()
    assert len(saved) == 6 and sorted({m.frame_index for m in saved}) == [0, 4, 7, 8, 10, 11]
    saved = load_keyframes(save_keyframes(tmp_path / "kf.npz", saved))

    later = StreamAligner(config)
    later.record_map()
    later.start_from_map(saved)
    aligned = later.add(room_window(room, range(9, 17), random_sim3(rng)))  # its own frame, shares no window
    assert aligned.segment == 0 and later.segment == 0
    link = later.map_link
    assert link is not None and (link.from_segment, link.to_segment) == (1, 0)
    truth = to_world.apply_c2w(room.c2w[9:17])
    extent = np.ptp(to_world.apply(room.c2w[:, :3, 3]), axis=0).max()
    assert np.linalg.norm(aligned.prediction.c2w[:, :3, 3] - truth[:, :3, 3], axis=1).max() < 0.01 * extent
    assert max(rotation_angle_deg(a[:3, :3] @ b[:3, :3].T) for a, b in zip(aligned.prediction.c2w, truth)) < 0.5
    # The map keeps the loaded keyframes and this stream's, all in the map's world.
    union = later.map_keyframes()
    assert len(union) == len(saved) + 3 and all(a is b for a, b in zip(union, saved))


def test_a_map_can_only_be_given_before_the_first_window(room):
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 8), Sim3.identity()))
    with pytest.raises(AlignmentError, match="before the first window"):
        aligner.start_from_map([])
    with pytest.raises(AlignmentError, match="record_map"):
        aligner.map_keyframes()
