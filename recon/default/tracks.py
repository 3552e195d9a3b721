"""Feature tracks: connected components of the verified match graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from recon.features import Features, PairMatches


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
