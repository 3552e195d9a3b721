"""The default backend's sparse tracks as a contract: posed views only, reprojection-checked, coloured."""

from __future__ import annotations

import numpy as np

from recon.default.model import sparse_tracks
from recon.default.sparse_depth import SparseDepthConfig, fill_sparse_depth
from recon.default.tracks import Tracks
from stream4d.contracts import SparseTracks


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


def test_views_flow_could_not_follow_take_their_depth_from_the_tracks_nearest_in_front():
    K = np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]])
    # Points 0 and 1 on one ray of view 0 (a far one behind a near one), point 2 elsewhere.
    points = np.array([[0.0, 0, 4], [0.0, 0, 2], [0.9, 0.1, 3]])
    w2c = [np.eye(4), np.eye(4)]
    w2c[1][:3, 3] = [-0.1, 0, 0]
    obs_point, obs_view, obs_xy = [], [], []
    for v, T in enumerate(w2c):
        pc = points @ T[:3, :3].T + T[:3, 3]
        obs_point += [0, 1, 2]
        obs_view += [v] * 3
        obs_xy += list((pc @ K.T)[:, :2] / (pc @ K.T)[:, 2:])
    sparse = SparseTracks(points, np.zeros((3, 3), np.uint8), np.array(obs_point), np.array(obs_view),
                          np.array(obs_xy), np.repeat(K[None], 2, axis=0))
    depth = np.zeros((2, 48, 64), np.float32)
    conf = np.zeros_like(depth)
    depth[1], conf[1] = 7.0, 0.9  # view 1's flow worked: it is left alone
    depth[0, 40:, :], conf[0, 40:, :] = 5.0, 0.8  # view 0 has a strip, too little to count
    cfg = SparseDepthConfig(below_share=0.5, patch_px=2, conf=0.5)
    assert fill_sparse_depth(depth, conf, sparse, w2c, cfg) == [0]
    assert depth[0, 24, 32] == 2.0 and conf[0, 24, 32] == 0.5  # the near point, in front
    np.testing.assert_array_equal(depth[0, 22:27, 30:35], 2.0)  # its 5 x 5 square
    assert depth[0, 27, 63] == 3.0  # point 2 at (62, 27.3), its square cut at the image's edge
    assert (depth[0, 40:] == 5.0).all() and (conf[0, 40:] == 0.8).all()  # dense pixels are kept
    assert ((conf[0, :40] > 0).sum()) == 25 + 20  # two squares, one of them cut by the edge
    assert (depth[1] == 7.0).all() and (conf[1] == 0.9).all()
