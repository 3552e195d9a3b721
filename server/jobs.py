"""Job runner: where reconstructions run, behind one small interface.

``JobRunner`` is all the service uses (submit, status, cancel, results). The
local implementation is a thread pool in the server process; running jobs on
a distributed engine later means another ``JobRunner``, with the same
picklable job specs, not a change to the service.

Cancellation is cooperative: every job gets a ``threading.Event`` that the
executor must watch (``stream4d.pipeline.reconstruct`` takes it as ``stop``).
A job still in the queue is cancelled without ever running.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Generic, Protocol, TypeVar

Spec = TypeVar("Spec")
Result = TypeVar("Result")


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: JobState
    error: str | None  # "ExceptionType: message" when FAILED
    submitted_at: float
    started_at: float | None
    finished_at: float | None


class UnknownJobError(KeyError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")


class JobFailedError(RuntimeError):
    """``results`` of a job that raised, or was cancelled."""


class JobRunner(Protocol):
    """What the service needs from wherever jobs run."""

    def submit(self, job_id: str, spec: Any) -> None:
        """Queue ``spec`` under ``job_id`` (unique); returns at once."""
        ...

    def status(self, job_id: str) -> JobStatus: ...

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop. True if it was queued or running, False if already final."""
        ...

    def results(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job and return the executor's return value.

        Raises ``JobFailedError`` if it failed or was cancelled, ``TimeoutError`` on timeout.
        """
        ...

    def shutdown(self, wait: bool = True) -> None: ...


@dataclass
class _Job:
    spec: Any
    stop: threading.Event
    future: Future
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    error_trace: str | None = None
    cancelled: bool = False


class LocalJobRunner(Generic[Spec, Result]):
    """A bounded thread pool running ``execute(spec, stop)`` for each job.

    ``workers`` jobs run at once; the rest wait in FIFO order. Threads (not
    processes) because live sessions feed frames to their job through an
    in-process queue; the heavy lifting (torch, OpenCV, numpy) releases the GIL.
    """

    def __init__(self, execute: Callable[[Spec, threading.Event], Result], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"LocalJobRunner needs workers >= 1, got {workers}")
        self.workers = workers
        self._execute = execute
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stream4d-job")
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str, spec: Spec) -> None:
        with self._lock:
            if job_id in self._jobs and not self._state(self._jobs[job_id]).is_final:
                raise ValueError(f"job {job_id!r} is already queued or running")
            stop = threading.Event()
            # Register before submitting so _run always finds its job.
            job = _Job(spec=spec, stop=stop, future=Future(), submitted_at=time.time())
            self._jobs[job_id] = job
            job.future = self._pool.submit(self._run, job_id, job)

    def _run(self, job_id: str, job: _Job) -> Result:
        job.started_at = time.time()
        try:
            return self._execute(job.spec, job.stop)
        except BaseException as exc:
            job.error = f"{type(exc).__name__}: {exc}"
            job.error_trace = traceback.format_exc()
            raise
        finally:
            job.finished_at = time.time()

    def _get(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    @staticmethod
    def _state(job: _Job) -> JobState:
        fut = job.future
        if fut.cancelled():
            return JobState.CANCELLED
        if not fut.done():
            return JobState.RUNNING if job.started_at is not None else JobState.QUEUED
        if fut.exception() is not None:
            return JobState.FAILED
        return JobState.CANCELLED if job.cancelled else JobState.SUCCEEDED

    def status(self, job_id: str) -> JobStatus:
        job = self._get(job_id)
        return JobStatus(job_id, self._state(job), job.error, job.submitted_at, job.started_at, job.finished_at)

    def cancel(self, job_id: str) -> bool:
        job = self._get(job_id)
        if self._state(job).is_final:
            return False
        job.cancelled = True
        job.stop.set()
        job.future.cancel()  # only succeeds while still queued
        return True

    def results(self, job_id: str, timeout: float | None = None) -> Result:
        job = self._get(job_id)
        try:
            value = job.future.result(timeout=timeout)
        except FutureTimeout as exc:
            raise TimeoutError(f"job {job_id!r} still running after {timeout} s") from exc
        except CancelledError as exc:
            raise JobFailedError(f"job {job_id!r} was cancelled before it started") from exc
        except Exception as exc:
            raise JobFailedError(f"job {job_id!r} failed: {job.error}") from exc
        if job.cancelled:
            raise JobFailedError(f"job {job_id!r} was cancelled")
        return value

    def forget(self, job_id: str) -> None:
        """Drop a final job's bookkeeping (the service calls it when a session is deleted)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and self._state(job).is_final:
                del self._jobs[job_id]

    def active(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return sum(not self._state(j).is_final for j in self._jobs.values())

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting jobs; ask running ones to stop; drop queued ones."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
