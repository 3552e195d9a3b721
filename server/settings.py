"""Service settings: built once (from the CLI or a test) and passed to ``create_app``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_workers() -> int:
    """One reconstruction per core: the pipeline is CPU-bound."""
    return max(1, os.cpu_count() or 1)


DEFAULT_MAX_PIXELS = 4096 * 4096
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def default_trusted_hosts(bind_host: str) -> list[str]:
    """Localhost and the bind address; any host when bound to every interface (its names are unknown)."""
    if bind_host in WILDCARD_ADDRESSES:
        return ["*"]
    return list(dict.fromkeys([*LOOPBACK_NAMES, bind_host.lower()]))


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
    live_keyframer_lag: seconds a live frame may wait for the keyframer (behind live
                       tracking) before it judges only every third frame to catch up; a
                       long time (3600) never skips, which makes a live run's keyframes
                       independent of the machine's load (reproducible runs).
    max_attempts:      runs of one job across server restarts before it is
                       marked failed (a job interrupted by a crash is resumed).
    allow_devices:     whether ``camera:N`` (a device on the server) may be pulled (default off).
    allow_private_sources: whether pulled URLs may point at loopback, private, link-local
                       or other non-public addresses (default off: the server would
                       otherwise fetch from its own network for any client).
    trusted_hosts:     ``Host`` header names accepted (DNS rebinding guard); None means
                       the bind address and localhost; ``["*"]`` accepts any.
    max_header_bytes:  largest request head (request line + headers); more is 431.
    max_headers:       most header lines in one request; more is 431.
    max_body_bytes:    largest request body on every route but the upload; more is 413.
    request_timeout:   seconds a client may take to send a request's head, or stay
                       silent in the middle of its body, before the connection is closed.
    max_connections:   connections (and running requests) at once; more get 503.
    max_pixels:        largest width x height of an uploaded, pulled or pushed frame.
    max_sessions:      sessions not yet ended (created, queued, running); more get 503.
    max_live_sessions: live WebSocket sessions at once; they run on their own workers,
                       so idle live clients never hold an upload's worker.
    live_queue_bytes:  bytes of decoded frames a live session buffers (with ``live_queue``,
                       whichever fills first drops the oldest frame).
    viewer:            rerun viewer per session: "serve" (web viewer URL, for sessions
                       that ask for it) or "none".
    kept_viewers:      viewers of ended sessions kept serving (oldest stopped first).
    viewer_memory:     data each session's viewer server buffers for late viewers.
    vggt_weights:      checkpoint for the "vggt" backend; without it that backend
                       is refused. Never taken from a request.
    upload_chunk_bytes: read size while streaming an upload to disk.
    runner:            where jobs run: "local" (threads in the server) or "ray" (a Ray
                       task per upload or pull, an actor per live session). With
                       "ray", ``data_dir`` must be a directory every Ray node mounts at the
                       same path (docs/deploy.md).
    ray_address:       the Ray cluster to join; None starts a single-node Ray in the server.
    ray_num_cpus, ray_num_gpus: resources each Ray job reserves on its node.
    ray_max_retries:   re-runs of a Ray job whose worker or node died.
    """

    data_dir: Path = field(default_factory=lambda: Path("stream4d-data"))
    max_upload_bytes: int = 2 * 1024**3
    workers: int = field(default_factory=default_workers)
    host: str = "127.0.0.1"
    port: int = 8000
    live_queue: int = 32
    live_queue_bytes: int = 64 * 1024**2
    live_idle_timeout: float = 30.0
    live_keyframer_lag: float = 0.5
    max_live_sessions: int = 2
    max_sessions: int = 1000
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_body_bytes: int = 64 * 1024
    request_timeout: float = 10.0
    max_connections: int = 200
    max_attempts: int = 2
    allow_devices: bool = False
    allow_private_sources: bool = False
    trusted_hosts: list[str] | None = None
    viewer: str = "none"
    kept_viewers: int = 4
    viewer_memory: str = "256MiB"
    vggt_weights: Path | None = None
    upload_chunk_bytes: int = 1024 * 1024
    log_level: str = "info"
    runner: str = "local"
    ray_address: str | None = None
    ray_num_cpus: float = 1.0
    ray_num_gpus: float = 0.0
    ray_max_retries: int = 3

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.max_upload_bytes <= 0:
            raise ValueError(f"Settings.max_upload_bytes must be > 0, got {self.max_upload_bytes}")
        if self.workers < 1:
            raise ValueError(f"Settings.workers must be >= 1, got {self.workers}")
        for name in ("live_queue", "live_queue_bytes", "max_live_sessions", "max_sessions", "max_pixels",
                     "max_header_bytes", "max_headers", "max_body_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"Settings.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("live_idle_timeout", "request_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Settings.{name} must be > 0 seconds, got {getattr(self, name)}")
        if not 0 <= self.live_keyframer_lag < float("inf"):
            raise ValueError(f"Settings.live_keyframer_lag must be >= 0 seconds (finite), got {self.live_keyframer_lag}")
        if self.max_header_bytes < 1024:
            raise ValueError(f"Settings.max_header_bytes must be >= 1024, got {self.max_header_bytes}")
        if self.trusted_hosts is None:
            self.trusted_hosts = default_trusted_hosts(self.host)
        self.trusted_hosts = [h.strip().lower() for h in self.trusted_hosts if h.strip()]
        if not self.trusted_hosts:
            raise ValueError("Settings.trusted_hosts must name at least one host (or '*')")
        if self.max_attempts < 1:
            raise ValueError(f"Settings.max_attempts must be >= 1, got {self.max_attempts}")
        if self.viewer not in ("none", "serve"):
            raise ValueError(f"Settings.viewer must be 'none' or 'serve', got {self.viewer!r}")
        if self.runner not in ("local", "ray"):
            raise ValueError(f"Settings.runner must be 'local' or 'ray', got {self.runner!r}")
        if self.ray_address is not None and self.runner != "ray":
            raise ValueError("Settings.ray_address needs runner 'ray'")
        if not self.ray_num_cpus > 0 or self.ray_num_gpus < 0 or self.ray_max_retries < 0:
            raise ValueError(f"Ray resources must be num_cpus > 0, num_gpus >= 0, max_retries >= 0; got "
                             f"{self.ray_num_cpus}, {self.ray_num_gpus}, {self.ray_max_retries}")
        if self.vggt_weights is not None:
            self.vggt_weights = Path(self.vggt_weights).expanduser().resolve()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "sessions.db"

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"
