"""A window whose model output is unusable is refused without disturbing the stream (align.validate)."""

from dataclasses import replace

import numpy as np
import pytest
from align_scenes import plane_windows

from align.aligner import AlignConfig, AlignmentError, StreamAligner, UnusableWindowError
from align.validate import unusable_reason
from align.worker import AlignmentWorker
from stream4d.contracts import SparseTracks


@pytest.fixture(scope="module")
def windows(plane_scene):
    """Windows of 6 frames sharing 2, each in its own random frame and scale."""
    return plane_windows(plane_scene, 6, 2, seed=3)


def with_nan_pose(pred, view=2):
    c2w = pred.c2w.copy()
    c2w[view, :3, 3] = np.nan
    return replace(pred, c2w=c2w)


def test_a_non_finite_pose_is_refused_naming_the_window_frames_and_reason(windows):
    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(windows[0])
    with pytest.raises(UnusableWindowError, match=r"window 1 \(frames \[4\]..\[9\]\) has non-finite camera poses") as err:
        aligner.add(with_nan_pose(windows[1]))
    assert isinstance(err.value, AlignmentError)  # callers catching AlignmentError still see it
    assert err.value.window_index == 1 and err.value.frame_indices == list(range(4, 10))
    assert "frames [6]" in err.value.reason


def test_a_refused_window_leaves_the_aligner_as_it_was(windows):
    """After a refusal the same window, intact, aligns exactly as if the refusal never happened."""
    clean = StreamAligner(AlignConfig(window=6, overlap=2))
    clean.add(windows[0])
    expected = clean.add(windows[1])

    aligner = StreamAligner(AlignConfig(window=6, overlap=2))
    aligner.add(windows[0])
    with pytest.raises(UnusableWindowError):
        aligner.add(with_nan_pose(windows[1]))
    got = aligner.add(windows[1])
    np.testing.assert_allclose(got.prediction.c2w, expected.prediction.c2w, atol=1e-9)
    assert got.sim3_scale == pytest.approx(expected.sim3_scale)
    assert got.segment == 0 and got.info["placement"] == "registered"


def test_a_window_without_any_depth_is_kept_with_its_views_marked_rotation_only(windows):
    p = windows[0]
    no_depth = replace(p, depth_conf=np.zeros_like(p.depth_conf))
    assert unusable_reason(no_depth) is None  # its poses are still the model's
    out = StreamAligner(AlignConfig(window=6, overlap=2)).add(no_depth)
    assert out.prediction.rotation_only.all() and out.info["no_parallax"] and out.is_new.all()
    flagged = replace(p, rotation_only=np.arange(p.num_frames) < 2)  # the model's own flag travels as it is
    out = StreamAligner(AlignConfig(window=6, overlap=2)).add(flagged)
    assert out.prediction.rotation_only.tolist() == [True, True, False, False, False, False]
    assert "no_parallax" not in out.info
    assert StreamAligner(AlignConfig(window=6, overlap=2)).add(p).prediction.rotation_only is None


def test_a_window_with_triangulated_tracks_but_no_dense_depth_keeps_its_poses_as_posed(windows):
    """Wide baselines: the model's tracks were triangulated, optical flow gave no dense depth."""
    p = windows[0]
    points = np.array([[0.0, 0.0, 4.0], [0.5, 0.2, 5.0]])
    tracks = SparseTracks(points=points, colors=np.zeros((2, 3), np.uint8), obs_point=np.array([0, 0, 1, 1]),
                          obs_view=np.array([0, 1, 0, 1]), obs_xy=np.zeros((4, 2)), K=p.K.astype(np.float64))
    out = StreamAligner(AlignConfig(window=6, overlap=2)).add(
        replace(p, depth_conf=np.zeros_like(p.depth_conf), sparse=tracks))
    assert out.prediction.rotation_only is None and "no_parallax" not in out.info


def test_depth_that_is_non_finite_wherever_confident_is_unusable(windows):
    p = windows[0]
    with pytest.raises(UnusableWindowError, match="non-finite depth"):
        StreamAligner(AlignConfig(window=6, overlap=2)).add(replace(p, depth=np.full_like(p.depth, np.nan)))


def test_isolated_non_finite_points_are_ignored_not_emitted(windows):
    p = windows[0]
    points = p.points.copy()
    points[1, 10:20, 10:20] = np.nan
    out = StreamAligner(AlignConfig(window=6, overlap=2, fix_intrinsics=False)).add(replace(p, points=points))
    assert np.isfinite(out.prediction.points).all()
    assert (out.prediction.depth[1, 10:20, 10:20] == 0).all()  # unknown depth, as the contract says


def test_the_worker_reports_an_unusable_window_and_goes_on_with_a_new_segment(windows):
    aligned, skipped = [], []
    config = AlignConfig(window=6, overlap=2, new_segment_on_gap=True)
    with AlignmentWorker(StreamAligner(config), on_aligned=aligned.append,
                         on_skipped=lambda pred, err: skipped.append((pred.frame_indices.tolist(), err.reason))) as w:
        for k, pred in enumerate(windows):
            w.submit(with_nan_pose(pred) if k == 1 else pred)
    assert [frames for frames, _ in skipped] == [list(range(4, 10))]
    assert "non-finite camera poses" in skipped[0][1]
    assert [a.window_index for a in aligned] == [0] + list(range(2, len(windows)))
    # Window 2 shares no frame with window 0: tracking starts again in a new segment, and goes on.
    assert aligned[1].info["placement"] == "new segment" and aligned[1].segment == 1
    assert all(a.info["placement"] == "registered" for a in aligned[2:])
    assert all(np.isfinite(a.prediction.c2w).all() for a in aligned)


def test_without_on_skipped_an_unusable_window_stops_the_worker(windows):
    worker = AlignmentWorker(StreamAligner(AlignConfig(window=6, overlap=2)))
    worker.submit(with_nan_pose(windows[0]))
    with pytest.raises(UnusableWindowError):
        worker.close()
