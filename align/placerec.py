"""Place recognition over lifted keyframes, with no learned weights.

Every keyframe the aligner lifts (RootSIFT features with a world point each,
:func:`align.reattach.lift_keyframe`) goes into a :class:`KeyframeDatabase`:

- a **global descriptor**: VLAD (:mod:`recon.retrieval`) over a small visual vocabulary
  (``vocabulary_size`` RootSIFT centres, k-means on the first keyframes' descriptors, fixed from
  then on: built online, no download), residuals summed per word, each word's block
  L2-normalised (intra-normalisation), signed square root, then L2. Retrieval is one matrix
  product of the query with every stored descriptor (cosine similarity); at the cap (512
  keyframes x 4096 dims) that is about a millisecond, so no inverted index is needed.
- a **compact keyframe** for geometric verification: keypoints and world points as float32,
  descriptors quantised to uint8 (RootSIFT entries are in [0, 1]; 1/255 steps change a match's
  cosine by about 1e-3), depths as float32.

Memory: ``bytes_per_keyframe = N x (8 + 128 + 12 + 4 + 1) + 2 x vocabulary_size x 128`` for N
features (2000: 306 kB + 8 kB). The database holds at most ``max_keyframes``; over the cap the
most redundant keyframe goes (the one whose global descriptor is closest to another kept one of
the same segment), so distinct places stay and a place seen many times keeps a few views.
What comes in is decided by the global map (:mod:`align.globalmap`): a keyframe whose place a
stored keyframe already covers (a verified loop match with at least ``cover_fraction`` of its
features) is not added, so over mapped ground the database does not grow and the cap is reached
only by new ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from align.reattach import Keyframe
from recon.features import Features
from recon.retrieval import kmeans, vlad
from stream4d.geometry import Sim3


@dataclass
class StoredKeyframe:
    """A keyframe as the database keeps it (see the module docstring for the bytes)."""

    window: int  # aligner window that lifted it (a pose-graph node)
    segment: int
    frame_index: int
    keypoints: np.ndarray  # float32 [N, 2], model pixels
    descriptors: np.ndarray  # uint8 [N, 128], RootSIFT x 255
    points: np.ndarray  # float32 [N, 3], world
    depth: np.ndarray  # float32 [N], camera z-depth
    c2w: np.ndarray  # float64 [4, 4], world
    K: np.ndarray  # float64 [3, 3], model pixels
    precise: np.ndarray  # bool [N], a triangulated track's point (Keyframe.precise)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keypoints, self.descriptors, self.points, self.depth, self.c2w, self.K,
                                      self.precise))

    def keyframe(self) -> Keyframe:
        """The verification form (float descriptors, unit length again)."""
        d = self.descriptors.astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-7
        return Keyframe(self.frame_index, Features(self.keypoints.astype(np.float64), d),
                        self.points.astype(np.float64), self.depth.astype(np.float64), self.c2w.copy(), self.K.copy(),
                        self.precise.copy())

    def transform(self, sim3: Sim3) -> None:
        """Move into another world (a pose-graph correction or a re-attachment)."""
        self.points = sim3.apply(self.points.astype(np.float64)).astype(np.float32)
        self.depth = (self.depth * np.float32(sim3.s)).astype(np.float32)
        self.c2w = sim3.apply_c2w(self.c2w)


class KeyframeDatabase:
    """Keyframes of every segment with their global descriptors; :meth:`query` ranks them by similarity."""

    def __init__(self, vocabulary_size: int = 32, max_keyframes: int = 512, vocabulary_samples: int = 20000,
                 seed: int = 0):
        self.vocabulary_size = vocabulary_size
        self.max_keyframes = max_keyframes
        self.vocabulary_samples = vocabulary_samples
        self._rng = np.random.default_rng(seed)
        self.centres: np.ndarray | None = None  # float32 [k, 128]
        self.entries: list[StoredKeyframe] = []
        self._global = np.zeros((0, vocabulary_size * 128), np.float16)
        self._nearest = np.zeros(0, np.float32)  # each entry's best similarity to another of its segment
        self._waiting: list[tuple[StoredKeyframe, np.ndarray]] = []  # before the vocabulary exists
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def nbytes(self) -> int:
        vocab = 0 if self.centres is None else self.centres.nbytes
        return vocab + self._global.nbytes + sum(e.nbytes for e in self.entries) + \
            sum(e.nbytes + d.nbytes for e, d in self._waiting)

    def describe(self, descriptors: np.ndarray) -> np.ndarray | None:
        """Global descriptor of float RootSIFT ``descriptors [N, 128]`` (None before the vocabulary exists)."""
        if self.centres is None:
            return None
        return vlad(np.asarray(descriptors, np.float32), self.centres)

    def add(self, window: int, segment: int, keyframe: Keyframe, c2w: np.ndarray, K: np.ndarray) -> StoredKeyframe:
        f = keyframe.features
        entry = StoredKeyframe(window, segment, keyframe.frame_index, f.keypoints.astype(np.float32),
                               np.clip(np.rint(f.descriptors * 255.0), 0, 255).astype(np.uint8),
                               keyframe.points.astype(np.float32), keyframe.depth.astype(np.float32),
                               np.asarray(c2w, np.float64).copy(), np.asarray(K, np.float64).copy(),
                               np.zeros(len(f.keypoints), bool) if keyframe.precise is None else keyframe.precise.copy())
        if self.centres is None:
            self._waiting.append((entry, f.descriptors.astype(np.float32)))
            samples = sum(len(d) for _, d in self._waiting)
            if samples >= min(self.vocabulary_samples, 4 * self.vocabulary_size * 32) or len(self._waiting) >= 4:
                self._build_vocabulary()
            return entry
        self._append(entry, self.describe(f.descriptors))
        return entry

    def _build_vocabulary(self) -> None:
        descs = np.concatenate([d for _, d in self._waiting])
        if len(descs) < self.vocabulary_size:
            return  # texture-less so far: wait for more
        if len(descs) > self.vocabulary_samples:
            descs = descs[self._rng.choice(len(descs), self.vocabulary_samples, replace=False)]
        self.centres = kmeans(descs, self.vocabulary_size, 10, self._rng)
        waiting, self._waiting = self._waiting, []
        for entry, d in waiting:
            self._append(entry, vlad(d, self.centres))

    def _append(self, entry: StoredKeyframe, g: np.ndarray) -> None:
        g16 = g.astype(np.float16)
        sim = self._global.astype(np.float32) @ g16.astype(np.float32)
        sim[np.array([e.segment != entry.segment for e in self.entries], bool)] = -1.0
        self._nearest = np.maximum(self._nearest, sim)
        self._nearest = np.append(self._nearest, np.float32(sim.max() if len(sim) else -1.0))
        self.entries.append(entry)
        self._global = np.concatenate([self._global, g16[None]])
        if len(self.entries) > self.max_keyframes:
            self._evict()

    def _evict(self) -> None:
        """Drop the keyframe most similar to another of its segment (keeps distinct places). Each
        keyframe's best similarity is kept up to date as keyframes come (O(N) per keyframe); one that
        lost its nearest neighbour to an eviction keeps the old value, which only makes it go sooner."""
        drop = int(len(self._nearest) - 1 - np.argmax(self._nearest[::-1]))  # the later of equals
        del self.entries[drop]
        self._global = np.delete(self._global, drop, axis=0)
        self._nearest = np.delete(self._nearest, drop)
        self.evicted += 1

    def query(self, descriptors: np.ndarray, top_k: int, accept=None) -> list[tuple[StoredKeyframe, float]]:
        """The ``top_k`` stored keyframes most similar to float RootSIFT ``descriptors`` among those
        ``accept(entry)`` lets through, best first, with their cosine similarity."""
        g = self.describe(descriptors)
        if g is None or not self.entries:
            return []
        scores = self._global.astype(np.float32) @ g
        out = []
        for k in np.argsort(-scores):
            e = self.entries[int(k)]
            if accept is None or accept(e):
                out.append((e, float(scores[k])))
                if len(out) == top_k:
                    break
        return out

    def move_windows(self, corrections: dict[int, Sim3]) -> None:
        """Keyframes follow their windows' pose-graph corrections."""
        for e in self.entries:
            c = corrections.get(e.window)
            if c is not None:
                e.transform(c)
        for e, _ in self._waiting:
            c = corrections.get(e.window)
            if c is not None:
                e.transform(c)

    def move_segment(self, from_segment: int, to_segment: int, sim3: Sim3) -> None:
        """A re-attached segment's keyframes into the world it was found in."""
        for e in self.entries + [w for w, _ in self._waiting]:
            if e.segment == from_segment:
                e.transform(sim3)
                e.segment = to_segment
