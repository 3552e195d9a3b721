"""Feature tracks: connected components of the verified match graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from recon.features import Features, PairMatches
from stream4d.geometry import radial_distorted, radial_undistorted


@dataclass
class Tracks:
    """Observations of 3D points across the window's views, as flat arrays."""

    view: np.ndarray  # int64 [O], window-local view index
    track: np.ndarray  # int64 [O], track id in [0, num_tracks)
    uv: np.ndarray  # float64 [O, 2], pixel coordinates
    num_tracks: int

    def in_view(self, v: int) -> np.ndarray:
        return np.nonzero(self.view == v)[0]


def build_tracks(features: list[Features], matches: list[PairMatches]) -> Tracks:
    """Join pairwise matches into tracks; a track seen twice in one view is inconsistent and dropped."""
    offsets = np.concatenate([[0], np.cumsum([len(f.keypoints) for f in features])])
    n_nodes = int(offsets[-1])
    if not matches or n_nodes == 0:
        return Tracks(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), 0)
    a = np.concatenate([offsets[m.i] + m.idx_i for m in matches])
    b = np.concatenate([offsets[m.j] + m.idx_j for m in matches])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    node_view = np.repeat(np.arange(len(features)), np.diff(offsets))
    used = np.zeros(n_nodes, bool)
    used[a] = True
    used[b] = True
    nodes = np.nonzero(used)[0]
    lab = label[nodes]
    views = node_view[nodes]
    # Drop tracks that hold two keypoints of one view (a matching error somewhere).
    key = lab.astype(np.int64) * len(features) + views
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    bad_labels = np.unique(lab[cnt[inv] > 1])
    ok = ~np.isin(lab, bad_labels)
    nodes, lab, views = nodes[ok], lab[ok], views[ok]
    # Renumber tracks densely; keep those with >= 2 observations (always true after matching).
    uniq, track = np.unique(lab, return_inverse=True)
    uv = np.concatenate([f.keypoints for f in features])[nodes]
    return Tracks(views.astype(np.int64), track.astype(np.int64), uv, len(uniq))


def undistorted_tracks(tracks: Tracks, K: np.ndarray, k1: float, tol_px: float = 0.01) -> Tracks:
    """``tracks`` as the pinhole camera ``K`` would see them through a lens of radial coefficient ``k1``
    (``stream4d.geometry.radial_distorted``). Observations the lens cannot have shown are left out: a
    strong barrel folds back beyond some radius, and pixels past the fold have no undistorted position
    (the inverse is checked by distorting it again, within ``tol_px``)."""
    uv = radial_undistorted(tracks.uv, K, k1, iterations=200)
    f = float(K[0, 0])
    n2 = (((uv - K[:2, 2]) / f) ** 2).sum(axis=1)
    ok = (np.isfinite(uv).all(axis=1) & (1.0 + 3.0 * k1 * n2 > 0.0)
          & (np.linalg.norm(radial_distorted(uv, K, k1) - tracks.uv, axis=1) <= tol_px))
    return Tracks(tracks.view[ok], tracks.track[ok], uv[ok], tracks.num_tracks)
