"""Column storage for Gaussians: dense numpy arrays that grow and shrink in place."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from stream4d.contracts import GaussianSnapshot
from stream4d.geometry import quat_wxyz, rotation_from_quat_wxyz

# What a renderable Gaussian is made of (GaussianSnapshot's columns, minus timestamps).
SPLAT_FIELDS: dict[str, tuple[type, tuple[int, ...]]] = {
    "means": (np.float32, (3,)),  # world frame
    "colors": (np.float32, (3,)),  # RGB in [0, 1]
    "opacities": (np.float32, ()),  # (0, 1)
    "scales": (np.float32, (3,)),  # standard deviations, world units
    "quats": (np.float32, (4,)),  # w-first, local -> world
}
# Bookkeeping of static Gaussians on top of that.
STATIC_FIELDS: dict[str, tuple[type, tuple[int, ...]]] = {
    **SPLAT_FIELDS,
    "weight": (np.float32, ()),  # accumulated confidence weight of the fused observations
    "support": (np.int32, ()),  # +1 per view that confirmed it (capped), -1 per view that saw through it
    "seen_from": (np.float32, (3,)),  # camera centre of the last view that confirmed it
    "last_view": (np.int64, ()),  # counter of the last view that confirmed it
    "last_ts": (np.float64, ()),  # timestamp of that view
    "window": (np.int64, ()),  # aligned window that created it: a loop closure moves it with that window
}


class GaussianStore:
    """Dense columns ``[0, n)``; removal moves the last rows into the holes (ids change)."""

    def __init__(self, fields: dict[str, tuple[type, tuple[int, ...]]] = STATIC_FIELDS):
        self.fields = fields
        self.n = 0
        self._cols = {k: np.zeros((0,) + shape, dtype) for k, (dtype, shape) in fields.items()}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        """Live view ``[n, ...]`` of a column (writes go to the store)."""
        return self._cols[name][: self.n]

    @property
    def capacity(self) -> int:
        return self._cols["means"].shape[0]

    def clear(self) -> None:
        self.__init__(self.fields)

    def append(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """Add rows (every field, same length) and return their ids."""
        missing = set(self.fields) - set(rows)
        if missing:
            raise ValueError(f"GaussianStore.append lacks columns {sorted(missing)}")
        k = len(rows["means"])
        if self.n + k > self.capacity:
            new_cap = max(self.n + k, int(self.capacity * 1.5) + 1024)
            for name, col in self._cols.items():
                grown = np.zeros((new_cap,) + col.shape[1:], col.dtype)
                grown[: self.n] = col[: self.n]
                self._cols[name] = grown
        for name in self.fields:
            self._cols[name][self.n: self.n + k] = rows[name]
        ids = np.arange(self.n, self.n + k)
        self.n += k
        return ids

    def take(self, ids: np.ndarray, fields=None) -> dict[str, np.ndarray]:
        """Copies of the rows ``ids``."""
        return {k: self._cols[k][: self.n][ids].copy() for k in (fields or self.fields)}

    def remove(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Delete rows; the last surviving rows fill the holes.

        Returns ``(moved_from, moved_to)``: old and new ids of the rows that moved.
        """
        ids = np.unique(np.asarray(ids, np.int64))
        if ids.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        new_n = self.n - ids.size
        holes = ids[ids < new_n]
        tail = np.setdiff1d(np.arange(new_n, self.n), ids, assume_unique=True)
        for col in self._cols.values():
            col[holes] = col[tail]
        self.n = new_n
        return tail, holes

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._cols.values())


def transform_columns(cols: dict[str, np.ndarray], sim3) -> None:
    """Map Gaussian columns (a live store view or a row dict) by a similarity ``x -> s R x + t``, in place:
    means and ``seen_from`` move, scales grow by s, orientations turn by R."""
    R = np.asarray(sim3.R, np.float64)
    for name in ("means", "seen_from"):
        if name in cols and len(cols[name]):
            cols[name][:] = sim3.apply(cols[name].astype(np.float64))
    if "scales" in cols:
        cols["scales"] *= np.float32(sim3.s)
    if "quats" in cols and len(cols["quats"]):
        cols["quats"][:] = quat_wxyz(R @ rotation_from_quat_wxyz(cols["quats"]))


def snapshot_from_columns(cols: list[dict[str, np.ndarray]], timestamps: list[np.ndarray]) -> GaussianSnapshot:
    """Concatenate column dicts (with one timestamp array each) into a snapshot."""
    if not cols:
        empty = {k: np.zeros((0,) + shape, np.float32) for k, (_, shape) in SPLAT_FIELDS.items()}
        return GaussianSnapshot(**empty, timestamps=np.zeros(0, np.float64))
    merged = {k: np.concatenate([c[k] for c in cols]).astype(np.float32, copy=False) for k in SPLAT_FIELDS}
    return GaussianSnapshot(**merged, timestamps=np.concatenate(timestamps).astype(np.float64))


class DynamicLayer:
    """Per-timestamp Gaussians of moving surfaces, oldest timestamps dropped first."""

    def __init__(self):
        self._frames: OrderedDict[float, dict[str, np.ndarray]] = OrderedDict()  # by timestamp

    def __len__(self) -> int:
        return sum(len(f["means"]) for f in self._frames.values())

    @property
    def timestamps(self) -> list[float]:
        return list(self._frames)

    def clear(self) -> None:
        self._frames.clear()

    def add(self, timestamp: float, rows: dict[str, np.ndarray]) -> None:
        """Add Gaussians of ``timestamp``; empty rows still record the timestamp (nothing moved then)."""
        rows = {k: np.asarray(rows[k], dtype).reshape((-1,) + shape) for k, (dtype, shape) in SPLAT_FIELDS.items()}
        if timestamp in self._frames:
            old = self._frames[timestamp]
            rows = {k: np.concatenate([old[k], rows[k]]) for k in SPLAT_FIELDS}
        self._frames[timestamp] = rows
        self._frames = OrderedDict(sorted(self._frames.items()))

    def trim(self, keep_frames: int, max_gaussians: int) -> int:
        """Drop the oldest timestamps beyond ``keep_frames`` or ``max_gaussians``; returns Gaussians dropped."""
        dropped = 0
        total = len(self)
        while self._frames and (len(self._frames) > keep_frames or total > max_gaussians):
            _, rows = self._frames.popitem(last=False)
            total -= len(rows["means"])
            dropped += len(rows["means"])
        return dropped

    def nearest(self, timestamp: float) -> float | None:
        """The kept timestamp closest to ``timestamp`` (the earlier one on a tie)."""
        if not self._frames:
            return None
        ts = np.array(list(self._frames))
        return float(ts[np.argmin(np.abs(ts - timestamp))])

    def frames(self, timestamps=None) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
        """Columns and timestamp arrays of the given kept timestamps (all when None)."""
        keys = list(self._frames) if timestamps is None else [t for t in timestamps if t in self._frames]
        cols = [self._frames[t] for t in keys]
        return cols, [np.full(len(c["means"]), t, np.float64) for t, c in zip(keys, cols)]

    def nbytes(self) -> int:
        return sum(a.nbytes for f in self._frames.values() for a in f.values())

    def transform(self, sim3) -> None:
        """Map every timestamp's Gaussians by a similarity (see :func:`transform_columns`)."""
        for rows in self._frames.values():
            transform_columns(rows, sim3)
