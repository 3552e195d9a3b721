"""The session manager: sessions, their inputs, their jobs, their files.

Routers call it; it owns the store (durable metadata), the job runner and
the in-process live feeds. State changes go through the store with
check-and-set transitions, so a stop, a delete and a worker finishing can race
without corrupting a session.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from server.errors import ApiError
from server.jobs import JobFailedError, JobRunner, LocalJobRunner, UnknownJobError
from server.logging import log_event
from server.models import ResultName, SessionOptions
from server.progress import ProgressObserver
from server.session_config import reconstruct_config
from server.settings import Settings
from server.store import SessionRecord, SessionStore
from server.uploads import PART_NAME

OUT_DIR = "out"
CHUNKS_DIR = "chunks"  # next to OUT_DIR: the parts of a chunked upload (never listed as results)
MAP_DIR = "map"  # inside OUT_DIR: the session's saved map
_SESSION_DIR = re.compile(r"^[0-9a-f]{32}$")
_PULL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
_DEVICE = re.compile(r"^camera:\d{1,3}$")


def make_private_dir(path: Path) -> None:
    """``path`` (and parents) exist; ``path`` itself is readable by the server's user only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


@dataclass(frozen=True)
class ReconstructionJob:
    """Everything a worker needs to run one session (picklable)."""

    session_id: str
    kind: str  # "upload" | "live" | "pull"
    source: str | None  # stored upload path or pulled URL; None for live (frames come through the server)
    out_dir: str
    config: dict[str, Any]  # the run's config tree (stream4d.pipeline.ReconstructConfig.to_dict)
    # A chunked upload: {"frame_count", "chunks", "overlap", "anchor_stride"} (options.chunks); None: one run.
    chunks: dict[str, Any] | None = None

    @property
    def work_dir(self) -> str:
        """Where a chunked job's parts run (``<part>/out``, control files next to each)."""
        return str(Path(self.out_dir).parent / CHUNKS_DIR)


@dataclass
class LiveFeed:
    """A live session's frame queue and what happened to the frames sent to it."""

    source: Any  # recon.ingest.PushSource
    job: Any = None  # its ReconstructionJob, submitted with the first frame
    started: bool = False  # the job was submitted
    received: int = 0
    accepted: int = 0
    invalid: int = 0
    connected: bool = True

    @property
    def dropped(self) -> int:
        return int(self.source.stats.dropped)

    def counters(self) -> dict[str, Any]:
        return {"received": self.received, "accepted": self.accepted, "dropped": self.dropped,
                "invalid": self.invalid, "pending": int(self.source.pending), "connected": self.connected}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_pull_url(url: str, allow_devices: bool, allow_private: bool = False) -> str:
    """A stream URL the server may read: never a file path or an FFmpeg pseudo-protocol,
    and (unless ``allow_private``) never an address on the server's own networks."""
    url = url.strip()
    if _DEVICE.match(url):
        if not allow_devices:
            raise ApiError(403, "devices_disabled", "reading devices on the server is disabled")
        return url
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ApiError(400, "bad_source_url", "the source URL contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _PULL_SCHEMES or not parts.hostname:
        raise ApiError(
            400, "bad_source_url",
            f"source must be an {'/'.join(_PULL_SCHEMES)} URL with a host, or camera:N; got {url[:200]!r}",
        )
    try:
        port = parts.port
    except ValueError:
        raise ApiError(400, "bad_source_url", f"the source URL has an invalid port: {url[:200]!r}") from None
    if not allow_private:
        check_public_host(parts.hostname, port)
    return url


def check_public_host(host: str, port: int | None) -> None:
    """Refuse a host that is, or resolves to, a loopback, private, link-local or other
    non-public address (SSRF: the server must not fetch from its own networks for a client).

    The name is resolved again when FFmpeg opens the stream, so a name whose DNS answer
    changes in between can still reach one; --allow-private-sources off is a guard, not a
    network policy (a firewall on the server is).
    """
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise ApiError(400, "bad_source_url", f"the source host {host[:200]!r} cannot be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise ApiError(403, "private_source",
                           f"the source host {host[:200]!r} is a loopback, private or link-local address "
                           "({}); the server only pulls from public addresses unless started with "
                           "--allow-private-sources".format(address))


def check_chunk_options(options: SessionOptions) -> None:
    """400 for chunk options that cannot go together (each chunk numbers frames by decode position)."""
    if options.chunks is None:
        return
    clashes = [name for name, on in (("stride", options.stride != 1), ("target_fps", options.target_fps is not None),
                                     ("max_frames", options.max_frames is not None),
                                     ("drop_duplicates", options.drop_duplicates), ("final_ba", options.final_ba),
                                     ("map_from", options.map_from is not None)) if on]
    if clashes:
        raise ApiError(400, "bad_chunk_options",
                       f"chunks cannot be combined with {', '.join(clashes)}: a chunked upload reconstructs every "
                       "frame of the video in chunks joined after the fact (no final bundle adjustment over "
                       "them, no map to start from)")


def chunk_plan(options: SessionOptions, frame_count: int) -> dict[str, Any] | None:
    """A chunked upload's plan for a video of ``frame_count`` frames (None without ``chunks``);
    400 when the video is too short for it."""
    if options.chunks is None:
        return None
    from stream4d.pipeline.chunks import plan_parts

    plan = {"frame_count": int(frame_count), "chunks": options.chunks, "overlap": options.chunk_overlap,
            "anchor_stride": options.chunk_anchor_stride}
    try:
        plan_parts(**plan)
    except ValueError as exc:
        raise ApiError(400, "video_too_short_for_chunks",
                       f"the video cannot be cut as asked: {exc}; ask for fewer chunks or a smaller chunk_overlap "
                       "(or no chunks)") from None
    return plan


def refuse_chunks(options: SessionOptions, kind: str) -> None:
    if options.chunks is not None:
        raise ApiError(400, "chunks_need_upload",
                       f"this session asks for chunks, which apply to an uploaded video only, not to a {kind} "
                       "stream; create a session without chunks")


def make_runner(settings: Settings, execute) -> JobRunner:
    """The runner ``settings.runner`` names: threads in this process, or tasks on a Ray cluster."""
    if settings.runner == "ray":
        from server.ray_runner import RayJobRunner, RayOptions

        return RayJobRunner(execute, settings.workers, RayOptions(
            address=settings.ray_address, num_cpus=settings.ray_num_cpus, num_gpus=settings.ray_num_gpus,
            max_retries=settings.ray_max_retries))
    return LocalJobRunner(execute, settings.workers)


# What a local job imports on its first run (stream4d.pipeline.run's lazy imports included).
JOB_MODULES = ("stream4d.pipeline.run", "memory.gaussians.cache", "viz.observer", "recon.keyframes",
               "recon.quality", "recon.live_tracking", "recon.live_bootstrap", "align")


class SessionManager:
    def __init__(self, settings: Settings, runner: JobRunner | None = None) -> None:
        self.settings = settings
        make_private_dir(settings.data_dir)
        make_private_dir(settings.sessions_dir)
        self.store = SessionStore(settings.db_path)
        os.chmod(settings.db_path, 0o600)
        self.runner: JobRunner = runner or make_runner(settings, self.execute)
        # Live sessions run on workers of their own (one per allowed live session), so a
        # connected client that sends nothing never holds a worker an upload is waiting for.
        self.live_runner: JobRunner = LocalJobRunner(self.execute, settings.max_live_sessions)
        self._lock = threading.Lock()
        self._claims: set[str] = set()  # sessions whose input is being attached right now
        self._live: dict[str, LiveFeed] = {}
        self._stop_reasons: dict[str, str] = {}  # "stopped" | "deleted" | "shutdown"
        self._viewer_urls: dict[str, str] = {}
        self._viewers: dict[str, Any] = {}  # session id -> viz.RerunObserver serving its viewer
        self._ended_viewers: list[str] = []  # sessions whose job ended but whose viewer still serves
        self._shutting_down = False

    # ----- paths ---------------------------------------------------------------------------
    def session_dir(self, session_id: str) -> Path:
        if not _SESSION_DIR.match(session_id):  # ids are ours; this guards against misuse
            raise ValueError(f"not a session id: {session_id!r}")
        return self.settings.sessions_dir / session_id

    def out_dir(self, session_id: str) -> Path:
        return self.session_dir(session_id) / OUT_DIR

    def map_dir(self, session_id: str) -> Path:
        """The session's saved map (a map folder, stream4d/pipeline/maps.py), written when its job ends."""
        return self.out_dir(session_id) / MAP_DIR

    def part_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / PART_NAME

    # ----- sessions ------------------------------------------------------------------------
    def create(self, options: SessionOptions) -> tuple[SessionRecord, str]:
        check_chunk_options(options)
        if options.backend == "vggt" and self.settings.vggt_weights is None:
            raise ApiError(400, "backend_unavailable",
                           "backend 'vggt' needs weights and none are configured on this server; use 'default'")
        if options.final_ba:
            from align.bundle import BundleAdjustmentUnavailable, require_pycolmap

            try:
                require_pycolmap()
            except BundleAdjustmentUnavailable:
                raise ApiError(400, "final_ba_unavailable",
                               "final_ba needs pycolmap, which this server does not have "
                               "(pip install 'stream4d[ba]')") from None
        with self._lock:
            open_sessions = self.store.count(["created", "queued", "running"])
            if open_sessions >= self.settings.max_sessions:
                raise ApiError(503, "too_many_sessions",
                               f"the server has {open_sessions} sessions not yet ended (its limit, "
                               "--max-sessions); delete finished ones or retry later", headers={"Retry-After": "30"})
            rec, token = self.store.create(options.model_dump())
        path = self.session_dir(rec.id)
        path.mkdir(mode=0o700, parents=True)
        fsync_dir(path.parent)
        log_event("session.created", session=rec.id)
        return rec, token

    def get(self, session_id: str) -> SessionRecord | None:
        return self.store.get(session_id)

    def live_counters(self, session_id: str) -> dict[str, Any] | None:
        feed = self._live.get(session_id)
        if feed is not None:
            return feed.counters()
        rec = self.store.get(session_id)
        return None if rec is None else rec.live

    def viewer_url(self, rec: SessionRecord) -> str | None:
        """The session's live viewer while this process serves it (viewers do not survive restarts)."""
        return self._viewer_urls.get(rec.id)

    def claim_input(self, session_id: str) -> None:
        """Reserve the session for one input (upload, live or pull); 409 if it has one."""
        with self._lock:
            rec = self.store.get(session_id)
            if rec is None:
                raise ApiError(404, "session_not_found", f"session {session_id} does not exist")
            if rec.kind or rec.state != "created" or session_id in self._claims:
                what = rec.kind or "another input"
                raise ApiError(409, "session_has_input",
                               f"session {session_id} already has its input ({what}, state {rec.state}); "
                               "create a new session for another stream")
            self._claims.add(session_id)

    def release_claim(self, session_id: str) -> None:
        with self._lock:
            self._claims.discard(session_id)

    def _job(self, rec: SessionRecord, kind: str, source: str | None) -> ReconstructionJob:
        options = SessionOptions(**rec.options)
        config = reconstruct_config(options, self.settings.vggt_weights, self.settings.max_pixels,
                                    save_map=self.map_dir(rec.id),
                                    map_from=self.map_dir(options.map_from) if options.map_from else None,
                                    keyframer_lag_s=self.settings.live_keyframer_lag)
        chunks = None
        if kind == "upload" and options.chunks is not None:
            chunks = chunk_plan(options, (rec.upload or {}).get("probe", {}).get("frames", 0))
        return ReconstructionJob(rec.id, kind, source, str(self.out_dir(rec.id)), config.to_dict(), chunks)

    def check_upload(self, session_id: str, frame_count: int) -> None:
        """Before an upload is kept: 400 when the session's chunks do not fit the video."""
        rec = self.store.get(session_id)
        if rec is not None:
            chunk_plan(SessionOptions(**rec.options), frame_count)

    def accept_upload(self, session_id: str, stored: str, nbytes: int, filename: str | None,
                      probe: dict[str, Any]) -> SessionRecord:
        """The upload is durable on disk: record it and queue its job."""
        upload = {"bytes": nbytes, "filename": filename, "probe": probe}
        rec = self.store.transition(session_id, ["created"], kind="upload", state="queued",
                                    source=stored, upload=upload)
        if rec is None:
            raise ApiError(404, "session_not_found", f"session {session_id} was deleted during the upload")
        self.runner.submit(session_id, self._job(rec, "upload", str(self.session_dir(session_id) / stored)))
        log_event("upload.accepted", session=session_id, bytes=nbytes, frames=probe.get("frames"))
        return rec

    def start_pull(self, session_id: str, url: str) -> SessionRecord:
        url = check_pull_url(url, self.settings.allow_devices, self.settings.allow_private_sources)
        current = self.store.get(session_id)
        if current is not None:
            refuse_chunks(SessionOptions(**current.options), "pulled")
        rec = self.store.transition(session_id, ["created"], kind="pull", state="queued", source=url)
        if rec is None:
            raise ApiError(404, "session_not_found", f"session {session_id} does not exist")
        self.runner.submit(session_id, self._job(rec, "pull", url))
        log_event("pull.started", session=session_id, scheme=urlsplit(url).scheme or "camera")
        return rec

    def open_live(self, session_id: str) -> LiveFeed:
        """A live session's frame queue; its job starts with the first frame (``start_live_job``)."""
        from recon.ingest.push import PushSource
        from stream4d.pipeline import ReconstructConfig

        limit = self.settings.max_live_sessions
        current = self.store.get(session_id)
        if current is not None:
            refuse_chunks(SessionOptions(**current.options), "live")
        with self._lock:  # count and register at once: two handshakes cannot both take the last slot
            if len(self._live) >= limit:
                raise ApiError(503, "too_many_live_sessions",
                               f"the server already serves {limit} live sessions (--max-live-sessions); "
                               "retry later", headers={"Retry-After": "10"})
            rec = self.store.transition(session_id, ["created"], kind="live", state="queued", source="websocket")
            if rec is None:
                raise ApiError(404, "session_not_found", f"session {session_id} does not exist")
            job = self._job(rec, "live", None)
            remote_source = getattr(self.runner, "live_source", None)  # Ray: an actor holds the stream
            if remote_source is not None:
                source = remote_source(job, capacity=self.settings.live_queue,
                                       idle_timeout=self.settings.live_idle_timeout,
                                       max_bytes=self.settings.live_queue_bytes)
            else:
                ingest = ReconstructConfig.from_dict(job.config).ingest  # what the run would ask of its input
                source = PushSource(name=f"live-{session_id[:8]}", capacity=self.settings.live_queue,
                                    options=ingest, idle_timeout=self.settings.live_idle_timeout,
                                    max_bytes=self.settings.live_queue_bytes)
            feed = LiveFeed(source, job)
            self._live[session_id] = feed
        log_event("live.opened", session=session_id)
        return feed

    def start_live_job(self, session_id: str) -> None:
        """The first frame arrived: the live job takes a worker now (a silent client never does)."""
        with self._lock:
            feed = self._live.get(session_id)
            if feed is None or feed.started:
                return
            feed.started = True
        self.live_runner.submit(session_id, feed.job)

    def end_live(self, session_id: str, why: str | None = None) -> None:
        """End of a live stream (client said so or went away): the job drains the queue and finishes.

        A stream that ends before its first frame has no job: the session ends here, ``failed``
        with ``why`` (or cancelled when the client stopped it)."""
        with self._lock:
            feed = self._live.get(session_id)
            if feed is None:
                return
            never_started = not feed.started
            if never_started:
                feed.started = True  # no job may start for it any more
                del self._live[session_id]
        feed.connected = False
        feed.source.close()
        self.store.update(session_id, live=feed.counters())
        log_event("live.ended", session=session_id, **feed.counters())
        if not never_started:
            return
        feed.source.discard()
        reason = self._stop_reasons.pop(session_id, None)
        if reason == "stopped":
            self.store.transition(session_id, ["queued"], state="cancelled", finished_at=time.time(),
                                  notes=["stopped by the client before its first frame"])
        elif reason != "deleted":
            if reason == "shutdown":
                why = "the server shut down before the live stream's first frame"
            self.store.transition(session_id, ["queued"], state="failed", finished_at=time.time(),
                                  error=why or "the live stream ended before its first frame")

    def stop(self, session_id: str) -> SessionRecord | None:
        """End a session's stream early and keep what was reconstructed so far."""
        rec = self.store.get(session_id)
        if rec is None or rec.is_terminal:
            return rec
        if rec.state == "created":
            raise ApiError(409, "nothing_to_stop", f"session {session_id} has no input yet")
        self._stop_reasons[session_id] = "stopped"
        if rec.kind == "live":
            self.end_live(session_id)  # the job reconstructs what is queued, then completes
        else:
            if self.store.transition(session_id, ["queued"], state="cancelled", finished_at=time.time(),
                                     notes=rec.notes + ["stopped by the client before it started"]):
                self._stop_reasons.pop(session_id, None)  # its job will never run to read the reason
            self._cancel_job(session_id)
        log_event("session.stop_requested", session=session_id)
        return self.store.get(session_id)

    def _cancel_job(self, session_id: str) -> None:
        for runner in (self.runner, self.live_runner):
            try:
                runner.cancel(session_id)
            except UnknownJobError:
                pass

    def _wait_job(self, session_id: str, timeout: float) -> None:
        for runner in (self.runner, self.live_runner):
            try:
                runner.results(session_id, timeout=timeout)
            except (UnknownJobError, JobFailedError, TimeoutError):
                pass

    def active_jobs(self) -> int:
        """Jobs queued or running, uploads and pulls and live sessions together (-1: unknown)."""
        counts = [getattr(r, "active", lambda: -1)() for r in (self.runner, self.live_runner)]
        return -1 if -1 in counts else sum(counts)

    def public_message(self, session_id: str, text: str) -> str:
        """``text`` without server paths: a session's files are named by their own names."""
        text = text.replace(str(self.session_dir(session_id)) + os.sep, "")
        return text.replace(str(self.settings.data_dir), "<data-dir>")

    def delete(self, session_id: str, wait: float = 30.0) -> bool:
        """Forget the session: stop its job, then remove its row and every file. Blocking."""
        rec = self.store.get(session_id)
        if rec is None:
            return False
        self._stop_reasons[session_id] = "deleted"
        self.store.delete(session_id)  # from now on every call on it is a 404
        if rec.kind == "live":
            self.end_live(session_id)
            feed = self._live.get(session_id)
            if feed is not None:
                feed.source.discard()  # the frames still queued are not needed any more
        self._cancel_job(session_id)
        self._wait_job(session_id, wait)
        self._remove_files(session_id)
        log_event("session.deleted", session=session_id)
        return True

    def _remove_files(self, session_id: str) -> None:
        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)
        self._live.pop(session_id, None)
        self._stop_reasons.pop(session_id, None)
        self._stop_viewer(session_id)
        for runner in (self.runner, self.live_runner):
            forget = getattr(runner, "forget", None)
            if forget is not None:
                forget(session_id)

    def result_files(self, session_id: str) -> list[tuple[ResultName, Path]]:
        out = self.out_dir(session_id)
        return [(name, out / name.value) for name in ResultName if (out / name.value).is_file()]

    # ----- jobs ----------------------------------------------------------------------------
    def execute(self, job: ReconstructionJob, stop: threading.Event) -> dict[str, Any] | None:
        """Run one session's reconstruction (called by the job runner, on a worker)."""
        sid = job.session_id
        rec = self.store.get(sid)
        if rec is None:
            return None
        rec = self.store.transition(sid, ["queued"], state="running", started_at=time.time(),
                                    attempts=rec.attempts + 1, error=None)
        if rec is None:  # stopped or deleted while queued
            return None
        out_dir = Path(job.out_dir)
        if out_dir.exists():  # a resumed job starts over; the interrupted attempt's files are superseded
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        progress = ProgressObserver(self.store, sid)
        log_event("job.started", session=sid, kind=job.kind, attempt=rec.attempts)
        started = time.monotonic()
        try:
            summary = self._reconstruct(job, out_dir, progress, stop)
        except Exception as exc:
            reason = self._stop_reasons.pop(sid, None) or ("shutdown" if self._shutting_down else None)
            error = self.public_message(sid, f"{type(exc).__name__}: {exc}")
            self._finish_failed(sid, job, reason, error, progress)
            log_event("job.failed", logging.ERROR, session=sid, error=error, exc_info=True)
            raise
        finally:
            with self._lock:
                feed = self._live.pop(sid, None)
            if feed is not None:
                feed.source.discard()  # frames left in the queue (a failed job) are freed now
                self.store.update(sid, live=feed.counters())
        reason = self._stop_reasons.pop(sid, None) or ("shutdown" if self._shutting_down else None)
        stats = dict(progress.last or {})
        if summary is not None and getattr(summary, "stats", None) is not None:
            stats = asdict(summary.stats)
        if reason is None and not stats.get("frames_posed"):
            error = (f"no frame was reconstructed: the input gave {stats.get('frames_received', 0)} frames "
                     f"and {stats.get('frames_processed', 0)} went through the model (a window needs at least "
                     "2 frames with enough texture; a still image or a blank video has none)")
            self._finish_failed(sid, job, None, error, progress)
            log_event("job.failed", logging.WARNING, session=sid, error=error)
            return stats
        self._finish_ok(sid, job, reason, stats)
        log_event("job.finished", session=sid, seconds=round(time.monotonic() - started, 2),
                  frames=stats.get("frames_processed"), reason=reason)
        return stats

    def _reconstruct(self, job: ReconstructionJob, out_dir: Path, progress: ProgressObserver,
                     stop: threading.Event) -> Any:
        from stream4d.pipeline import ReconstructConfig, reconstruct

        run_remote = getattr(self.runner, "run_remote", None)
        if job.kind != "live" and run_remote is not None:
            return self._reconstruct_remote(run_remote, job, progress, stop)
        if job.chunks is not None:
            return self._reconstruct_chunks(job, out_dir, progress, stop)
        source: Any = job.source
        if job.kind == "live":
            feed = self._live.get(job.session_id)
            if feed is None:
                raise RuntimeError("the live session's frame queue is gone (server restarted?)")
            source = feed.source
            if hasattr(source, "run_remote"):  # Ray: the session's actor runs the stream
                return self._reconstruct_live_remote(source, job, progress, stop)
        config = ReconstructConfig.from_dict(job.config)
        observers: list[Any] = [progress]
        viewer = self._start_viewer(job, out_dir)
        if viewer is not None:
            observers.append(viewer)
            config = replace(config, rrd=False)  # the viewer's observer records recording.rrd itself
        try:
            return reconstruct(source, out_dir, config, observers=observers, stop=stop, progress=False)
        finally:
            if viewer is not None:
                self._retire_viewer(job.session_id)

    @staticmethod
    def _reconstruct_chunks(job: ReconstructionJob, out_dir: Path, progress: ProgressObserver,
                            stop: threading.Event) -> Any:
        """A chunked upload on the local runner: its parts one after another in this job's worker
        (the same parts, join and outputs as on Ray; no live viewer: recording.rrd is written)."""
        from stream4d.pipeline import ReconstructConfig
        from stream4d.pipeline.chunks import reconstruct_in_chunks

        return reconstruct_in_chunks(job.source, out_dir, job.work_dir, ReconstructConfig.from_dict(job.config),
                                     stop=stop, observers=[progress], **job.chunks)

    def _reconstruct_remote(self, run_remote, job: ReconstructionJob, progress: ProgressObserver,
                            stop: threading.Event) -> Any:
        """The reconstruction on another node (no live viewer: recording.rrd is still written)."""
        sid = job.session_id
        rec = self.store.get(sid)
        first_attempt = rec.attempts if rec is not None else 1

        def on_attempt(n: int, info: dict) -> None:
            log_event("job.attempt", session=sid, attempt=first_attempt + n - 1, node=info.get("node"))
            if n > 1:
                cur = self.store.get(sid)
                if cur is not None:
                    self.store.update(sid, attempts=first_attempt + n - 1, notes=cur.notes + [
                        f"attempt {first_attempt + n - 1} started on another node after the previous one was lost"])

        stats = run_remote(job, stop, progress.record, on_attempt)
        return SimpleNamespace(stats=stats)

    def _reconstruct_live_remote(self, source: Any, job: ReconstructionJob, progress: ProgressObserver,
                                 stop: threading.Event) -> Any:
        """A live session run by its actor on a Ray node (no live viewer: recording.rrd is still written)."""
        def on_start(where: dict) -> None:
            log_event("job.attempt", session=job.session_id, attempt=1, node=where.get("node"))

        stats = source.run_remote(job.out_dir, stop, progress.record, on_start)
        return SimpleNamespace(stats=stats)

    # ----- per-session rerun viewers ---------------------------------------------------------
    def _start_viewer(self, job: ReconstructionJob, out_dir: Path) -> Any:
        rec = self.store.get(job.session_id)
        if self.settings.viewer != "serve" or rec is None or not rec.options.get("viewer", True):
            return None
        from viz import RerunObserver, VizConfig

        try:
            viewer = RerunObserver(VizConfig(mode="serve", rrd_path=out_dir / "recording.rrd", announce=False,
                                             server_memory_limit=self.settings.viewer_memory))
        except Exception as exc:  # no viewer must not mean no reconstruction
            log_event("viewer.failed", logging.WARNING, session=job.session_id, error=str(exc))
            return None
        with self._lock:
            self._viewers[job.session_id] = viewer
        if viewer.viewer_url:
            self._viewer_urls[job.session_id] = viewer.viewer_url
        return viewer

    def _retire_viewer(self, session_id: str) -> None:
        """The job ended: its viewer keeps serving the finished recording, within ``kept_viewers``."""
        with self._lock:
            self._ended_viewers.append(session_id)
            retire = self._ended_viewers[:-self.settings.kept_viewers] if self.settings.kept_viewers else \
                list(self._ended_viewers)
        for sid in retire:
            self._stop_viewer(sid)

    def _stop_viewer(self, session_id: str) -> None:
        with self._lock:
            viewer = self._viewers.pop(session_id, None)
            self._viewer_urls.pop(session_id, None)
            if session_id in self._ended_viewers:
                self._ended_viewers.remove(session_id)
        if viewer is not None:
            try:
                viewer.shutdown()
            except Exception as exc:
                log_event("viewer.shutdown_failed", logging.WARNING, session=session_id, error=str(exc))

    def _finish_ok(self, sid: str, job: ReconstructionJob, reason: str | None, stats: dict) -> None:
        rec = self.store.get(sid)
        if rec is None or reason == "deleted":
            self._remove_files(sid)  # deleted while running: delete() may have timed out waiting
            return
        merged = dict(stats)
        if reason == "shutdown" and job.kind != "live":  # a clean shutdown is not the job's fault
            self.store.transition(sid, ["running"], state="queued", stats=merged, attempts=max(0, rec.attempts - 1),
                                  notes=rec.notes + ["interrupted by a server shutdown; resumes on restart"])
            return
        notes = list(rec.notes)
        if reason == "stopped":
            notes.append(f"stopped early by the client after {merged.get('frames_processed', 0)} frames")
        elif reason == "shutdown":
            notes.append("the server shut down during the live stream; outputs cover the frames received")
        self.store.transition(sid, ["running"], state="completed", stats=merged, notes=notes,
                              finished_at=time.time())

    def _finish_failed(self, sid: str, job: ReconstructionJob, reason: str | None, error: str,
                       progress: ProgressObserver) -> None:
        rec = self.store.get(sid)
        if rec is None or reason == "deleted":
            self._remove_files(sid)
            return
        stats = dict(progress.last or rec.stats)
        if reason == "shutdown" and job.kind != "live":
            self.store.transition(sid, ["running"], state="queued", stats=stats, attempts=max(0, rec.attempts - 1),
                                  notes=rec.notes + [f"interrupted by a server shutdown ({error}); resumes on restart"])
            return
        kept = [name.value for name, _ in self.result_files(sid)]
        if kept:
            error += f" (partial outputs kept: {', '.join(kept)})"
        self.store.transition(sid, ["running"], state="failed", stats=stats, finished_at=time.time(), error=error)

    def warm_up(self) -> float | None:
        """Import what a job runs in this process (the pipeline, torch through the Gaussian cache,
        rerun): seconds a first live session would otherwise spend importing while its frame queue
        overflows. None when jobs run elsewhere (Ray)."""
        if getattr(self.runner, "run_remote", None) is not None:
            return None
        import importlib

        started = time.monotonic()
        for name in JOB_MODULES:
            importlib.import_module(name)
        return time.monotonic() - started

    # ----- restart safety ------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """After a restart (clean or kill -9): resume, fail or clean up what was in flight."""
        counts = {"resumed": 0, "failed": 0, "orphans_removed": 0}
        known = set()
        for rec in self.store.in_states(["created"]):
            known.add(rec.id)
            self.part_path(rec.id).unlink(missing_ok=True)  # an upload cut off by the crash
        for rec in self.store.in_states(["queued", "running"]):
            known.add(rec.id)
            interrupted = rec.state == "running"
            source = rec.source
            if rec.kind == "live":
                self.store.update(rec.id, state="failed", finished_at=time.time(),
                                  error="the server restarted during the live stream; frames in flight were "
                                        "lost (partial outputs kept)")
                counts["failed"] += 1
                continue
            if rec.kind == "upload" and not (self.session_dir(rec.id) / (source or "")).is_file():
                self.store.update(rec.id, state="failed", finished_at=time.time(),
                                  error="the uploaded video is missing after a restart")
                counts["failed"] += 1
                continue
            if interrupted and rec.attempts >= self.settings.max_attempts:
                self.store.update(rec.id, state="failed", finished_at=time.time(),
                                  error=f"interrupted by a server restart on each of {rec.attempts} attempts; "
                                        "partial outputs kept")
                counts["failed"] += 1
                continue
            notes = rec.notes
            if interrupted:
                notes = notes + [f"the server restarted during attempt {rec.attempts}; the job was resumed"]
            rec = self.store.update(rec.id, state="queued", notes=notes)
            path = str(self.session_dir(rec.id) / source) if rec.kind == "upload" else source
            self.runner.submit(rec.id, self._job(rec, rec.kind, path))
            counts["resumed"] += 1
        for rec in self.store.in_states(["completed", "failed", "cancelled"]):
            known.add(rec.id)
        for path in self.settings.sessions_dir.iterdir():
            if path.is_dir() and _SESSION_DIR.match(path.name) and path.name not in known:
                shutil.rmtree(path, ignore_errors=True)  # deleted, but the crash came before its files went
                counts["orphans_removed"] += 1
        if any(counts.values()):
            log_event("service.recovered", **counts)
        return counts

    def shutdown(self) -> None:
        """Clean stop: running jobs stop and are re-queued for the next start."""
        self._shutting_down = True
        for sid in list(self._live):
            self._stop_reasons.setdefault(sid, "shutdown")
            self.end_live(sid)
        for rec in self.store.in_states(["running"]):
            self._stop_reasons.setdefault(rec.id, "shutdown")
        self.runner.shutdown(wait=True)
        self.live_runner.shutdown(wait=True)
        for sid in list(self._viewers):
            self._stop_viewer(sid)
        self.store.close()
