"""Global image descriptors for retrieval, with no learned weights: VLAD over RootSIFT.

A small visual vocabulary (k-means centres of RootSIFT descriptors, trained on the input itself)
turns a frame's descriptors into one vector: residuals to each word's centre summed per word,
each word's block L2-normalised (intra-normalisation), signed square root, then L2. The cosine
of two such vectors ranks how likely two frames show the same place, for the price of one dot
product. Used by photo-collection ordering (``recon.ordering``, which frames to match) and by
place recognition over keyframes (``align.placerec``, which keyframes to verify a loop with).
"""

from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` centres ``float32 [k, D]`` of unit rows ``x [N, D]`` (k-means++ seeding, Lloyd iterations
    with assignment by cosine, centres renormalised)."""
    n = len(x)
    if n < k:
        raise ValueError(f"k-means needs at least {k} samples, got {n}")
    centres = [x[rng.integers(n)]]
    d2 = np.full(n, np.inf)
    for _ in range(1, k):
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
        centres.append(x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)])
    C = np.array(centres, np.float32)
    for _ in range(iterations):
        sums, counts = sum_by_word(x, (x @ C.T).argmax(1), k)
        filled = counts > 0
        C[filled] = sums[filled] / counts[filled, None]
        C /= np.linalg.norm(C, axis=1, keepdims=True) + 1e-12
    return C


def sum_by_word(x: np.ndarray, assign: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of ``x [N, D]`` per word ``assign [N]`` (``[k, D]``) and the counts ``[k]``: one sort and
    one ``reduceat`` instead of k boolean selections."""
    order = np.argsort(assign, kind="stable")
    words, starts, counts = np.unique(assign[order], return_index=True, return_counts=True)
    sums = np.zeros((k, x.shape[1]), np.float32)
    if len(order):
        sums[words] = np.add.reduceat(x[order], starts, axis=0)
    full = np.zeros(k, np.int64)
    full[words] = counts
    return sums, full


def vlad(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """VLAD ``float32 [k x 128]`` of unit ``descriptors [N, 128]`` (intra-normalised, signed root, L2)."""
    k, D = centres.shape
    out = np.zeros((k, D), np.float32)
    if len(descriptors):
        assign = (descriptors @ centres.T).argmax(1)
        sums, counts = sum_by_word(descriptors, assign, k)
        out = sums - counts[:, None] * centres  # the sum of residuals to each word's centre
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
    out = np.sign(out) * np.sqrt(np.abs(out))
    out = out.ravel()
    return out / (np.linalg.norm(out) + 1e-12)


def similar_pairs(descriptor_sets: list[np.ndarray], top: int, words: int = 32, samples: int = 20000,
                  seed: int = 0) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of frames among each frame's ``top`` most similar others by VLAD cosine.

    ``descriptor_sets``: each frame's unit RootSIFT descriptors ``float32 [N_i, 128]``. The vocabulary
    of ``words`` centres is trained on up to ``samples`` of them, drawn from every frame. With too few
    descriptors to train on (texture-less input), every pair is returned.
    """
    n = len(descriptor_sets)
    everything = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if n <= top + 1:
        return everything
    pool = np.concatenate([np.asarray(d, np.float32) for d in descriptor_sets]) if n else np.zeros((0, 128))
    if len(pool) < 4 * words:
        return everything
    rng = np.random.default_rng(seed)
    if len(pool) > samples:
        pool = pool[rng.choice(len(pool), samples, replace=False)]
    centres = kmeans(pool, words, 10, rng)
    G = np.stack([vlad(np.asarray(d, np.float32), centres) for d in descriptor_sets])  # [n, words x 128]
    sim = G @ G.T
    np.fill_diagonal(sim, -np.inf)
    best = np.argpartition(-sim, top - 1, axis=1)[:, :top]  # [n, top], unordered
    return sorted({(min(i, int(j)), max(i, int(j))) for i in range(n) for j in best[i]})
