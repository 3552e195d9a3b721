"""Loop and link matches entered into the final adjustment's scene: tracks merged, extended or added."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from align.globalmap import LoopPairs
from stream4d.export.scene import ExportScene, ExportView
from stream4d.geometry import radial_distorted
from stream4d.pipeline.cross_tracks import with_cross_tracks

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def _view(k: int) -> ExportView:
    c2w = np.eye(4)
    c2w[0, 3] = 0.4 * k  # four cameras along x, looking down +z
    return ExportView(k, f"{k:06d}.jpg", Path(), f"{k}.png", c2w, K, 640, 480)


def _pixel(view: ExportView, X: np.ndarray) -> np.ndarray:
    pc = X - view.c2w[:3, 3]
    return (K @ pc)[:2] / pc[2]


def _scene(points: np.ndarray, tracks: list[tuple[int, tuple[int, ...]]], radial_k1: float = 0.0) -> ExportScene:
    """Tracks as (row of ``points``, views seeing it), observed exactly (through a lens ``radial_k1``)."""
    views = [replace(_view(k), radial_k1=radial_k1) for k in range(4)]
    obs = [(row, v, radial_distorted(_pixel(views[v], points[p]), K, radial_k1))
           for row, (p, seen) in enumerate(tracks) for v in seen]
    return ExportScene(views, points[[p for p, _ in tracks]], np.zeros((len(tracks), 3), np.uint8),
                       np.array([o[0] for o in obs]), np.array([o[1] for o in obs]),
                       np.array([o[2] for o in obs]), 0, Path())


def _match(scene: ExportScene, a: int, b: int, X: np.ndarray) -> LoopPairs:
    return LoopPairs(a, b, np.array([_pixel(scene.views[a], x) for x in X], np.float32),
                     np.array([_pixel(scene.views[b], x) for x in X], np.float32))


def test_matches_merge_extend_or_add_tracks_by_what_their_keypoints_are():
    rng = np.random.default_rng(0)
    X = rng.uniform([-1, -1, 4], [2, 1, 6], (40, 3))
    # Points 0-9: window 0 tracks them in views 0-1, window 1 again in views 2-3. Points 10-19: window 0
    # only. Points 20-29: seen by no track. Point rows in the scene: 0-9, 10-19 (window 0), 20-29 (window 1).
    tracks = [(p, (0, 1)) for p in range(20)] + [(p, (2, 3)) for p in range(10)]
    scene = _scene(X, tracks)
    window = np.array([0] * 20 + [1] * 10)
    link = _match(scene, 2, 1, X[:30])  # the later frame first, as a link or loop gives it
    out = with_cross_tracks(scene, window, [link], max_px=3.0, min_matches=6, min_fit_share=0.5)
    assert out.held == {(2, 1)}
    assert (out.merged, out.extended, out.two_view, out.shared) == (10, 10, 10, 0)
    merged = out.scene
    assert merged.num_points == 30  # 30 tracks, 10 of them made one with another, 10 new two-view ones
    # A merged point takes window 0's row; window 1's track of it is gone into it.
    np.testing.assert_array_equal(out.row_of[20:], out.row_of[:10])
    assert out.point_window.tolist() == [0] * 20 + [-1] * 10
    seen = [sorted(merged.obs_view[merged.obs_point == r].tolist()) for r in range(30)]
    assert seen[:10] == [[0, 1, 2, 3]] * 10 and seen[10:20] == [[0, 1, 2]] * 10 and seen[20:] == [[1, 2]] * 10
    assert merged.reprojection_errors().max() < 1e-3  # the matches are float32 pixels
    # Entered twice, the same matches change nothing: one track holds each already.
    again = with_cross_tracks(merged, out.point_window, [link], 3.0, 6, 0.5)
    assert again.shared == 30 and again.scene is merged


def test_matches_of_views_through_a_lens_are_pinhole_pixels_and_enter_as_the_lens_shows_them():
    rng = np.random.default_rng(2)
    X = rng.uniform([-1, -1, 4], [2, 1, 6], (40, 3))
    tracks = [(p, (0, 1)) for p in range(20)] + [(p, (2, 3)) for p in range(10)]
    scene = _scene(X, tracks, radial_k1=-0.15)
    pinhole = np.array([_pixel(scene.views[0], x) for x in X])
    assert np.abs(radial_distorted(pinhole, K, -0.15) - pinhole).max() > 5  # the lens moves them by pixels
    link = _match(scene, 2, 1, X[:30])  # keyframes' keypoints: undistorted (align.reattach.lift_keyframe)
    out = with_cross_tracks(scene, np.array([0] * 20 + [1] * 10), [link], 3.0, 6, 0.5)
    assert (out.merged, out.extended, out.two_view, out.shared) == (10, 10, 10, 0)
    assert out.scene.reprojection_errors().max() < 1e-3  # the added observations are where the lens shows them


def test_tracks_that_are_not_one_point_are_not_merged_and_matches_that_do_not_fit_stay_out():
    rng = np.random.default_rng(1)
    X = rng.uniform([-1, -1, 4], [2, 1, 6], (20, 3))
    centre_1 = _view(1).c2w[:3, 3]
    Y = centre_1 + 1.3 * (X - centre_1)  # farther along the rays of view 1: other points, seen by window 1
    points = np.concatenate([X, Y])
    tracks = [(p, (0, 1)) for p in range(20)] + [(20 + p, (2, 3)) for p in range(20)]
    scene = _scene(points, tracks)
    window = np.array([0] * 20 + [1] * 20)
    # Matches of Y between views 2 and 1 fit both cameras, and in view 1 they fall on window 0's track of
    # X; X does not reproject onto view 2's keypoint of Y, so the tracks stay apart.
    mixed = _match(scene, 2, 1, Y)
    out = with_cross_tracks(scene, window, [mixed], 3.0, 6, 0.5)
    assert out.held == {(2, 1)} and out.matches == 0 and out.scene is scene
    shuffled = _match(scene, 2, 1, X)
    shuffled = LoopPairs(2, 1, shuffled.query_uv[rng.permutation(20)], shuffled.match_uv)
    out = with_cross_tracks(scene, window, [shuffled], 3.0, 6, 0.5)
    assert out.held == set() and out.matches == 0 and out.scene is scene
