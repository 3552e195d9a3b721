"""Far pairs checked against the near pairs' structure (recon/default/far_pairs.py).

Unit level: matches off the two views' epipolar geometry, and matches on it whose keypoint's track
already has a point elsewhere (beyond what that point's shorter baseline leaves uncertain), are dropped; a pair where fewer than half agree is dropped whole.
End to end: a window of a wide-angle walk past a street's facades, whose far pairs join the same
texture on different boxes, keeps one consistent orientation with its intrinsics given or hidden
(the truth: the camera never turns);
grown on the far pairs as verified, its views split into groups whose rotations differ by degrees.
A window whose far pairs agree with its near pairs is left exactly as grown (its near pairs' chained
two-view rotations say so, without growing them), and one whose regrowth fails keeps the near structure.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.default.far_pairs import (
    _TrackPoints,
    agreeing_matches,
    chained_split_deg,
    checked_far_pairs,
    rotation_split_deg,
)
from recon.default.model import DefaultModelConfig, DefaultWindowModel
from recon.default.sfm import SfmResult
from recon.default.tracks import Tracks
from recon.default.two_view import fundamental_of
from recon.features import Features, PairMatches
from stream4d.contracts import Frame
from stream4d.geometry import invert_se3, project_points, rotation_angle_deg
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

K = np.array([[300.0, 0.0, 255.5], [0.0, 300.0, 191.5], [0.0, 0.0, 1.0]])


def _two_views(points: int = 200, seed: int = 0):
    """Points in front of two cameras 1 m apart sideways; their pixels in both (c2w [2, 4, 4], X, uv0, uv1)."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-3, 3, points), rng.uniform(-2, 2, points), rng.uniform(5, 9, points)]
    c2w = np.stack([np.eye(4), np.eye(4)])
    c2w[1, 0, 3] = 1.0
    uv0, _ = project_points(X, K, c2w[0])
    uv1, _ = project_points(X, K, c2w[1])
    return c2w, X, uv0, uv1


def _structure(c2w: np.ndarray, X: np.ndarray, uv0: np.ndarray, tracked: np.ndarray):
    """A near structure placing views 0 and 1 (window views 0 and 4) with points for the ``tracked`` rows,
    seen in view 0 and in a near view 1 between them."""
    rows = np.nonzero(tracked)[0]
    mid = c2w[0].copy()
    mid[0, 3] = 0.25
    uv_mid, _ = project_points(X[rows], K, mid)
    tracks = Tracks(view=np.r_[np.zeros(len(rows), np.int64), np.ones(len(rows), np.int64)],
                    track=np.r_[np.arange(len(rows)), np.arange(len(rows))],
                    uv=np.r_[uv0[rows], uv_mid], num_tracks=len(rows))
    w2c = {0: invert_se3(c2w[0]), 1: invert_se3(mid), 4: invert_se3(c2w[1])}
    return tracks, SfmResult(w2c, K, X[rows], np.arange(len(rows)))


def _features(uv0: np.ndarray, uv4: np.ndarray) -> list[Features]:
    none = Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32))
    return [Features(uv0, np.zeros((len(uv0), 128), np.float32)), none, none, none,
            Features(uv4, np.zeros((len(uv4), 128), np.float32))]


def test_matches_off_the_structure_are_dropped():
    c2w, X, uv0, uv1 = _two_views()
    n = len(X)
    tracked = np.arange(n) % 2 == 0
    seen = uv1.copy()
    across = np.arange(n) % 10 == 1  # off the epipolar line (which runs along image rows here)
    seen[across, 1] += 6.0
    # on it, but their track's point lands 40 px away: past 1.5 px times the far pair's baseline over
    # the near one (4x), the tolerance of a point triangulated on the shorter baseline
    along = np.arange(n) % 10 == 2
    seen[along, 0] += 40.0
    untracked_along = np.arange(n) % 10 == 3  # on it, and no point to tell: kept
    seen[untracked_along, 0] += 6.0
    tracks, sfm = _structure(c2w, X, uv0, tracked)
    feats = _features(uv0, seen)
    pair = PairMatches(0, 4, np.arange(n), np.arange(n), None)
    ok = agreeing_matches(pair, feats, sfm, _TrackPoints(tracks, sfm), tol_px=1.5)
    assert not ok[across].any()
    assert not ok[along].any()
    assert ok[untracked_along].all()
    assert ok[~(across | along | untracked_along)].all()

    kept, report = checked_far_pairs([pair], feats, tracks, sfm, tol_px=1.5)
    assert report.checked == 1 and report.dropped == 0 and report.matches_dropped == int((across | along).sum())
    assert len(kept[0].idx_i) == n - int((across | along).sum())


def test_pair_mostly_off_the_structure_is_dropped_and_unplaced_views_pass():
    c2w, X, uv0, uv1 = _two_views()
    n = len(X)
    seen = uv1.copy()
    seen[: int(0.6 * n), 1] += 5.0  # most matches: another surface's texture
    tracks, sfm = _structure(c2w, X, uv0, np.zeros(n, bool))
    feats = _features(uv0, seen)
    pair = PairMatches(0, 4, np.arange(n), np.arange(n), None)
    kept, report = checked_far_pairs([pair], feats, tracks, sfm, tol_px=1.5)
    assert kept == [] and report.dropped == 1

    del sfm.w2c[4]  # the near structure did not place view 4: nothing to check the pair against
    kept, report = checked_far_pairs([pair], feats, tracks, sfm, tol_px=1.5)
    assert kept == [pair] and report.unchecked == 1


@pytest.fixture(scope="module")
def facade_window():
    """20 keyframes of a walk past a street (FOV 90, the camera never turns): the frames and true c2w."""
    W, H = 512, 384
    scene = make_scene("street", seed=5722)
    c2w = make_trajectory("sideways", 400, seed=5722, scene=scene)
    idx = [248, 257, 268, 274, 278, 284, 289, 295, 301, 312, 323, 334, 340, 351, 355, 357, 359, 361, 366, 368]
    Kw = intrinsics_for(W, H, 90.0)
    views = render_sequence(scene, c2w[idx], Kw, W, H, fps=30.0, noise_std=2.0, seed=5722)
    frames = [Frame(index=k, timestamp=k / 30, image=v.rgb, source=f"street#{i}", K=Kw)
              for k, (i, v) in enumerate(zip(idx, views))]
    return frames, c2w[idx]


def _rotation_errors_deg(pred, truth: np.ndarray) -> np.ndarray:
    """Each view's rotation error [S] (deg) after the first view's is taken out."""
    first = pred.c2w[0, :3, :3] @ truth[0, :3, :3].T
    return np.array([rotation_angle_deg((p[:3, :3] @ t[:3, :3].T) @ first.T) for p, t in zip(pred.c2w, truth)])


def test_rotation_split_between_structures():
    c2w, X, uv0, _ = _two_views()
    _, a = _structure(c2w, X, uv0, np.ones(len(X), bool))
    b = SfmResult(dict(a.w2c), K, a.points, a.point_track)
    assert rotation_split_deg(a, b) == 0.0
    turned = np.eye(4)
    turned[:3, :3] = Rotation.from_euler("y", 3.0, degrees=True).as_matrix()
    b.w2c[4] = turned @ a.w2c[4]
    assert rotation_split_deg(a, b) == pytest.approx(3.0)
    assert rotation_split_deg(a, SfmResult({0: a.w2c[0]}, K, a.points, a.point_track)) == 0.0
    # a view one structure placed at a rotation only is held by no point: it does not count
    b.info["rotation_only_views"] = [4]
    assert rotation_split_deg(a, b) == 0.0


def test_chained_two_view_rotations_against_a_structure():
    rng = np.random.default_rng(3)
    X = np.c_[rng.uniform(-3, 3, 300), rng.uniform(-2, 2, 300), rng.uniform(5, 9, 300)]
    c2w = np.stack([np.eye(4)] * 3)
    for v, (yaw, x) in enumerate([(0.0, 0.0), (4.0, 0.5), (9.0, 1.0)]):  # walking and turning
        c2w[v, :3, :3] = Rotation.from_euler("y", yaw, degrees=True).as_matrix()
        c2w[v, 0, 3] = x
    w2c = {v: invert_se3(c2w[v]) for v in range(3)}
    feats = [Features(project_points(X, K, c2w[v])[0], np.zeros((len(X), 128), np.float32)) for v in range(3)]

    def pair(i, j):
        rel = w2c[j] @ c2w[i]  # camera i to camera j
        return PairMatches(i, j, np.arange(len(X)), np.arange(len(X)), fundamental_of(K, rel[:3, :3], rel[:3, 3]))

    sfm = SfmResult(dict(w2c), K, X, np.arange(len(X)))
    near = [pair(0, 1), pair(1, 2)]
    assert chained_split_deg(feats, near, sfm) < 1e-3
    turned = dict(w2c)
    turned[2] = np.eye(4)
    turned[2][:3, :3] = Rotation.from_euler("x", 3.0, degrees=True).as_matrix()
    turned[2] = turned[2] @ w2c[2]
    assert chained_split_deg(feats, near, SfmResult(turned, K, X, np.arange(len(X)))) == pytest.approx(3.0, abs=1e-3)
    assert chained_split_deg(feats, near[:1], sfm) == np.inf  # the chain does not reach view 2
    assert chained_split_deg(feats, near[:1], SfmResult({0: w2c[0], 1: w2c[1]}, K, X, np.arange(len(X)))) < 1e-3


def test_window_past_repeated_facades_keeps_one_orientation(facade_window):
    frames, truth = facade_window
    checked = DefaultWindowModel(DefaultModelConfig()).predict(frames)
    report = checked.info["pairs"]["far_check"]
    assert report["chained_deg"] > 2.0 and report["split_deg"] > 2.0
    assert report["checked"] > 0 and report["matches_dropped"] > 0
    assert _rotation_errors_deg(checked, truth).max() < 0.2

    unchecked = DefaultWindowModel(DefaultModelConfig(check_far_pairs=False)).predict(frames)
    assert unchecked.info["pairs"]["far_check"] is None
    assert _rotation_errors_deg(unchecked, truth).max() > 3.0


def test_window_past_repeated_facades_without_intrinsics_keeps_one_orientation(facade_window):
    # The near pairs are then grown with the focal length the window calibrated, held.
    frames, truth = facade_window
    frames = [Frame(index=f.index, timestamp=f.timestamp, image=f.image, source=f.source) for f in frames]
    checked = DefaultWindowModel(DefaultModelConfig()).predict(frames)
    report = checked.info["pairs"]["far_check"]
    assert report["split_deg"] > 2.0 and report["matches_dropped"] > 0
    assert _rotation_errors_deg(checked, truth).max() < 0.2


def test_window_whose_far_pairs_agree_is_left_as_grown(facade_window):
    frames, truth = facade_window
    frames = [Frame(index=k, timestamp=f.timestamp, image=f.image, source=f.source, K=f.K)
              for k, f in enumerate(frames[9:])]
    checked = DefaultWindowModel(DefaultModelConfig()).predict(frames)
    report = checked.info["pairs"]["far_check"]
    # its near pairs' chained rotations already agree: the near structure is not even grown
    assert report["chained_deg"] < 2.0 and report["split_deg"] is None and report["checked"] == 0
    unchecked = DefaultWindowModel(DefaultModelConfig(check_far_pairs=False)).predict(frames)
    np.testing.assert_array_equal(checked.c2w, unchecked.c2w)
    assert _rotation_errors_deg(checked, truth[9:]).max() < 0.2


class _RegrowthFails(DefaultWindowModel):
    """The default model whose regrowth on the admitted far pairs (a window's third growth) places
    nothing: a failure injected, as no window at hand makes the real regrowth fail."""

    growths = 0

    def _grown(self, *args, **kwargs):
        self.growths += 1
        tracks, window_sfm, sfm = super()._grown(*args, **kwargs)
        return tracks, window_sfm, None if self.growths == 3 else sfm


def test_failed_regrowth_keeps_the_near_structure(facade_window):
    frames, truth = facade_window
    model = _RegrowthFails(DefaultModelConfig())
    pred = model.predict(frames)
    report = pred.info["pairs"]["far_check"]
    assert report["split_deg"] > 2.0 and report["kept_near"]
    assert pred.info["pairs"]["far"] == 0  # the near pairs' structure, not the one the far pairs turned
    assert pred.rotation_only is None  # a structure still: its views posed, not rotations only
    assert _rotation_errors_deg(pred, truth).max() < 0.2
