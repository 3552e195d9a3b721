"""The service's observer: pipeline progress into the session store."""

from __future__ import annotations

import threading
from dataclasses import asdict

from server.store import SessionStore
from stream4d.contracts import AlignedWindow, GaussianSnapshot, StreamStats


class ProgressObserver:
    """Persists each window's ``StreamStats`` as the session's progress.

    One SQLite write per window: windows take seconds, so this is cheap, and
    the last progress survives a crash for the failure report.
    """

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self._store = store
        self._session_id = session_id
        self._lock = threading.Lock()
        self.last: dict | None = None

    def on_window(self, window: AlignedWindow) -> None:
        pass  # progress is reported by on_stats, right after each window

    def on_gaussians(self, snapshot: GaussianSnapshot) -> None:
        pass

    def on_stats(self, stats: StreamStats) -> None:
        progress = asdict(stats)
        progress["errors"] = list(progress["errors"])[-20:]  # bounded: errors can repeat per frame
        with self._lock:
            self.last = progress
        self._store.update(self._session_id, stats=progress)

    def record(self, progress: dict) -> None:
        """Progress reported from elsewhere (a job on another node), already as a dict."""
        with self._lock:
            self.last = progress
        self._store.update(self._session_id, stats=progress)

    def close(self) -> None:
        pass
