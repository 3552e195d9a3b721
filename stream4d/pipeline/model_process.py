"""A live run's window model in a process of its own.

In one process the tracking thread and the window model share the GIL: between its OpenCV calls
the tracker waits for a model thread to hand the GIL back, and a niced model thread that holds it
is the last to get a core (docs/benchmarks.md, "The window model in a process of its own"). Here
the model is built and run in a child process, which leaves the parent's GIL to tracking, and
which is niced as a whole.

The child is ``python -m stream4d.pipeline.model_process FD`` (not ``multiprocessing``, which would
import the caller's ``__main__`` module again), talking over a socket pair with
``multiprocessing.connection.Connection`` (pickles). It builds the model from the run's
``ReconstructConfig``. A frame's image crosses once, with ``prepare``; ``predict`` sends the
window's frames with the images the child still holds left out. Linux and macOS only (file
descriptors are passed to the child).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Sequence


class ModelProcessError(RuntimeError):
    """The window model's process could not be reached: it did not start or it ended."""


class ModelProcess:
    """``WindowModel`` (with ``prepare`` and ``intrinsics_report``) served by a child process.

    config: the run's ``ReconstructConfig``; the child calls ``stages.build_model(config)``.
    nice: how much nicer than the caller the child runs (Linux/macOS priorities; 0: the same).
    idle: the child runs only on cores nothing else wants (``SCHED_IDLE``) until ``input_ended``:
        while a live stream arrives, tracking never waits for a core the model holds.
    images_held: frames whose images the child keeps after ``prepare`` (a window's worth and the
        read-ahead, so that a window's images never cross twice); the parent mirrors the set.
    A dead child is started again at the next ``predict``, without the state the old one had (the
    stream's focal estimate, cached features): that window and the ones after it are still made.
    """

    def __init__(self, config: Any, nice: int = 0, idle: bool = False, images_held: int = 80,
                 name: str = "default") -> None:
        self.name = name
        self._config, self._nice, self._idle, self._images_held = config, nice, idle, images_held
        self._send_lock = threading.Lock()  # prepare (reader threads) and calls (the mapper) send
        self._call_lock = threading.Lock()  # one call (send + reply) at a time
        self._held: OrderedDict[int, None] = OrderedDict()  # frame indices whose images the child has
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.restarts = 0
        self._closed = False
        self._start()

    # ---- the WindowModel protocol ----

    def prepare(self, frame: Any) -> None:
        """Send ``frame`` (with its image) for the child's ``model.prepare``; does not wait for it.
        A child that is gone is not an error here: the next ``predict`` says so."""
        with self._send_lock:
            if self._post(("prepare", frame)):
                self._hold(frame.index)

    def predict(self, frames: Sequence[Any]) -> Any:
        if self._closed:
            raise ModelProcessError("the window model's process was closed")
        if self._proc is None or self._proc.poll() is not None:
            self._restart()
        import numpy as np  # not at the top: the child imports this module before it lowers its priority

        placeholder = np.zeros((1, 1, 3), np.uint8)  # a valid image for a frame sent without its own

        def message() -> tuple:  # built under the send lock: no prepare evicts an image meanwhile
            held = [f.index in self._held for f in frames]
            return "predict", [replace(f, image=placeholder) if h else f for f, h in zip(frames, held)], held
        return self._call(message)

    def reset(self) -> None:
        """Forget the stream (does not wait: an error is said by the next call)."""
        with self._send_lock:
            self._post(("reset",))
            self._held.clear()

    def input_ended(self) -> None:
        """No more frames will be tracked: the model gets its share of the CPU (``nice``) back."""
        with self._send_lock:
            self._idle = False  # a child started again from now on starts at its nice value
            self._post(("idle", False))

    def intrinsics_report(self) -> dict | None:
        """The model's stream-wide self-calibration; None when the process that held it is gone."""
        try:
            return self._call(lambda: ("intrinsics_report",))
        except ModelProcessError:
            return None

    def close(self) -> None:
        """End the child (waits up to 5 s, then kills it)."""
        self._closed = True
        self._end()

    def _end(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            with self._send_lock, contextlib.suppress(OSError):  # a child already gone needs no word
                conn.send(("close",))
            conn.close()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> ModelProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the pipe ----

    def _start(self) -> None:
        import stream4d

        parent, child = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(stream4d.__file__).resolve().parents[1])  # the child imports this checkout's code
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with child:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "stream4d.pipeline.model_process", str(child.fileno()), str(self._nice),
                 "idle" if self._idle else "normal"],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env)
        self._conn = Connection(parent.detach())
        self._held.clear()
        self._send(("start", self._config, self._images_held))

    def _restart(self) -> None:
        self._end()
        self.restarts += 1
        self._start()

    def _hold(self, index: int) -> None:
        self._held[index] = None
        self._held.move_to_end(index)
        while len(self._held) > self._images_held:
            self._held.popitem(last=False)

    def _send(self, message: tuple) -> None:
        if self._conn is None:
            raise ModelProcessError("the window model's process was closed")
        try:
            self._conn.send(message)
        except OSError as exc:
            raise ModelProcessError(f"the window model's process is gone ({self._exit()}): {exc}") from exc

    def _post(self, message: tuple) -> bool:
        """Send a message that has no reply (under the send lock); False when the child is gone,
        which the next call (``predict``) says."""
        try:
            self._send(message)
        except ModelProcessError:
            return False
        return True

    def _call(self, message: Callable[[], tuple]) -> Any:
        with self._call_lock:
            with self._send_lock:
                self._send(message())
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise ModelProcessError(f"the window model's process ended ({self._exit()})") from exc
        if status == "error":
            raise value
        return value

    def _exit(self) -> str:
        code = None if self._proc is None else self._proc.poll()
        return "still running" if code is None else f"exit code {code}"


def _set_priority(nice: int, idle: bool) -> None:
    """Every thread of this process ``nice`` nicer than it started (Linux keeps a nice value per
    thread; threads started later inherit it from the thread that starts them) and, with ``idle``,
    under ``SCHED_IDLE``: it then runs only on a core no other thread wants, and a thread that
    wakes up takes the core at once. Where ``SCHED_IDLE`` is missing (macOS), nice 19 stands in."""
    if not hasattr(os, "setpriority"):
        return
    tasks = Path("/proc/self/task")
    tids = [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]
    global _started_at
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            if _started_at is None:
                _started_at = os.getpriority(os.PRIO_PROCESS, tid)
            if hasattr(os, "SCHED_IDLE"):
                os.setpriority(os.PRIO_PROCESS, tid, min(19, _started_at + nice))
                os.sched_setscheduler(tid, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))
            else:
                os.setpriority(os.PRIO_PROCESS, tid, 19 if idle else min(19, _started_at + nice))


_started_at: int | None = None  # this process's nice value when it started


def _serve(conn: Connection, nice: int) -> None:
    """The child: build the model, then serve messages until ``close`` or the parent is gone.

    ``prepare`` runs on two threads as it arrives (as the read-ahead ran it in one process); calls
    run one at a time, in order, on a thread of their own, so the socket is always read."""
    from concurrent.futures import ThreadPoolExecutor

    kind, config, images_held = conn.recv()
    assert kind == "start", kind
    from stream4d.pipeline.stages import build_model

    model = build_model(config)
    prepare = getattr(model, "prepare", None)
    images: OrderedDict[int, Any] = OrderedDict()
    failed: list[BaseException] = []  # the first prepare that failed, said at the next call
    reply_lock = threading.Lock()

    def reply(status: str, value: Any) -> None:
        with reply_lock:
            try:
                conn.send((status, value))
            except Exception as exc:  # noqa: BLE001 - e.g. an error that does not pickle
                conn.send(("error", RuntimeError(f"{type(value).__name__}: {value} ({exc})")))

    def prepared(frame) -> None:
        try:
            prepare(frame)
        except Exception as exc:  # noqa: BLE001 - handed to the parent with the next call
            failed.append(exc)

    def call(message: tuple) -> None:
        if message[0] == "reset":  # no reply: an error is said by the next call
            try:
                model.reset()
            except Exception as exc:  # noqa: BLE001
                failed.append(exc)
            return
        try:
            if failed:
                raise failed.pop(0)
            if message[0] == "predict":
                value = model.predict(message[1])
            else:
                report = getattr(model, message[0], None)
                value = report() if callable(report) else None
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            reply("error", exc)
        else:
            reply("ok", value)

    with ThreadPoolExecutor(2, thread_name_prefix="model-prepare") as preparing, \
            ThreadPoolExecutor(1, thread_name_prefix="model-call") as calls:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "close":
                return
            if message[0] == "idle":
                _set_priority(nice, message[1])
                continue
            if message[0] == "prepare":
                frame = message[1]
                images[frame.index] = frame.image
                images.move_to_end(frame.index)
                while len(images) > images_held:
                    images.popitem(last=False)
                if prepare is not None:
                    preparing.submit(prepared, frame)
                continue
            if message[0] == "predict":
                frames, held = message[1], message[2]
                missing = [f.index for f, h in zip(frames, held) if h and f.index not in images]
                if missing:
                    reply("error", ModelProcessError(f"frames {missing} were not kept by the model's process"))
                    continue
                message = ("predict", [replace(f, image=images[f.index]) if h else f for f, h in zip(frames, held)])
            if message[0] == "reset":
                images.clear()
            calls.submit(call, message)


if __name__ == "__main__":
    _set_priority(int(sys.argv[2]), sys.argv[3] == "idle")  # before numpy and OpenCV start their threads
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
