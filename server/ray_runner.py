"""Jobs on a Ray cluster: each upload or pull is a Ray task on whichever node has room; each
live session an actor (``server.ray_live``).

``RayJobRunner`` keeps the ``JobRunner`` contract of ``LocalJobRunner`` (it is one: the
same bounded pool of dispatcher threads in the server, the same queue, stop events and
bookkeeping), but a job's reconstruction runs in a Ray task (``run_on_node``) that asks
for ``num_cpus`` / ``num_gpus`` per job. The server's dispatcher thread keeps the
session's state in the store, follows the task's progress and attempts through the
shared ``JobStorage``, and forwards a stop as a stop file (cooperative: the pipeline
writes what it reconstructed) and, if the task ignores it for ``stop_grace`` seconds,
as ``ray.cancel``.

Node failures: Ray re-runs a task whose worker or node died (``max_retries``), on any
node alive; each run records itself in ``job-attempts``, the server counts them in the
session's ``attempts``. When retries are spent the session fails with the reason.
Errors the pipeline raises are not retried (they would fail again the same way).

Ray is imported only when this runner is built: the local runner needs no Ray.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from server.jobs import LocalJobRunner
from server.ray_live import LiveSessionActor, RayLiveSource
from server.storage import JobStorage, SharedDirectory
from stream4d.contracts import StreamObserver

INSTALL_HINT = "the ray runner needs Ray: pip install 'stream4d[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How jobs run on Ray (from ``Settings``).

    address:     cluster to join ("auto", "ray://host:10001" or "host:6379"); None starts a
                 single-node Ray inside the server process.
    num_cpus:    CPUs each job reserves on its node (also its torch thread count).
    num_gpus:    GPUs each job reserves (fractions allowed); 0 runs on CPU.
    max_retries: re-runs of a job whose worker or node died.
    stop_grace:  seconds a stopped job has to end on its own before ``ray.cancel``.
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3
    stop_grace: float = 60.0


class _FileProgress(StreamObserver):  # the protocol's other methods do nothing
    """A pipeline observer on the worker node: each window's stats into the shared storage."""

    def __init__(self, storage: JobStorage, out_dir: str) -> None:
        self._storage = storage
        self._out_dir = out_dir

    def on_stats(self, stats: Any) -> None:
        progress = asdict(stats)
        progress["errors"] = list(progress["errors"])[-20:]
        self._storage.write_progress(self._out_dir, progress)



def run_on_node(job: Any, storage: JobStorage, num_threads: int) -> Any:
    """The Ray task: reconstruct ``job`` (a ``server.service.ReconstructionJob``) on this node.

    Returns the run's ``StreamStats``; the outputs are in ``job.out_dir`` on the shared storage.
    """
    import ray

    node = ray.get_runtime_context().get_node_id()
    attempt = storage.record_attempt(job.out_dir, {"node": node, "pid": os.getpid(), "raylet_pid": os.getppid()})
    import torch  # after the attempt is recorded: a cold worker's imports are part of the run, not of Ray

    from stream4d.pipeline import ReconstructConfig, reconstruct

    out_dir = Path(job.out_dir)
    if attempt > 1 and out_dir.exists():  # a lost node's partial files are superseded
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(num_threads)
    stop, done = threading.Event(), threading.Event()

    def watch_stop() -> None:
        while not done.wait(0.2):
            if storage.stop_requested(job.out_dir):
                stop.set()
                return

    threading.Thread(target=watch_stop, name="stream4d-stop-watch", daemon=True).start()
    try:
        summary = reconstruct(storage.input_path(job.source), out_dir, ReconstructConfig.from_dict(job.config),
                              observers=[_FileProgress(storage, job.out_dir)], stop=stop, progress=False)
    finally:
        done.set()
        storage.publish(job.out_dir)
    return summary.stats


class RayJobRunner(LocalJobRunner):
    """``LocalJobRunner`` whose jobs hand their reconstruction to Ray (see the module doc).

    ``workers`` bounds the jobs submitted to Ray at once (Ray queues them further by the
    resources each asks for).
    """

    def __init__(self, execute: Callable, workers: int, options: RayOptions,
                 storage: JobStorage | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(INSTALL_HINT) from exc
        if options.num_cpus <= 0 or options.num_gpus < 0 or options.max_retries < 0:
            raise ValueError(f"bad Ray options: {options}")
        super().__init__(execute, workers)
        self.options = options
        self.storage: JobStorage = storage or SharedDirectory()
        if not ray.is_initialized():
            # The server's own log carries what matters; task output stays in the nodes' Ray logs.
            ray.init(address=options.address, namespace="stream4d", log_to_driver=False)
        self._task = ray.remote(run_on_node)
        self._live_actor = ray.remote(LiveSessionActor)

    def live_source(self, job: Any, capacity: int, idle_timeout: float | None,
                    max_bytes: int | None) -> RayLiveSource:
        """A live session's frame sink: an actor on a node, created with the first frame (server.ray_live)."""
        from stream4d.pipeline import ReconstructConfig

        opts = self.options
        name = f"live-{job.session_id[:8]}"

        def make_actor() -> Any:
            # No restarts: the stream's state (model, aligner, cache) died with the node.
            return self._live_actor.options(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_restarts=0,
                                            max_task_retries=0).remote(
                name, job.config, capacity, idle_timeout, max_bytes, max(1, int(opts.num_cpus)))

        return RayLiveSource(name, make_actor, ReconstructConfig.from_dict(job.config).ingest, self.storage,
                             start_timeout=idle_timeout or 30.0)

    def run_remote(self, job: Any, stop: threading.Event, on_progress: Callable[[dict], None],
                   on_attempt: Callable[[int, dict], None]) -> Any:
        """Run ``job``'s reconstruction as a Ray task; blocks until it ends. Returns its ``StreamStats``.

        ``on_progress(stats_dict)`` is called for new progress, ``on_attempt(n, info)`` for each
        attempt the task starts (n counts from 1). Raises the pipeline's own error, or a
        ``RuntimeError`` when Ray lost the job on every attempt or it had to be cancelled.
        """
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError

        if getattr(job, "chunks", None) is not None:  # a chunked upload: its parts as tasks (server.ray_chunks)
            from server.ray_chunks import run_chunked_job

            return run_chunked_job(self.options, self.storage, job, stop, on_progress, on_attempt)
        opts = self.options
        self.storage.reset(job.out_dir)
        ref = self._task.options(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_retries=opts.max_retries,
                                 name=f"stream4d-{job.kind}-{job.session_id[:8]}").remote(
            job, self.storage, max(1, int(opts.num_cpus)))
        follower = _Follower(self.storage, job.out_dir, on_progress, on_attempt)
        stop_sent: float | None = None
        cancelled = False
        while not ray.wait([ref], timeout=0.25)[0]:
            follower.poll()
            if stop.is_set() and stop_sent is None:
                self.storage.request_stop(job.out_dir)
                stop_sent = time.monotonic()
            if stop_sent is not None and not cancelled and time.monotonic() - stop_sent > opts.stop_grace:
                ray.cancel(ref)
                cancelled = True
        try:
            stats = ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause
            raise (cause if isinstance(cause, Exception) else RuntimeError(str(exc))) from None
        except TaskCancelledError:
            raise RuntimeError(f"the job did not stop within {opts.stop_grace} s and was cancelled") from None
        except ray.exceptions.RayError as exc:
            follower.poll()
            raise RuntimeError(
                f"Ray lost the job on each of its {max(1, follower.attempts)} attempts (workers or nodes died; "
                f"--ray-max-retries {opts.max_retries}): {type(exc).__name__}") from None
        finally:
            follower.poll()
        return stats

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait=wait)
        import ray

        if ray.is_initialized():
            ray.shutdown()


class _Follower:
    """What the task reports through the shared storage, passed on once each."""

    def __init__(self, storage: JobStorage, out_dir: str, on_progress: Callable[[dict], None],
                 on_attempt: Callable[[int, dict], None]) -> None:
        self._storage, self._out_dir = storage, out_dir
        self._on_progress, self._on_attempt = on_progress, on_attempt
        self._progress: dict | None = None
        self.attempts = 0

    def poll(self) -> None:
        attempts = self._storage.attempts(self._out_dir)
        for n in range(self.attempts + 1, len(attempts) + 1):
            self._on_attempt(n, attempts[n - 1])
        self.attempts = max(self.attempts, len(attempts))
        progress = self._storage.read_progress(self._out_dir)
        if progress is not None and progress != self._progress:
            self._progress = progress
            self._on_progress(progress)
