"""A rerun session: a dedicated ``RecordingStream`` and its sinks (file, native viewer, web viewer).

Each session has its own recording, so several sessions log independently in one
process (the service runs several). Served sessions bind 127.0.0.1 only: the
gRPC server is rerun's in-process ``GrpcServerSink``; the web viewer (static
HTML + wasm) is the rerun CLI binary started with ``--bind 127.0.0.1``, one per
port, shared by every session of the process (each URL names its own gRPC server).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import rerun as rr
import rerun.blueprint as rrb
import rerun_bindings

from viz.blueprint import build_blueprint
from viz.config import VizConfig

LOOPBACK = "127.0.0.1"
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream4d-rerun-launcher")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


SERVER_STOP_S = 10.0  # how long stopping a served gRPC server may take before it is reported


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((LOOPBACK, port)) == 0


def rerun_binary() -> Path | None:
    """The rerun CLI/viewer binary shipped with rerun-sdk (package ``rerun_cli``), if installed."""
    try:
        import rerun_cli
    except ImportError:
        return None
    exe = Path(rerun_cli.__file__).parent / ("rerun.exe" if sys.platform.startswith("win") else "rerun")
    return exe if exe.is_file() else None


def native_viewer_problem() -> str | None:
    """Why a native viewer window cannot open here, or None when it can."""
    if rerun_binary() is None:
        return "the rerun viewer binary is not installed (rerun-sdk ships it as the rerun_cli package)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    return None


def _die_with_parent() -> None:
    """Linux: have the kernel stop the child when its parent thread dies (even by SIGKILL)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _listening(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float, name: str = "the rerun web viewer") -> None:
    """Return once ``proc`` listens on 127.0.0.1:``port``; RuntimeError (naming it ``name``) when it
    exits first or does not listen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} "
                               f"before listening on {LOOPBACK}:{port}")
        if _listening(port, timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s")


VIEWER_START_S = 15.0  # how long a native viewer may take to listen on its port
VIEWER_SETTLE_S = 2.0  # how long it must then stay up: without a usable display it exits after listening


def start_native_viewer(port: int) -> str | None:
    """Start the native rerun viewer on 127.0.0.1:``port`` (or reuse one already there, as
    rerun's own ``spawn()`` does); returns why it cannot run, or None when it is up.

    The viewer opens its gRPC server before its window, so a viewer that cannot open a
    window (no X server behind ``DISPLAY``, no GL) listens briefly and then exits: it counts
    as up only once it has listened and then stayed up for ``VIEWER_SETTLE_S`` seconds. It is
    detached (its own session), so the window outlives the run that opened it.
    """
    if _listening(port, timeout=0.5):
        return None
    with tempfile.TemporaryFile() as log:  # the viewer keeps its own handle once this one closes
        try:
            proc = subprocess.Popen(
                [str(rerun_binary()), "--port", str(port), "--memory-limit", "75%", "--expect-data-soon"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={**os.environ, "RERUN_APP_ONLY": "true"})
        except OSError as exc:
            return f"starting it failed ({exc})"
        try:
            _wait_for_port(port, proc, VIEWER_START_S, name="the viewer")
            proc.wait(timeout=VIEWER_SETTLE_S)  # returns only if it exits
            problem = f"the viewer exited with code {proc.returncode}"
        except subprocess.TimeoutExpired:
            return None
        except RuntimeError as exc:
            problem = str(exc)
            if proc.poll() is None:
                proc.terminate()
        log.seek(0)
        errors = [line for line in log.read().decode(errors="replace").splitlines() if "error" in line.lower()]
    return problem + (f": {errors[-1].strip()}" if errors else "")


class WebViewerServer:
    """The rerun web viewer served over HTTP on 127.0.0.1 by a rerun CLI subprocess."""

    _servers: dict[int, "WebViewerServer"] = {}
    _lock = threading.Lock()

    def __init__(self, port: int, connect_to: str, timeout: float = 20.0) -> None:
        exe = rerun_binary()
        if exe is None:
            raise RuntimeError("cannot serve the web viewer: the rerun binary (rerun_cli package) is missing")
        self.port = port
        # A gRPC URL on the command line makes the CLI serve only the viewer, no server of its own.
        # Launched from one long-lived thread: PDEATHSIG fires when the *thread* that
        # forked exits, and sessions are often opened from short-lived job threads.
        self._proc = _LAUNCHER.submit(
            subprocess.Popen,
            [str(exe), "--serve-web", "--bind", LOOPBACK, "--web-viewer-port", str(port), connect_to],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RERUN_APP_ONLY": "true"},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        ).result()
        try:
            _wait_for_port(port, self._proc, timeout)
        except RuntimeError:
            self.stop()
            raise

    @classmethod
    def shared(cls, port: int | None, connect_to: str) -> "WebViewerServer":
        """The process's web viewer on ``port`` (any running one when None), started on first use."""
        with cls._lock:
            for p, server in list(cls._servers.items()):
                if not server.running:
                    del cls._servers[p]
            if port is None and cls._servers:
                return next(iter(cls._servers.values()))
            if port is not None and port in cls._servers:
                return cls._servers[port]
            server = cls(port or free_port(), connect_to)
            cls._servers[server.port] = server
            return server

    @classmethod
    def stop_all(cls) -> None:
        with cls._lock:
            for server in cls._servers.values():
                server.stop()
            cls._servers.clear()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def url_for(self, grpc_url: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/?url={quote(grpc_url, safe='')}"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


atexit.register(WebViewerServer.stop_all)


def _file_sink(path: Path) -> rr.FileSink:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return rr.FileSink(str(path))
    except Exception as exc:
        raise ValueError(f"VizConfig.rrd_path {path}: cannot write the recording there ({exc})") from exc


class RerunSession:
    """Opens the sinks ``config`` asks for on a fresh ``RecordingStream``.

    Attributes:
        recording: the session's own ``rr.RecordingStream`` (never the global one).
        mode: the mode in effect (``"spawn"`` falls back to ``"serve"`` without a viewer/display).
        viewer_url: web viewer URL on 127.0.0.1 (serve mode), else None.
        grpc_url: the gRPC URL a native viewer can open (``rerun <grpc_url>``), else None.
        messages: what the session reported (fallbacks, URLs).
    """

    def __init__(self, config: VizConfig, blueprint: rrb.Blueprint | None = None) -> None:
        self.config = config
        self.mode = config.mode
        self.viewer_url: str | None = None
        self.grpc_url: str | None = None
        self.messages: list[str] = []
        self.recording = rr.RecordingStream(
            config.app_id, recording_id=config.recording_id or uuid.uuid4().hex)
        self._streaming = False  # a gRPC sink that should outlive close()
        sinks: list = []
        if config.rrd_path is not None:
            sinks.append(_file_sink(config.rrd_path))
        if self.mode == "spawn":
            sinks += self._spawn()
        if self.mode == "serve":
            sinks += self._serve()
        if sinks:
            self.recording.set_sinks(*sinks, default_blueprint=blueprint)
        if blueprint is not None and self.mode != "none":
            self.recording.send_blueprint(blueprint)

    def _say(self, message: str) -> None:
        self.messages.append(message)
        if self.config.announce:
            print(f"[stream4d viewer] {message}", file=sys.stderr, flush=True)

    def _spawn(self) -> list:
        problem = native_viewer_problem()
        if problem is None:
            port = self.config.spawn_port
            problem = start_native_viewer(port)
            if problem is None:
                self.grpc_url = f"rerun+http://{LOOPBACK}:{port}/proxy"
                self._say(f"native rerun viewer on {self.grpc_url}")
                return [rr.GrpcSink(self.grpc_url)]
        self._say(f"cannot open a native rerun viewer: {problem}; serving the web viewer instead")
        self.mode = "serve"
        return []

    def _serve(self) -> list:
        port = self.config.grpc_port or free_port()
        sink = rr.GrpcServerSink(LOOPBACK, port, server_memory_limit=self.config.server_memory_limit)
        self._grpc_port = port
        self.grpc_url = sink.uri
        self.viewer_url = WebViewerServer.shared(self.config.web_port, self.grpc_url).url_for(self.grpc_url)
        self._streaming = True
        self._say(f"live viewer: {self.viewer_url}")
        return [sink]

    def _flush(self) -> None:
        try:
            self.recording.flush()
        except Exception as exc:  # e.g. a native viewer that was closed: the .rrd must still end
            self._say(f"flushing the recording failed: {exc}")

    def finish(self) -> None:
        """Flush and finalise the .rrd; a served gRPC server keeps serving until ``shutdown()``
        (unless ``config.serve_after_close`` is False)."""
        self._flush()
        if self._streaming and self.config.serve_after_close:
            # Drops only file-like sinks (writing the .rrd footer); streaming ones stay live.
            rerun_bindings.finalize_deferred_sinks(recording=self.recording.to_native())
        else:
            self._disconnect()

    def shutdown(self) -> None:
        """Finish and stop every sink, including the gRPC server (live viewers go quiet)."""
        self._flush()
        self._disconnect()
        self._streaming = False

    def _disconnect(self) -> None:
        """Stop every sink; a served gRPC server stops listening asynchronously, so wait (up to
        ``SERVER_STOP_S``) until its port refuses connections: after ``finish``/``shutdown`` it is gone."""
        self.recording.disconnect()
        port = getattr(self, "_grpc_port", None)
        if port is None:
            return
        deadline = time.monotonic() + SERVER_STOP_S
        while _accepts(port):
            if time.monotonic() > deadline:
                self._say(f"the viewer's gRPC server on port {port} still listens {SERVER_STOP_S:.0f} s after it was stopped")
                return
            time.sleep(0.02)
        self._grpc_port = None


def serve_recording(rrd_path: Path | str, config: VizConfig | None = None) -> RerunSession:
    """Serve a saved ``.rrd`` (e.g. of a finished run) to the web viewer; see ``session.viewer_url``.

    The chunks of the file's first recording are replayed into a fresh served session
    with our blueprint; call ``session.shutdown()`` to stop serving.
    """
    path = Path(rrd_path)
    if not path.is_file():
        raise FileNotFoundError(f"rerun recording {path} does not exist")
    config = replace(config or VizConfig(), mode="serve", rrd_path=None)
    session = RerunSession(config, build_blueprint(config))
    session.recording.send_chunks(rr.chunk.RrdReader(path).stream())
    session.recording.flush()
    return session
