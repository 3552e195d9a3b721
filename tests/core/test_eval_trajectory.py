"""Trajectory evaluation: frame matching, ATE after Sim(3), RPE, coverage, segments."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stream4d.evaluation import EvaluationError, evaluate_trajectory, match_frames, trajectory_extent
from stream4d.geometry import Sim3
from stream4d.outputs import PosedFrame, read_cameras_json
from stream4d.testdata import SHARED_DATA

KITTI = SHARED_DATA / "kitti_seq1/cameras.json"
needs_data = pytest.mark.skipif(not KITTI.is_file(), reason="shared test data not present")
K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])


def pose(R: np.ndarray, c) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = c
    return T


def frames_from(c2ws, names=None, timestamps=None, indices=None) -> list[PosedFrame]:
    n = len(c2ws)
    names = names or [f"{i:06d}.png" for i in range(n)]
    timestamps = list(range(n)) if timestamps is None else timestamps
    indices = list(range(n)) if indices is None else indices
    return [PosedFrame(indices[i], timestamps[i], names[i], c2ws[i], K, 640, 480) for i in range(n)]


def transformed(frames: list[PosedFrame], sim: Sim3, **changes) -> list[PosedFrame]:
    return [replace(f, c2w=sim.apply_c2w(f.c2w), **changes) for f in frames]


SIM = Sim3(2.5, Rotation.from_euler("xyz", [20, -35, 70], degrees=True).as_matrix(), np.array([4.0, -1.0, 7.0]))


@needs_data
def test_sim3_transformed_ground_truth_has_zero_ate_and_recovers_the_scale():
    gt = read_cameras_json(KITTI)
    pred = transformed(gt, SIM)
    r = evaluate_trajectory(pred, gt)
    assert r.match == "image" and r.num_matched == 51 and r.coverage == 1.0
    assert r.ate_rmse <= 1e-9 and r.ate_max <= 1e-9
    assert r.sim3.s == pytest.approx(1 / 2.5, rel=1e-12)  # pred -> GT undoes the applied scale
    np.testing.assert_allclose(r.sim3.R, SIM.R.T, atol=1e-9)
    # RPE uses the recovered scale, so it is zero too.
    assert r.rpe_pairs == 50 and r.rpe_trans_rmse <= 1e-9 and r.rpe_rot_mean_deg <= 1e-5
    assert r.rot_err_mean_deg <= 1e-5
    assert r.gt_path_length == pytest.approx(59.9, abs=0.2)  # ~60 m of driving
    assert r.ate_rmse_rel_path == pytest.approx(r.ate_rmse / r.gt_path_length)


def test_translation_perturbation_of_the_centre_frame_gives_the_hand_computed_ate():
    # GT cameras y_i at the six +-axis points and the origin (their centroid); the
    # prediction moves the origin camera by d. Centred, the prediction is
    # x_i = y_i - d/N (i != 0) and x_0 = d (N-1)/N, so the cross-covariance
    # sum y_i x_i^T = sum y_i y_i^T is unchanged: R = I and the Umeyama scale is
    # s = A / (A + |d|^2 (N-1)/N), A = sum |y_i|^2. The residuals s x_i - y_i give
    # N * ATE^2 = (s-1)^2 A + s^2 |d|^2 (N-1)/N, the largest being |s d (N-1)/N|.
    centres = [[0, 0, 0], [2, 0, 0], [-2, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0, 1], [0, 0, -1]]
    gt = frames_from([pose(np.eye(3), c) for c in centres])
    d = np.array([0.3, -0.2, 0.5])
    perturbed = [f.c2w.copy() for f in gt]
    perturbed[0][:3, 3] += d
    pred = transformed(frames_from(perturbed), SIM)
    r = evaluate_trajectory(pred, gt)
    N, A, dd = 7, 28.0, float(d @ d)
    s = A / (A + dd * (N - 1) / N)
    assert r.ate_rmse == pytest.approx(np.sqrt(((s - 1) ** 2 * A + s ** 2 * dd * (N - 1) / N) / N), rel=1e-9)
    assert r.ate_max == pytest.approx(s * np.sqrt(dd) * (N - 1) / N, rel=1e-9)
    assert r.sim3.s == pytest.approx(s / 2.5, rel=1e-9)
    np.testing.assert_allclose(r.sim3.R, SIM.R.T, atol=1e-9)
    assert r.gt_extent == pytest.approx(6.0)  # between (0, 3, 0) and (0, -3, 0)
    assert r.ate_rmse_rel_extent == pytest.approx(r.ate_rmse / 6.0)


def test_rotation_perturbation_of_one_frame_gives_the_known_rpe():
    # A straight drive along z with cameras rolled about z. Rolling frame k by theta
    # about its own z axis changes the relative rotation of pairs (k-1, k) and (k, k+1)
    # by theta each; the relative translation lies on the roll axis, so it is unchanged.
    M, k, theta = 11, 5, 4.0
    gt = frames_from([pose(Rotation.from_euler("z", 3 * i, degrees=True).as_matrix(), [0, 0, 1.5 * i])
                      for i in range(M)])
    perturbed = [f.c2w.copy() for f in gt]
    perturbed[k][:3, :3] = perturbed[k][:3, :3] @ Rotation.from_euler("z", theta, degrees=True).as_matrix()
    pred = transformed(frames_from(perturbed), SIM)
    r = evaluate_trajectory(pred, gt)
    assert r.ate_rmse == pytest.approx(0.0, abs=1e-9)
    assert r.rpe_pairs == M - 1
    assert r.rpe_rot_mean_deg == pytest.approx(2 * theta / (M - 1), rel=1e-6)
    assert r.rpe_rot_rmse_deg == pytest.approx(theta * np.sqrt(2 / (M - 1)), rel=1e-6)
    assert r.rpe_trans_rmse == pytest.approx(0.0, abs=1e-9)
    errors = [f["rotation_error_deg"] for f in r.per_frame]
    assert int(np.argmax(errors)) == k


@needs_data
def test_coverage_counts_reference_frames_that_received_a_pose():
    gt = read_cameras_json(KITTI)
    pred = transformed(gt[::2], SIM)
    r = evaluate_trajectory(pred, gt)
    assert r.num_matched == 26 and r.coverage == pytest.approx(26 / 51)
    assert r.rpe_pairs == 25 and r.ate_rmse <= 1e-9


@needs_data
def test_auto_matching_uses_base_names_then_indices_then_timestamps():
    gt = read_cameras_json(KITTI)  # names "image_l/000007.png", timestamps = index
    shuffled = [gt[i] for i in np.random.default_rng(0).permutation(51)]
    by_name = [replace(f, index=100 + f.index, timestamp=-1.0, image=f.image.split("/")[-1]) for f in shuffled]
    m = match_frames(by_name, gt)
    assert m.method == "image" and len(m) == 51
    assert all(by_name[p].image in gt[g].image for p, g in zip(m.pred, m.gt))
    assert list(m.gt) == list(range(51))  # ordered along the reference

    by_index = [replace(f, image=f"video.mp4#{f.index}", timestamp=-1.0) for f in shuffled]
    m = match_frames(by_index, gt)
    assert m.method == "index" and all(by_index[p].index == g for p, g in zip(m.pred, m.gt))

    by_time = [replace(f, image="", index=-1, timestamp=f.timestamp + 0.3) for f in shuffled]
    m = match_frames(by_time, gt)  # tolerance: half the median spacing (0.5)
    assert m.method == "timestamp" and len(m) == 51
    assert all(abs(by_time[p].timestamp - gt[g].timestamp) < 0.5 for p, g in zip(m.pred, m.gt))
    with pytest.raises(EvaluationError, match="by timestamp"):
        match_frames(by_time, gt, "timestamp", max_dt=0.2)


def test_timestamp_matching_keeps_the_closest_prediction_per_reference_frame():
    gt = frames_from([pose(np.eye(3), [i, 0, 0]) for i in range(4)])
    pred = frames_from([pose(np.eye(3), [i, 0, 0]) for i in range(5)], names=[""] * 5,
                       timestamps=[0.0, 0.9, 1.05, 2.0, 3.0], indices=[-1] * 5)
    m = match_frames(pred, gt, "timestamp", max_dt=0.2)
    assert list(m.gt) == [0, 1, 2, 3] and list(m.pred) == [0, 2, 3, 4] and m.ignored == 1


def test_fewer_than_three_matches_is_a_clear_error_not_a_crash():
    gt = frames_from([pose(np.eye(3), [i, 0, 0]) for i in range(5)])
    two = frames_from([pose(np.eye(3), [i, 0, 0]) for i in range(2)], names=["x.png", "y.png"],
                      timestamps=[50.0, 60.0], indices=[40, 41])
    with pytest.raises(EvaluationError, match="only 0 predicted frames match.*at least 3"):
        evaluate_trajectory(two, gt)
    with pytest.raises(EvaluationError, match="only 2 predicted frames match the reference by image"):
        evaluate_trajectory(gt[:2], gt, match="image")
    with pytest.raises(EvaluationError, match="no posed frames"):
        evaluate_trajectory([], gt)
    with pytest.raises(ValueError, match="match method"):
        match_frames(gt, gt, "nearest")


@needs_data
def test_segments_get_their_own_sim3_and_rpe_skips_the_boundary():
    gt = read_cameras_json(KITTI)
    other = Sim3(0.7, Rotation.from_euler("y", 90, degrees=True).as_matrix(), np.array([10.0, 0, 0]))
    pred = transformed(gt[:25], SIM) + transformed(gt[25:], other, segment=1)
    r = evaluate_trajectory(pred, gt)
    assert r.segments == 2
    assert r.ate_rmse > 1.0  # one Sim(3) cannot fit two unrelated worlds
    assert r.ate_rmse_per_segment[0] <= 1e-9 and r.ate_rmse_per_segment[1] <= 1e-9
    assert r.rpe_pairs == 49  # the pair across the boundary is not scored
    assert r.rpe_trans_rmse <= 1e-9  # each pair uses its own segment's scale


def test_trajectory_extent_is_the_largest_pairwise_distance():
    pts = np.random.default_rng(2).normal(size=(1100, 3))  # > one 1024-row chunk
    far = np.array([[40.0, 0, 0], [-40.0, 3, 4]])
    assert trajectory_extent(np.vstack([pts, far])) == pytest.approx(np.linalg.norm(far[0] - far[1]))
    assert trajectory_extent(np.zeros((1, 3))) == 0.0


@needs_data
def test_points_sim3_pins_the_roll_that_centres_leave_open_on_a_straight_drive():
    # KITTI's centres are nearly collinear (singular values ~126, 0.3, 0.2), so one
    # 0.5 m outlier tilts the centre-only rotation by degrees; camera axes fix it.
    gt = read_cameras_json(KITTI)
    perturbed = [f.c2w.copy() for f in gt]
    perturbed[20][:3, 3] += [0.5, 0.0, 0.0]
    pred = transformed(frames_from(perturbed), SIM)
    r = evaluate_trajectory(pred, gt)
    centre_err = np.degrees(Rotation.from_matrix(r.sim3.R @ SIM.R).magnitude())
    axes_err = np.degrees(Rotation.from_matrix(r.points_sim3.R @ SIM.R).magnitude())
    assert centre_err > 1.0
    assert axes_err < 0.1
    assert r.points_sim3.s == r.sim3.s
