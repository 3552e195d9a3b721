"""Voxel-hashed index of Gaussian centres, so a new view only touches what it can see.

Each id (a slot of the cache's arrays) lives in the voxel ``floor(p / voxel_size)``,
packed into one non-negative int64 key. Lookups go through a sorted copy of the
keys (a CSR table: one run of ids per occupied voxel) plus a short list of
changes since it was built; the table is rebuilt when the changes reach
``rebuild_fraction`` of the entries, so an insertion costs O(log N) amortised.

A view's candidates are the ids in the occupied voxels whose bounding sphere
meets its frustum up to a depth limit: a test over occupied voxels (each holds
tens to hundreds of Gaussians) followed by a gather of just the visible runs.
"""

from __future__ import annotations

import numpy as np

from stream4d.geometry import invert_se3

_BITS = 21  # per axis; keys pack three of them into 63 bits
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
ABSENT = -1


class VoxelHashIndex:
    """Map of ids to voxels with frustum queries. Ids are non-negative ints chosen by the caller."""

    def __init__(self, voxel_size: float, rebuild_fraction: float = 0.25):
        if not voxel_size > 0 or not np.isfinite(voxel_size):
            raise ValueError(f"voxel_size must be a positive finite number, got {voxel_size}")
        self.voxel_size = float(voxel_size)
        self.rebuild_fraction = rebuild_fraction
        self._key_of = np.full(0, ABSENT, np.int64)  # [capacity] current key of each id
        self._csr_ids = np.zeros(0, np.int64)  # [P] ids sorted by key, at the last rebuild
        self._csr_keys = np.zeros(0, np.int64)  # [P] their keys then
        self._csr_key_of = np.full(0, ABSENT, np.int64)  # [capacity] key of each id in the table
        self._voxels = np.zeros(0, np.int64)  # [V] occupied keys at the last rebuild
        self._voxel_start = np.zeros(0, np.int64)  # [V] start of each voxel's run in _csr_ids
        self._voxel_count = np.zeros(0, np.int64)  # [V]
        self._pending: list[np.ndarray] = []  # ids whose key changed since the rebuild
        self._pending_unique: np.ndarray | None = None  # cached union of _pending
        self._changes = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    # --- keys -------------------------------------------------------------------------
    def keys(self, points: np.ndarray) -> np.ndarray:
        """Voxel keys ``[N]`` of points ``[N, 3]``; coordinates beyond +-2^20 voxels are clamped."""
        cell = np.floor(np.asarray(points, np.float64) / self.voxel_size)
        cell = np.clip(cell, -_OFFSET, _OFFSET - 1).astype(np.int64) + _OFFSET
        return (cell[:, 0] << (2 * _BITS)) | (cell[:, 1] << _BITS) | cell[:, 2]

    def voxel_centres(self, keys: np.ndarray) -> np.ndarray:
        """World centres ``[V, 3]`` of voxel keys ``[V]``."""
        keys = np.asarray(keys, np.int64)
        cell = np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], axis=-1)
        return (cell - _OFFSET + 0.5) * self.voxel_size

    # --- updates ----------------------------------------------------------------------
    def set(self, ids: np.ndarray, points: np.ndarray) -> None:
        """Insert ids at points ``[N, 3]``, or move them there."""
        ids = np.asarray(ids, np.int64)
        if ids.size == 0:
            return
        if ids.size and ids.max() >= self._key_of.size:
            grown = np.full(max(int(ids.max()) + 1, 2 * self._key_of.size), ABSENT, np.int64)
            grown[: self._key_of.size] = self._key_of
            self._key_of = grown
        new_keys = self.keys(points)
        old = self._key_of[ids]
        changed = old != new_keys
        self._live += int(np.count_nonzero(old[changed] == ABSENT))
        self._key_of[ids[changed]] = new_keys[changed]
        if changed.any():
            self._pending.append(ids[changed])
            self._pending_unique = None
            self._changes += int(changed.sum())
        self._maybe_rebuild()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        ids = ids[ids < self._key_of.size]
        present = ids[self._key_of[ids] != ABSENT]
        self._key_of[present] = ABSENT
        self._pending_unique = None
        self._live -= int(present.size)
        self._changes += int(present.size)
        self._maybe_rebuild()

    def clear(self) -> None:
        self.__init__(self.voxel_size, self.rebuild_fraction)

    def _maybe_rebuild(self) -> None:
        if self._changes > self.rebuild_fraction * max(self._live, 4096):
            self.rebuild()

    def rebuild(self) -> None:
        """Re-sort all entries into the CSR table and forget the change list."""
        ids = np.flatnonzero(self._key_of != ABSENT)
        order = np.argsort(self._key_of[ids], kind="stable")
        self._csr_ids = ids[order]
        self._csr_keys = self._key_of[self._csr_ids]
        self._csr_key_of = self._key_of.copy()
        self._voxels, self._voxel_start, self._voxel_count = np.unique(
            self._csr_keys, return_index=True, return_counts=True)
        self._pending = []
        self._pending_unique = None
        self._changes = 0

    # --- queries ----------------------------------------------------------------------
    def _pending_ids(self) -> np.ndarray:
        """Live ids that moved or arrived since the rebuild and are not found through the table."""
        if self._pending_unique is None:
            ids = np.unique(np.concatenate(self._pending)) if self._pending else np.zeros(0, np.int64)
            self._pending = [ids] if ids.size else []
            key = self._key_of[ids]
            in_table = np.full(ids.size, ABSENT, np.int64)
            known = ids < self._csr_key_of.size
            in_table[known] = self._csr_key_of[ids[known]]
            self._pending_unique = ids[(key != ABSENT) & (key != in_table)]
        return self._pending_unique

    def occupied_voxels(self) -> np.ndarray:
        """Keys ``[V]`` of voxels that may hold ids (a superset between rebuilds)."""
        return np.union1d(self._voxels, self._key_of[self._pending_ids()])

    def query_voxels(self, voxels: np.ndarray) -> np.ndarray:
        """Unique ids currently in any of ``voxels [V]`` (table order, then recent changes)."""
        voxels = np.unique(np.asarray(voxels, np.int64))
        pos = np.searchsorted(self._voxels, voxels)
        pos_c = np.minimum(pos, max(self._voxels.size - 1, 0))
        hit = (pos < self._voxels.size) & (self._voxels[pos_c] == voxels) if self._voxels.size else \
            np.zeros(voxels.size, bool)
        starts = self._voxel_start[pos_c[hit]]
        counts = self._voxel_count[pos_c[hit]]
        # Concatenated ranges [start, start + count) without a Python loop.
        total = int(counts.sum())
        run_first = np.cumsum(counts) - counts
        slots = np.repeat(starts - run_first, counts) + np.arange(total)
        ids = self._csr_ids[slots]
        ids = ids[self._key_of[ids] == self._csr_keys[slots]]  # drop entries that moved or left
        pending = self._pending_ids()
        pending = pending[np.isin(self._key_of[pending], voxels)]
        return np.concatenate([ids, pending])

    def query_frustum(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int, z_max: float) -> np.ndarray:
        """Ids whose voxel's bounding sphere meets the view frustum between the camera and ``z_max``."""
        voxels = self.occupied_voxels()
        if voxels.size == 0:
            return np.zeros(0, np.int64)
        w2c = invert_se3(np.asarray(c2w, np.float64))
        p = self.voxel_centres(voxels) @ w2c[:3, :3].T + w2c[:3, 3]  # [V, 3] camera frame
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        r = self.voxel_size * np.sqrt(3.0) / 2.0
        keep = (z > -r) & (z < z_max + r)
        # Side planes through the camera centre at the outer pixel edges (u = -0.5 and W - 0.5).
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        for lo, hi, coord in (((-0.5 - cx) / fx, (width - 0.5 - cx) / fx, x),
                              ((-0.5 - cy) / fy, (height - 0.5 - cy) / fy, y)):
            keep &= (coord - lo * z) / np.hypot(1.0, lo) > -r
            keep &= (hi * z - coord) / np.hypot(1.0, hi) > -r
        return self.query_voxels(voxels[keep])
