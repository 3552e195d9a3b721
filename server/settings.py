"""Service settings: built once (from the CLI or a test) and passed to ``create_app``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_workers() -> int:
    """One reconstruction per core: the pipeline is CPU-bound."""
    return max(1, os.cpu_count() or 1)


@dataclass
class Settings:
    """Everything the service needs to know about its machine.

    data_dir:          root of the service's state: ``sessions.db`` (SQLite) and
                       ``sessions/<id>/`` (upload + outputs). Created if missing.
    max_upload_bytes:  uploads larger than this are refused with 413 (default 2 GiB).
    workers:           reconstructions running at once; more wait in the queue
                       (default: one per CPU core).
    host, port:        where ``stream4d serve`` listens.
    live_queue:        frames a live session buffers before dropping the oldest.
    live_idle_timeout: seconds a live session waits for its next frame before
                       its job fails as stalled (frees the worker).
    max_attempts:      runs of one job across server restarts before it is
                       marked failed (a job interrupted by a crash is resumed).
    allow_devices:     whether ``camera:N`` (a device on the server) may be pulled.
    viewer:            rerun viewer per session: "serve" (web viewer URL, for sessions
                       that ask for it) or "none".
    kept_viewers:      viewers of ended sessions kept serving (oldest stopped first).
    viewer_memory:     data each session's viewer server buffers for late viewers.
    vggt_weights:      checkpoint for the "vggt" backend; without it that backend
                       is refused. Never taken from a request.
    upload_chunk_bytes: read size while streaming an upload to disk.
    """

    data_dir: Path = field(default_factory=lambda: Path("stream4d-data"))
    max_upload_bytes: int = 2 * 1024**3
    workers: int = field(default_factory=default_workers)
    host: str = "127.0.0.1"
    port: int = 8000
    live_queue: int = 32
    live_idle_timeout: float = 120.0
    max_attempts: int = 2
    allow_devices: bool = True
    viewer: str = "none"
    kept_viewers: int = 4
    viewer_memory: str = "256MiB"
    vggt_weights: Path | None = None
    upload_chunk_bytes: int = 1024 * 1024
    log_level: str = "info"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.max_upload_bytes <= 0:
            raise ValueError(f"Settings.max_upload_bytes must be > 0, got {self.max_upload_bytes}")
        if self.workers < 1:
            raise ValueError(f"Settings.workers must be >= 1, got {self.workers}")
        if self.live_queue < 1:
            raise ValueError(f"Settings.live_queue must be >= 1, got {self.live_queue}")
        if self.max_attempts < 1:
            raise ValueError(f"Settings.max_attempts must be >= 1, got {self.max_attempts}")
        if self.viewer not in ("none", "serve"):
            raise ValueError(f"Settings.viewer must be 'none' or 'serve', got {self.viewer!r}")
        if self.vggt_weights is not None:
            self.vggt_weights = Path(self.vggt_weights).expanduser().resolve()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sessions.db"

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"
