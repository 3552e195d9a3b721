"""SIFT features and verified pairwise matches (OpenCV): backend-independent, used by the default
window model (recon/default) and by segment re-attachment (align/reattach.py)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Features:
    keypoints: np.ndarray  # float64 [N, 2], pixel coordinates (u, v)
    descriptors: np.ndarray  # float32 [N, 128], RootSIFT


@dataclass
class PairMatches:
    i: int  # window-local view indices, i < j
    j: int
    idx_i: np.ndarray  # int64 [M], keypoint indices in view i
    idx_j: np.ndarray  # int64 [M], keypoint indices in view j
    F: np.ndarray | None  # [3, 3] fundamental matrix of the inliers


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def detect_features(image: np.ndarray, max_features: int = 4000, scale: float = 1.0) -> Features:
    """SIFT keypoints with RootSIFT descriptors (L1-normalise, square root: better matching).

    ``scale`` < 1 detects on a downsized copy. OpenCV's SIFT doubles its input
    to build the first octave, so at 0.5 it still localises at about the
    input's own pixel size, for a quarter of the work.
    """
    g = grey(image)
    if scale != 1.0:
        g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=0.01)
    kps, desc = sift.detectAndCompute(g, None)
    if desc is None or len(kps) == 0:
        return Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32))
    desc = desc / (np.abs(desc).sum(axis=1, keepdims=True) + 1e-7)
    desc = np.sqrt(desc).astype(np.float32)
    pts = np.array([kp.pt for kp in kps], dtype=np.float64)
    if scale != 1.0:
        pts = (pts + 0.5) / scale - 0.5  # pixel centres at integers in both images
    return Features(pts, desc)


def match_descriptors(a: Features, b: Features, ratio: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbours passing Lowe's ratio test, one per target keypoint: (idx_a [M], idx_b [M]).

    Brute force as one matrix product (RootSIFT descriptors are unit vectors,
    so the L2 distance follows from the dot product): BLAS does in
    milliseconds what a per-descriptor matcher does in a tenth of a second.
    """
    if len(a.keypoints) < 2 or len(b.keypoints) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    import torch  # here: a module that only needs the data types must not load torch

    with torch.no_grad():
        sim = (torch.from_numpy(a.descriptors) @ torch.from_numpy(b.descriptors).T).numpy()  # [Na, Nb]
    # Best and second best per row with numpy's vectorised row reductions: torch's topk cost as
    # much as the product itself (docs/default_backend.md).
    rows = np.arange(len(sim))
    best = sim.argmax(axis=1)
    top1 = sim[rows, best]
    sim[rows, best] = -np.inf
    top2 = sim.max(axis=1)
    dist = np.sqrt(np.clip(2 - 2 * np.stack([top1, top2], axis=1), 0, None))
    good = dist[:, 0] < ratio * dist[:, 1]
    ia = np.nonzero(good)[0]
    ib = best[good]
    # Keep the closest match where several keypoints of a chose the same keypoint of b.
    order = np.argsort(dist[good, 0], kind="stable")
    _, first = np.unique(ib[order], return_index=True)
    keep = order[first]
    return ia[keep].astype(np.int64), ib[keep].astype(np.int64)


def verified_matches(fa: Features, fb: Features, i: int, j: int,
                     threshold_px: float = 1.5, min_inliers: int = 20) -> PairMatches | None:
    """Matches of views i and j that agree with one fundamental matrix (MAGSAC), or None."""
    ia, ib = match_descriptors(fa, fb)
    if len(ia) < min_inliers:
        return None
    try:
        F, mask = cv2.findFundamentalMat(fa.keypoints[ia], fb.keypoints[ib], cv2.USAC_MAGSAC,
                                         threshold_px, 0.999, 10000)
    except cv2.error:  # degenerate configurations (all matches on a line, identical images)
        return None
    if F is None or mask is None:
        return None
    keep = mask.ravel().astype(bool)
    if keep.sum() < min_inliers:
        return None
    return PairMatches(i, j, ia[keep], ib[keep], F[:3])
