"""One long upload on many nodes: its overlapping chunks (and the anchor run) as Ray tasks, then
one join task (``stream4d.pipeline.chunks`` plans the parts, runs one, and joins them).

``run_chunked_job`` is what ``RayJobRunner.run_remote`` does for a session with ``chunks``:
each part is a Ray task asking for the runner's ``num_cpus`` / ``num_gpus``, spread over the
nodes (``SPREAD``: parts go to different nodes while nodes have room; a task whose node dies
is retried elsewhere), writing into ``<session>/chunks/<part>/out`` on the shared storage with
its control files (attempts, progress) next to that folder and watching the session's stop
file. When every part has ended, one more task joins them into ``<session>/out``: the same
result files as a normal upload (trajectory, points, splats, recording.rrd, run.json saying it
was chunked). The server's dispatcher thread follows the parts: their progress summed into the
session's, a part's retry counted as one more attempt of the job.

``reconstruct_chunked`` runs the same parts outside the service (``bench/bench_chunks.py``).
Ray must be initialised for both.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from server.storage import JobStorage, SharedDirectory

_SUMMED = ("frames_received", "frames_processed", "frames_posed", "frames_skipped", "windows")


def run_part_task(source: str, part: Any, out_dir: str, config: dict[str, Any], stop_dir: str | None,
                  storage: JobStorage, num_threads: int) -> dict[str, Any]:
    """The Ray task of one part: reconstruct it into ``out_dir``; its ``part_result`` (seconds, node,
    attempt, counters). ``stop_dir``: the session's output folder whose stop file ends it early."""
    import ray

    from server.ray_runner import _FileProgress

    node = ray.get_runtime_context().get_node_id()
    attempt = storage.record_attempt(out_dir, {"node": node, "pid": os.getpid(), "raylet_pid": os.getppid(),
                                               "part": part.name})
    import torch  # after the attempt is recorded: a cold worker's imports are part of the run

    from stream4d.pipeline import ReconstructConfig
    from stream4d.pipeline.chunks import part_result, run_part

    out = Path(out_dir)
    if attempt > 1 and out.exists():  # a lost node's partial files are superseded
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(num_threads)
    stop, done = threading.Event(), threading.Event()

    def watch_stop() -> None:
        while stop_dir is not None and not done.wait(0.2):
            if storage.stop_requested(stop_dir):
                stop.set()
                return

    threading.Thread(target=watch_stop, name="stream4d-stop-watch", daemon=True).start()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        summary = run_part(storage.input_path(source), part, out, ReconstructConfig.from_dict(config), stop,
                           observers=[_FileProgress(storage, out_dir)])
    finally:
        done.set()
        storage.publish(out_dir)
    return part_result(part, summary, time.perf_counter() - started, time.process_time() - cpu, node, attempt)


def join_task(source: str, out_dir: str, work_dir: str, parts: list[Any], results: list[dict[str, Any]],
              config: dict[str, Any], chunks_s: float, storage: JobStorage, stopped: bool = False) -> Any:
    """The Ray task joining the parts' folders into ``out_dir``; the joined run's ``StreamStats``."""
    from stream4d.pipeline import ReconstructConfig
    from stream4d.pipeline.chunks import finish_chunked

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        run = finish_chunked(storage.input_path(source), out_dir, work_dir, parts, results,
                             ReconstructConfig.from_dict(config), chunks_s, "ray", stopped=stopped)
    finally:
        storage.publish(out_dir)
    return run.stats


class _PartsFollower:
    """What the part tasks report through the shared storage, as the job's: progress of the chunks
    summed, and the job's attempts (1 + every retry of a part)."""

    def __init__(self, storage: JobStorage, part_dirs: dict[str, str], on_progress: Callable[[dict], None],
                 on_attempt: Callable[[int, dict], None]) -> None:
        self._storage, self._dirs = storage, part_dirs
        self._on_progress, self._on_attempt = on_progress, on_attempt
        self._progress: dict | None = None
        self.attempts = 0

    def poll(self) -> None:
        seen = {name: self._storage.attempts(d) for name, d in self._dirs.items()}
        started = [a for a in seen.values() if a]
        total = (1 + sum(len(a) - 1 for a in started)) if started else 0
        newest = max((a[-1] for a in started), key=lambda info: info.get("time", 0.0), default={})
        for n in range(self.attempts + 1, total + 1):
            self._on_attempt(n, newest)
        self.attempts = max(self.attempts, total)
        progress: dict[str, Any] = {}
        for name, d in self._dirs.items():
            if name == "anchor":
                continue
            part = self._storage.read_progress(d) or {}
            for key in _SUMMED:
                progress[key] = progress.get(key, 0) + int(part.get(key, 0))
        if any(progress.values()) and progress != self._progress:
            self._progress = dict(progress)
            self._on_progress(progress)


def _raise_for(ref: Any, attempts: int, max_retries: int, stop_grace: float) -> Any:
    """``ray.get(ref)`` with the runner's errors: the pipeline's own error, or why Ray lost the task."""
    import ray
    from ray.exceptions import RayTaskError, TaskCancelledError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause
        raise (cause if isinstance(cause, Exception) else RuntimeError(str(exc))) from None
    except TaskCancelledError:
        raise RuntimeError(f"the job did not stop within {stop_grace} s and was cancelled") from None
    except ray.exceptions.RayError as exc:
        raise RuntimeError(
            f"Ray lost a part of the chunked job on each of its attempts ({attempts} attempts of the job in "
            f"all; workers or nodes died; --ray-max-retries {max_retries}): {type(exc).__name__}") from None


def run_chunked_job(options: Any, storage: JobStorage, job: Any, stop: threading.Event,
                    on_progress: Callable[[dict], None], on_attempt: Callable[[int, dict], None]) -> Any:
    """A chunked upload (``job.chunks``) on the cluster (see the module doc); blocks until it ends
    and returns the joined run's ``StreamStats``. ``options``: the runner's ``RayOptions``.

    A stop is passed to every part through the session's stop file; each writes what it has,
    and the chunks that posed frames are joined by their overlaps (the anchor run was cut short
    too), those that cannot be placed left out. A part that raises fails the job (the others
    are cancelled); one Ray lost on every retry fails it saying so.
    """
    import ray

    from stream4d.pipeline.chunks import part_dir, plan_parts

    parts = plan_parts(**job.chunks)
    work = Path(job.work_dir)
    if work.exists():  # a resumed job starts over
        shutil.rmtree(work)
    dirs = {p.name: str(part_dir(work, p)) for p in parts}
    for d in dirs.values():
        Path(d).mkdir(parents=True)
    storage.reset(job.out_dir)
    threads = max(1, int(options.num_cpus))
    task = ray.remote(run_part_task)
    started = time.perf_counter()
    refs = [task.options(num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=options.max_retries,
                         scheduling_strategy="SPREAD", name=f"stream4d-chunk-{job.session_id[:8]}-{p.name}").remote(
        job.source, p, dirs[p.name], job.config, job.out_dir, storage, threads) for p in parts]
    follower = _PartsFollower(storage, dirs, on_progress, on_attempt)
    results: dict[int, dict] = {}
    stop_sent: float | None = None
    cancelled = False
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
            for ref in ready:
                follower.poll()
                results[refs.index(ref)] = _raise_for(ref, follower.attempts, options.max_retries, options.stop_grace)
            follower.poll()
            if stop.is_set() and stop_sent is None:
                storage.request_stop(job.out_dir)
                stop_sent = time.monotonic()
            if stop_sent is not None and not cancelled and time.monotonic() - stop_sent > options.stop_grace:
                for ref in pending:
                    ray.cancel(ref)
                cancelled = True
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    chunks_s = time.perf_counter() - started
    stopped = stop_sent is not None  # the parts were cut short: the anchor too, so the chunks are chained
    kept = [k for k in sorted(results) if (parts[k].is_anchor and not stopped)
            or (not parts[k].is_anchor and results[k]["stats"]["frames_posed"] > 0)]
    if not any(not parts[k].is_anchor for k in kept):
        raise RuntimeError("no chunk posed a frame (stopped before the chunks got far enough?): nothing to join")
    join = ray.remote(join_task).options(num_cpus=options.num_cpus, num_gpus=options.num_gpus,
                                         max_retries=options.max_retries,
                                         name=f"stream4d-join-{job.session_id[:8]}")
    ref = join.remote(job.source, job.out_dir, str(work), [parts[k] for k in kept], [results[k] for k in kept],
                      job.config, chunks_s, storage, stopped)
    ray.wait([ref])
    return _raise_for(ref, follower.attempts, options.max_retries, options.stop_grace)


@dataclass(frozen=True)
class ChunkedTiming:
    """What a chunked run took outside the service: wall seconds of the parts and of the join, each
    part's seconds, CPU seconds and node (the anchor first when there is one), the joined run."""

    chunks_s: float
    join_s: float
    per_chunk_s: list[float]
    per_chunk_cpu_s: list[float]  # CPU seconds of each task's process (all its threads)
    nodes: list[str]
    report: dict[str, Any]


def reconstruct_chunked(path: str | Path, out_dir: str | Path, config: Any, frame_count: int, chunks: int,
                        overlap: int, anchor_stride: int | None = 10, num_cpus: float = 1.0, num_gpus: float = 0.0,
                        max_retries: int = 3, method: str = "pose_graph") -> ChunkedTiming:
    """The video at ``path`` (``frame_count`` frames) in ``chunks`` Ray tasks (plus the anchor run with
    ``anchor_stride``), joined here into ``out_dir`` (parts in ``out_dir/chunks``)."""
    from dataclasses import asdict

    import ray

    from stream4d.pipeline.chunks import check_chunkable, finish_chunked, part_dir, plan_parts

    check_chunkable(config.ingest)
    parts = plan_parts(frame_count, chunks, overlap, anchor_stride)
    work = Path(out_dir) / "chunks"
    storage = SharedDirectory()
    task = ray.remote(run_part_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                                             scheduling_strategy="SPREAD")
    started = time.perf_counter()
    for p in parts:
        part_dir(work, p).mkdir(parents=True, exist_ok=True)
    refs = [task.remote(str(path), p, str(part_dir(work, p)), config.to_dict(), None, storage, max(1, int(num_cpus)))
            for p in parts]
    results = ray.get(refs)
    chunks_s = time.perf_counter() - started
    run = finish_chunked(path, out_dir, work, parts, results, config, chunks_s, "ray", method)
    return ChunkedTiming(chunks_s, run.join_s, [r["seconds"] for r in results], [r["cpu_seconds"] for r in results],
                         [r["node"] for r in results], asdict(run.report))
