"""Live sessions on Ray: one actor per session holds the stream's state on a node of the cluster.

``LiveSessionActor`` (made a Ray actor by ``RayJobRunner``) owns what a live run keeps between
frames: the ``PushSource`` with its drop-oldest buffer (``--live-queue`` frames,
``--live-queue-mb`` bytes), and the pipeline (model, aligner, Gaussian cache) running on it in a
thread of the actor's process. ``RayLiveSource`` is the server's side: the object the WebSocket
handler pushes into, with what the handler and ``LiveFeed`` use of a ``PushSource`` (``push``,
``pending``, ``stats.dropped``, ``close``, ``discard``), so the API and its counters do not change.

Order: the actor is synchronous and single-threaded, so Ray runs the calls of one caller in the
order they were made; each push also carries its sequence number, which the actor checks. Each
push waits for the actor's reply (one round trip to its node), which carries the buffer's drop
and pending counts for the next ack; the frames a slow pipeline cannot take are dropped oldest
first in the actor, as in the server with the local runner. The actor is created with the
first frame (a silent client reserves nothing), which therefore waits for the actor to start;
when no node has room for it within the live idle timeout, the frame is refused and the session
fails, saying so.

A live stream's state cannot move: when the actor's node dies the session fails, saying so
(the client reconnects with a new session). Actors die with the server's Ray driver too.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from recon.ingest.errors import IngestError

POLL_S = 0.25
PUSH_TIMEOUT_S = 60.0  # a placed actor takes a frame in milliseconds; this long means it is wedged


class LiveSessionActor:
    """A live session's stream state and reconstruction, on whichever node Ray placed it."""

    def __init__(self, name: str, config: dict[str, Any], capacity: int, idle_timeout: float | None,
                 max_bytes: int | None, num_threads: int) -> None:
        import torch

        from recon.ingest.push import PushSource
        from stream4d.pipeline import ReconstructConfig

        torch.set_num_threads(num_threads)
        self._config = ReconstructConfig.from_dict(config)
        self._source = PushSource(name=name, capacity=capacity, options=self._config.ingest,
                                  idle_timeout=idle_timeout, max_bytes=max_bytes)
        self._next_seq = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: dict | None = None
        self._stats: Any = None
        self._error: BaseException | None = None
        self._done = False
        self._started = False

    def push(self, seq: int, image: Any, timestamp: float | None) -> tuple[int, int]:
        """Queue frame ``seq`` (they must come in order); returns (dropped, pending) after it."""
        if seq != self._next_seq:
            raise RuntimeError(f"live frame {seq} arrived where {self._next_seq} was due")
        self._next_seq += 1
        self._source.push(image, timestamp)
        return self.counters()

    def counters(self) -> tuple[int, int]:
        return int(self._source.stats.dropped), int(self._source.pending)

    def close(self) -> None:
        """End of stream: the run reconstructs what is queued, then ends."""
        self._source.close()

    def discard(self) -> int:
        """End of stream, the queued frames freed now."""
        return self._source.discard()

    def stop(self) -> None:
        self._stop.set()

    def start(self, out_dir: str, storage: Any) -> dict[str, Any]:
        """Run the reconstruction into ``out_dir`` (prepared by the server) in a thread; returns
        where it runs (also recorded as the job's attempt in ``storage``)."""
        import ray

        if self._started:
            raise RuntimeError("the live run has already started")
        self._started = True
        where = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "raylet_pid": os.getppid()}
        storage.record_attempt(out_dir, where)
        threading.Thread(target=self._run, args=(out_dir,), name="stream4d-live-run", daemon=True).start()
        return where

    def _run(self, out_dir: str) -> None:
        from stream4d.pipeline import reconstruct

        def on_stats(stats: Any) -> None:
            progress = asdict(stats)
            progress["errors"] = list(progress["errors"])[-20:]
            with self._lock:
                self._progress = progress

        try:
            summary = reconstruct(self._source, Path(out_dir), self._config, stop=self._stop, progress=False,
                                  on_stats=on_stats)
            with self._lock:
                self._stats = summary.stats
        except BaseException as exc:  # reported to the server, which fails the session with it
            with self._lock:
                self._error = exc
        finally:
            self._source.discard()
            with self._lock:
                self._done = True

    def status(self) -> dict[str, Any]:
        """Progress so far; once ``done``, the run's ``StreamStats`` or its ``error``."""
        with self._lock:
            return {"done": self._done, "progress": self._progress, "stats": self._stats, "error": self._error}


@dataclass
class _Drops:
    dropped: int = 0  # read as ``source.stats.dropped``, like a PushSource's


class RayLiveSource:
    """The server's handle on a live session's actor (see the module doc).

    ``make_actor()`` creates the actor; it is called with the first frame.
    """

    def __init__(self, name: str, make_actor: Callable[[], Any], options: Any, storage: Any,
                 start_timeout: float = 30.0) -> None:
        self.name = name
        self.start_timeout = start_timeout  # for the actor to be placed and reply to the first frame
        self.options = options  # the run's IngestOptions: frames are shrunk here, before they travel
        self.storage = storage  # the JobStorage the actor records its attempt in
        self.stats = _Drops()
        self._make_actor = make_actor
        self._actor: Any = None
        self._lock = threading.Lock()
        self._seq = 0
        self._pending = 0
        self._closed = False
        self._run_started = False
        self._run_ended = False

    @property
    def pending(self) -> int:
        return self._pending

    def push(self, image: Any, timestamp: float | None = None) -> None:
        """Send one RGB uint8 [H, W, 3] (or grey [H, W]) frame to the actor; blocks for its reply."""
        import ray

        from recon.ingest.push import fit_for_model

        image = fit_for_model(image, self.options.resize, self.name)
        with self._lock:  # submitted under the lock (their order is the frames'), awaited outside it
            if self._closed:
                raise IngestError(self.name, "closed", "push after close()")
            if self._actor is None:
                self._actor = self._make_actor()
            actor = self._actor
            ref = actor.push.remote(self._seq, image, timestamp)
            first = self._seq == 0
            self._seq += 1
        try:
            dropped, pending = ray.get(ref, timeout=self.start_timeout if first else PUSH_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            with self._lock:
                ray.kill(actor)  # frees its place in Ray's queue, or its node
                self._actor, self._closed = None, True
            what = (f"no Ray node had room for this live session's actor within {self.start_timeout:g} s "
                    "(--ray-num-cpus / --ray-num-gpus per session; the cluster's nodes are busy or too small)"
                    if first else f"the live session's actor did not take a frame within {PUSH_TIMEOUT_S:g} s")
            raise IngestError(self.name, "unavailable", what) from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            raise (cause if isinstance(cause, IngestError) else
                   IngestError(self.name, "closed", f"the live session's actor refused the frame: {cause}")) from None
        except ray.exceptions.RayActorError:
            raise IngestError(self.name, "closed", "the live session's node was lost") from None
        self.stats.dropped, self._pending = max(self.stats.dropped, dropped), pending

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._actor is not None:
                self._actor.close.remote()  # after every push: Ray keeps one caller's order

    def discard(self) -> int:
        """Close; free the actor (and its CPUs) unless its run is still going, which then ends soon."""
        import ray

        with self._lock:
            self._closed = True
            if self._actor is None:
                return 0
            if self._run_started and not self._run_ended:
                self._actor.discard.remote()
            else:
                ray.kill(self._actor)
                self._actor = None
            self._pending = 0
            return 0

    def run_remote(self, out_dir: str, stop: threading.Event, on_progress: Callable[[dict], None],
                   on_start: Callable[[dict], None]) -> Any:
        """Start the actor's run into ``out_dir`` and follow it to its end; returns its ``StreamStats``.

        Raises the run's own error, or a ``RuntimeError`` when the actor's node was lost."""
        import ray

        with self._lock:
            actor = self._actor
            if actor is None:
                raise RuntimeError("the live session has no actor (its stream ended before the first frame)")
            self._run_started = True
        self.storage.reset(out_dir)
        try:
            on_start(ray.get(actor.start.remote(out_dir, self.storage)))
            stop_sent, last = False, None
            while True:
                if stop.is_set() and not stop_sent:
                    actor.stop.remote()
                    stop_sent = True
                status = ray.get(actor.status.remote())
                if status["progress"] is not None and status["progress"] != last:
                    last = status["progress"]
                    on_progress(last)
                if status["done"]:
                    break
                time.sleep(POLL_S)
        except ray.exceptions.RayActorError:
            raise RuntimeError("the node running this live session was lost; a live stream's state cannot move "
                               "to another node: start a new session") from None
        finally:
            with self._lock:
                self._run_ended = True
        if status["error"] is not None:
            raise status["error"]
        return status["stats"]
