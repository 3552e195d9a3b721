"""A bounded hand-off from the pipeline thread to the logging thread that never blocks the producer.

Drop policy (the stream keeps going, the viewer shows the latest state):
- ``gaussians`` and ``stats`` keep only the newest pending item: an older one is stale.
- ``pose`` items beyond ``MAX_POSES`` pending are dropped, oldest first.
- ``window`` items beyond ``maxsize`` lose their pixels and point maps, oldest first:
  their cameras go into one pending ``cameras`` batch. So no posed camera is ever
  lost, only what was drawn around it.
Every drop is counted per kind in ``dropped``.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from viz.camera_batch import CameraBatch

WINDOW = "window"
CAMERAS = "cameras"
POSE = "pose"  # one tracked frame's pose (FramePose); beyond MAX_POSES pending, the oldest are dropped
MAX_POSES = 256
GAUSSIANS = "gaussians"
STATS = "stats"
FINAL = "final"  # every frame's final pose (a list of PosedFrame), once, before STOP
STOP = "stop"
_LATEST_ONLY = (GAUSSIANS, STATS)


@dataclass(eq=False)  # identity: payloads hold numpy arrays
class WorkItem:
    kind: str  # WINDOW | CAMERAS | GAUSSIANS | STATS | STOP
    payload: Any  # AlignedWindow | CameraBatch | (snapshot, frame, time, point budget) | (stats, frame, time) | None


class DropQueue:
    """FIFO with the drop policy above; ``put`` never blocks.

    Holds at most ``maxsize`` full windows, one camera batch (the merged cameras of
    degraded windows), one ``gaussians`` and one ``stats`` item, and the STOP marker.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"DropQueue maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.dropped: Counter[str] = Counter()
        self._items: deque[WorkItem] = deque()
        self._cond = threading.Condition()

    def put(self, kind: str, payload: Any) -> None:
        with self._cond:
            if kind in _LATEST_ONLY:
                self._remove_pending(kind)
            self._items.append(WorkItem(kind, payload))
            if kind == POSE and sum(item.kind == POSE for item in self._items) > MAX_POSES:
                self._items.remove(next(item for item in self._items if item.kind == POSE))
                self.dropped[POSE] += 1
            while self._window_count() > self.maxsize and self._make_room():
                pass
            self._cond.notify()

    def put_stop(self) -> None:
        with self._cond:
            self._items.append(WorkItem(STOP, None))
            self._cond.notify()

    def get(self, timeout: float | None = None) -> WorkItem | None:
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout=timeout):
                return None
            return self._items.popleft()

    def __len__(self) -> int:
        with self._cond:
            return self._count()

    def kinds(self) -> list[str]:
        """Kinds of the pending items, oldest first (for inspection and tests)."""
        with self._cond:
            return [item.kind for item in self._items]

    def _count(self) -> int:
        return sum(item.kind != STOP for item in self._items)

    def _window_count(self) -> int:
        return sum(item.kind == WINDOW for item in self._items)

    def _remove_pending(self, kind: str) -> None:
        for item in list(self._items):
            if item.kind == kind:
                self._items.remove(item)
                self.dropped[kind] += 1

    def _make_room(self) -> bool:
        """Degrade the oldest full window to its cameras; False when no full window is left.

        Its cameras join the pending camera batch: batches only ever come from the oldest
        windows, so the one batch precedes every remaining window and the order holds.
        """
        oldest = next((item for item in self._items if item.kind == WINDOW), None)
        if oldest is None:
            return False
        batch = CameraBatch.from_window(oldest.payload)
        self.dropped[WINDOW] += 1
        pending = next((item for item in self._items if item.kind == CAMERAS), None)
        if pending is None:
            oldest.kind, oldest.payload = CAMERAS, batch
        else:
            pending.payload = CameraBatch.concat(pending.payload, batch)
            self._items.remove(oldest)
        return True
