"""Where a live frame's time goes: the front end's stages per frame, in one process.

The clip is pushed in real time (its own frame rate; each frame JPEG-decoded on the pushing thread,
as the service's WebSocket does) into a ``PushSource`` with the service's queue limits, and
reconstructed with a session's default configuration, as ``stream4d serve`` would. Each front-end
stage (live tracking, the two-view bootstrap, the keyframer, the quality check, holding the frames
between keyframes) is timed around its real method, on whichever thread runs it:

- ``cpu``: the thread's CPU time (``time.thread_time``);
- ``runqueue``: time runnable but waiting for a core (Linux ``/proc/self/task/<tid>/schedstat``);
- ``other``: wall time minus both: asleep, i.e. waiting for the GIL (or, for the tracking thread's
  total, for a full queue ahead of it).

``tracking thread`` is the whole of the thread that takes frames from the source (from each frame
taken to the next one asked for); ``waiting for frames`` is its time in the source's queue. The
queue wait of a frame (arrival to taken by tracking) is the bulk of its latency when the front end
falls behind. ``--profile`` adds a cProfile of the tracking thread. The modules a job imports are
imported first, as ``stream4d serve`` does at startup.

    python bench/bench_live_stages.py CLIP [--profile] [--switch-interval S] [--cv-threads N]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clip_as_jpegs  # noqa: E402

from recon.ingest.push import PushSource
from recon.keyframes import ParallaxKeyframer
from recon.live_bootstrap import TwoViewBootstrap
from recon.live_tracking import MapTracker
from recon.quality import FrameQualityFilter
from server.models import SessionOptions
from server.service import JOB_MODULES
from server.session_config import reconstruct_config
from server.settings import Settings
from stream4d.pipeline import reconstruct
from stream4d.pipeline.keyframing import HeldFrames
from stream4d.pipeline.live import LiveFrames

STAGES = [(MapTracker, "track", "live tracking"), (TwoViewBootstrap, "add", "bootstrap"),
          (ParallaxKeyframer, "decide", "keyframer"), (FrameQualityFilter, "check", "quality check"),
          (HeldFrames, "hold", "holding (JPEG)")]


def _runqueue_s() -> float:
    """Seconds the calling thread has waited runnable for a core (0 where Linux schedstat is absent)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as fh:
            return int(fh.read().split()[1]) * 1e-9
    except OSError:
        return 0.0


class StageClock:
    """Per stage: calls, CPU, wall and run-queue seconds, summed over the threads that run it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])

    def add(self, name: str, calls: int, cpu: float, wall: float, runqueue: float) -> None:
        with self.lock:
            s = self.sums[name]
            s[0] += calls
            s[1] += cpu
            s[2] += wall
            s[3] += runqueue

    def timed(self, name: str, method):
        def run(*args, **kwargs):
            q, c, t = _runqueue_s(), time.thread_time(), time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.add(name, 1, time.thread_time() - c, time.perf_counter() - t, _runqueue_s() - q)
        return run


def _tracking_thread(clock: StageClock, taken: list, profile: cProfile.Profile | None, start: dict):
    """``LiveFrames.__call__`` timed as a whole and per wait for the source's next frame; ``start``
    gets the time the first frame was taken and the frames the source had dropped by then."""
    call = LiveFrames.__call__

    def timed_call(self, frames):
        if profile is not None:
            profile.enable()
        q0, c0, t0 = _runqueue_s(), time.thread_time(), time.perf_counter()
        source = iter(frames)
        while True:
            q, c, t = _runqueue_s(), time.thread_time(), time.perf_counter()
            f = next(source, None)
            clock.add("waiting for frames", 0, time.thread_time() - c, time.perf_counter() - t, _runqueue_s() - q)
            if f is None:
                break
            if not taken:
                start.update(taken_at=time.monotonic(), dropped=start["source"].stats.dropped)
            taken.append(time.monotonic() - f.arrived)
            yield from call(self, iter([f]))
        clock.add("tracking thread", len(taken), time.thread_time() - c0, time.perf_counter() - t0,
                  _runqueue_s() - q0)
        if profile is not None:
            profile.disable()

    return timed_call


def run(clip: str, profile: bool) -> dict:
    import importlib

    for name in JOB_MODULES:  # as the service does at startup: the run does not wait for imports
        importlib.import_module(name)
    clock = StageClock()
    for cls, name, label in STAGES:
        setattr(cls, name, clock.timed(label, getattr(cls, name)))
    taken: list[float] = []
    prof = cProfile.Profile() if profile else None
    start: dict = {}
    LiveFrames.__call__ = _tracking_thread(clock, taken, prof, start)

    fps, jpegs = clip_as_jpegs(clip)
    config = reconstruct_config(SessionOptions(), None)
    settings = Settings()
    src = PushSource(name="live", capacity=settings.live_queue, options=config.ingest,
                     idle_timeout=settings.live_idle_timeout, max_bytes=settings.live_queue_bytes)
    start["source"] = src
    loads, drops = [], []  # each second of the push
    with tempfile.TemporaryDirectory() as out:
        worker = threading.Thread(target=reconstruct, args=(src, out, config), kwargs={"progress": False})
        worker.start()
        t0 = start["pushed_at"] = time.monotonic()
        for i, jpeg in enumerate(jpegs):
            time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            src.push(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr), i / fps)
            if i % round(fps) == 0:
                loads.append(round(os.getloadavg()[0], 1))
                drops.append(src.stats.dropped)
        src.close()
        worker.join()
        record = json.loads((Path(out) / "run.json").read_text())
    lat = record["latency_s"]
    n = max(1, len(taken))
    stages = {name: {"calls": int(s[0]), "cpu ms/frame": round(1000 * s[1] / n, 2),
                     "wall ms/frame": round(1000 * s[2] / n, 2), "runqueue ms/frame": round(1000 * s[3] / n, 2),
                     "other ms/frame": round(1000 * (s[2] - s[1] - s[3]) / n, 2)}
              for name, s in clock.sums.items()}
    result = {"clip": Path(clip).name, "fps": round(fps, 2), "sent": len(jpegs), "dropped": src.stats.dropped,
              "first frame taken after s": round(start["taken_at"] - start["pushed_at"], 2) if taken else None,
              "dropped by then": start.get("dropped"),
              "taken": len(taken), "keyframes": record["stats"]["frames_keyframes"],
              "unjudged": record["keyframes"].get("unjudged", 0),
              "latency p50 / p95 s": [round(lat["p50"], 3), round(lat["p95"], 3)],
              "queue wait p50 / p95 s": [round(float(v), 3) for v in np.percentile(taken, [50, 95])] if taken else None,
              "dropped by second of the push": drops, "load average min/max": [min(loads), max(loads)],
              "stages (per frame taken)": stages}
    if prof is not None:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(20)
        result["profile of the tracking thread"] = text.getvalue()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--profile", action="store_true", help="cProfile the tracking thread")
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s) for the run")
    ap.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads for the run")
    args = ap.parse_args()
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    result = run(args.clip, args.profile)
    profile = result.pop("profile of the tracking thread", None)
    stages = result.pop("stages (per frame taken)")
    print(json.dumps(result))
    for name, s in stages.items():
        print(f"{name:20s} " + "  ".join(f"{k} {v}" for k, v in s.items()))
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
