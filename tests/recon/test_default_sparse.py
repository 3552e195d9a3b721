"""The default backend's sparse tracks as a contract: posed views only, reprojection-checked, coloured."""

from __future__ import annotations

import numpy as np

from recon.default.model import sparse_tracks
from recon.default.tracks import Tracks


def test_sparse_tracks_keep_posed_views_and_observations_that_reproject():
    K = np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]])
    points = np.array([[0.0, 0, 2], [0.2, 0.1, 3], [-0.1, 0.1, 2.5]])
    w2c = [np.eye(4), np.eye(4)]
    w2c[1][:3, 3] = [-0.1, 0, 0]
    uv = {}
    for v, T in zip((0, 2), w2c):  # window views 0 and 2 are posed, view 1 is not
        pc = points @ T[:3, :3].T + T[:3, 3]
        uv[v] = (pc @ K.T)[:, :2] / (pc @ K.T)[:, 2:]
    view = np.array([0, 0, 0, 2, 2, 2, 1, 1])
    track = np.array([10, 11, 12, 10, 11, 12, 10, 11])  # tracks 10-12 are points 0-2
    xy = np.concatenate([uv[0], uv[2], [[5.0, 5], [6, 6]]])
    xy[5] += [6.0, 0]  # point 2 is 6 px off in view 2: dropped, leaving it one view
    images = [np.full((48, 64, 3), 10 * (k + 1), np.uint8) for k in range(2)]
    tracks = Tracks(view, track, xy, 13)
    sparse = sparse_tracks(tracks, np.array([10, 11, 12]), points, [0, 2], w2c, K, images, 4.0)
    np.testing.assert_array_equal(sparse.points, points[:2])
    np.testing.assert_array_equal(sparse.obs_point, [0, 1, 0, 1])
    np.testing.assert_array_equal(sparse.obs_view, [0, 0, 1, 1])  # window view 2 is posed view 1
    np.testing.assert_allclose(sparse.obs_xy, xy[[0, 1, 3, 4]])
    np.testing.assert_array_equal(sparse.colors, [[10, 10, 10], [10, 10, 10]])  # first seen in view 0
    assert sparse.K.shape == (2, 3, 3)
