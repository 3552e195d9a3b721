"""Where a job's input, outputs and control files live, as seen from the node that runs it.

Jobs run on the server (local runner) or on any node of a Ray cluster. Every node must
reach the same session files: ``SharedDirectory`` (the default) is the server's data
directory mounted at the same path on every node (NFS, a Kubernetes ReadWriteMany
volume, or one machine). An object store would be another ``JobStorage``: download the
input in ``input_path``, upload the outputs in ``publish``, and keep the small control
files (stop flag, attempts, progress) in the store too.

Control files sit in the session's directory, next to ``out/`` (never inside it, so the
result listing does not change): ``job-stop`` (the server asks the job to stop),
``job-attempts`` (one JSON line per attempt: node, pid, its raylet's pid) and
``job-progress.json`` (the last ``StreamStats``, for the server's progress events).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

STOP_NAME = "job-stop"
ATTEMPTS_NAME = "job-attempts"
PROGRESS_NAME = "job-progress.json"


class JobStorage(Protocol):
    """A job's files, keyed by its output directory (``ReconstructionJob.out_dir``)."""

    def input_path(self, source: str) -> str:
        """A path (or URL) the running node can open for the job's input."""
        ...

    def publish(self, out_dir: str) -> None:
        """The job wrote its outputs in ``out_dir``: make them reachable by the server."""
        ...

    def reset(self, out_dir: str) -> None:
        """Clear the control files of a previous run (before submitting a job)."""
        ...

    def request_stop(self, out_dir: str) -> None: ...

    def stop_requested(self, out_dir: str) -> bool: ...

    def record_attempt(self, out_dir: str, info: dict[str, Any]) -> int:
        """Append one attempt's ``info``; returns how many attempts were recorded (this one included)."""
        ...

    def attempts(self, out_dir: str) -> list[dict[str, Any]]: ...

    def write_progress(self, out_dir: str, progress: dict[str, Any]) -> None: ...

    def read_progress(self, out_dir: str) -> dict[str, Any] | None: ...


class SharedDirectory:
    """Session files on a filesystem every node mounts at the same path."""

    @staticmethod
    def _control(out_dir: str, name: str) -> Path:
        return Path(out_dir).parent / name

    def input_path(self, source: str) -> str:
        return source

    def publish(self, out_dir: str) -> None:
        """Flush the outputs to the shared filesystem before the server reads them (NFS closes-to-open)."""
        for path in Path(out_dir).iterdir():
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())

    def reset(self, out_dir: str) -> None:
        for name in (STOP_NAME, ATTEMPTS_NAME, PROGRESS_NAME):
            self._control(out_dir, name).unlink(missing_ok=True)

    def request_stop(self, out_dir: str) -> None:
        self._control(out_dir, STOP_NAME).touch()

    def stop_requested(self, out_dir: str) -> bool:
        return self._control(out_dir, STOP_NAME).exists()

    def record_attempt(self, out_dir: str, info: dict[str, Any]) -> int:
        path = self._control(out_dir, ATTEMPTS_NAME)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**info, "time": time.time()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return len(self.attempts(out_dir))

    def attempts(self, out_dir: str) -> list[dict[str, Any]]:
        path = self._control(out_dir, ATTEMPTS_NAME)
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip().endswith("}")]  # a torn last line is skipped

    def write_progress(self, out_dir: str, progress: dict[str, Any]) -> None:
        path = self._control(out_dir, PROGRESS_NAME)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress), encoding="utf-8")
        os.replace(tmp, path)  # readers never see half a file

    def read_progress(self, out_dir: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._control(out_dir, PROGRESS_NAME).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
