"""The streaming run: ingest -> sliding windows -> alignment -> Gaussian cache -> outputs/observers.

Three threads share the work so both cores stay busy: a reader decodes frames
ahead into a bounded queue, the caller's thread runs the window model, and the
alignment worker places each window in the world and feeds the cache, the
output folder and the observers. Nothing that grows with the stream is kept,
except the small per-frame trajectory records the output folder needs.

``reconstruct`` runs four phases: open the stages, stream the windows through
them, close the sinks, record run.json.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stream4d import __version__
from stream4d.contracts import Frame, StreamObserver, StreamStats, WindowModel
from stream4d.outputs import OutputWriter
from stream4d.pipeline.config import ReconstructConfig
from stream4d.pipeline.grouping import grouped_windows
from stream4d.pipeline.keyframing import HeldFrames, KeyframeMarks, mark_keyframes
from stream4d.pipeline.reading import read_ahead
from stream4d.pipeline.report import run_warnings
from stream4d.pipeline.sink import Sink
from stream4d.pipeline.stages import build_aligner, build_model, build_observers, open_input, rrd_path

log = logging.getLogger("stream4d.pipeline")


@dataclass
class RunSummary:
    out_dir: Path
    stats: StreamStats
    timings: dict[str, float]
    outputs: dict[str, Path]
    viewer_url: str | None = None
    skipped: list[dict] = field(default_factory=list)
    skipped_windows: list[dict] = field(default_factory=list)  # {"window", "frames", "reason"}


@dataclass
class _Run:
    """One run's stages and running records, from the opened input to run.json."""

    source: Any  # the input as the caller gave it
    out_dir: Path
    config: ReconstructConfig
    src: Any  # recon.ingest.FrameSource
    model: WindowModel
    writer: OutputWriter
    observers: list[StreamObserver]
    sink: Sink
    aligner: Any  # align.StreamAligner
    quality: Any  # recon.quality.FrameQualityFilter
    stats: StreamStats
    timings: dict[str, float]
    started: float
    viewer_url: str | None = None
    skipped: list[dict] = field(default_factory=list)
    order: Any = None  # recon.ordering.OrderReport of the frame order the windows saw
    keyframer: Any = None  # recon.keyframes.ParallaxKeyframer, None when every frame is a keyframe
    marks: KeyframeMarks = field(default_factory=KeyframeMarks)


def reconstruct(source: Any, out_dir: str | Path, config: ReconstructConfig | None = None,
                observers: Sequence[StreamObserver] = (), stop: threading.Event | None = None,
                progress: bool = True, model: WindowModel | None = None,
                on_stats: Callable[[StreamStats], None] | None = None) -> RunSummary:
    """Reconstruct ``source`` into ``out_dir`` (see docs/output_format.md).

    The output folder is complete even when the input breaks or the run fails midway: what was
    reconstructed before is written, run.json records the error, and the error is raised.
    """
    run = _open(source, Path(out_dir), config or ReconstructConfig(), observers, model)
    error = _stream(run, stop or threading.Event(), progress, on_stats)
    outputs = _close(run)
    outputs["run.json"] = _record(run, error)
    if error is not None:
        raise error
    return RunSummary(run.out_dir, run.stats, run.timings, outputs, run.viewer_url, run.skipped,
                      run.sink.skipped_windows)


# ---- phase 1: the stages ----------------------------------------------------------------------

def _open(source: Any, out_dir: Path, config: ReconstructConfig, observers: Sequence[StreamObserver],
          model: WindowModel | None) -> _Run:
    from recon.quality import FrameQualityFilter

    stats = StreamStats()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    src = open_input(source, config)
    model = model or build_model(config)
    model.reset()
    writer = OutputWriter(out_dir)
    own_observers = build_observers(config, out_dir)
    all_observers = list(observers) + own_observers
    viewer_url = next((getattr(o, "viewer_url", None) for o in own_observers if getattr(o, "viewer_url", None)), None)
    if viewer_url:
        log.info("viewer at %s", viewer_url)
    keyframer = None
    if config.keyframes.active_for(getattr(src.info, "kind", "")):
        from recon.keyframes import ParallaxKeyframer

        keyframer = ParallaxKeyframer(config.keyframes)
    sink = Sink(writer, config, all_observers, stats, timings, HeldFrames() if keyframer else None)
    return _Run(source, out_dir, config, src, model, writer, all_observers, sink, build_aligner(config, src),
                FrameQualityFilter(), stats, timings, started, viewer_url, keyframer=keyframer)


# ---- phase 2: the stream ----------------------------------------------------------------------

def _stream(run: _Run, stop: threading.Event, progress: bool,
            on_stats: Callable[[StreamStats], None] | None) -> BaseException | None:
    """Frames -> windows -> model -> alignment worker -> sink, until the input ends or ``stop``.

    Returns what ended the stream early (an input that broke midway, a failure), else None.
    """
    from tqdm import tqdm

    from align import AlignmentWorker
    from recon.ordering import OrderReport, order_frames

    config, stats, timings = run.config, run.stats, run.timings
    bar = tqdm(desc="reconstruct", unit="frame", disable=not progress,
               total=getattr(run.src.info, "frame_count", None))
    ingest_error: list[BaseException] = []
    reader_stop = threading.Event()
    try:
        with run.src, AlignmentWorker(run.aligner, maxsize=2, on_aligned=run.sink,
                                      on_skipped=run.sink.skip_unusable) as worker:
            # Decoding, ordering (photo collections out of capture order), keyframe choice and
            # per-frame preparation (of keyframes) run a window ahead in the reader thread.
            kind = getattr(run.src.info, "kind", "")
            run.order = OrderReport(config.ingest.order)
            frames = order_frames(iter(run.src), kind, config.ingest.order, report=run.order)
            prepare = getattr(run.model, "prepare", None)
            if run.keyframer is not None:
                frames = mark_keyframes(frames, run.keyframer, run.marks)
                prepare = _keyframes_only(prepare, run.marks)
            ahead = read_ahead(frames, config.align.window, reader_stop, prepare)
            live = kind in ("camera", "push")
            tail_merge = 0 if live else config.tail_merge
            frames = _usable(ahead, run, bar, ingest_error)
            for window in grouped_windows(frames, lambda: run.order.groups, config.align.window,
                                          config.align.overlap, tail_merge):
                if stop.is_set():
                    break
                t = time.perf_counter()
                try:
                    pred = run.model.predict(window)
                except Exception as exc:  # noqa: BLE001 - one bad window must not end the stream
                    run.sink.skip([f.index for f in window], f"the window model failed: {type(exc).__name__}: {exc}")
                    continue
                timings["model"] = timings.get("model", 0.0) + time.perf_counter() - t
                stats.frames_dropped = getattr(run.src.stats, "dropped", 0)
                worker.submit(pred)
                bar.set_postfix(posed=stats.frames_posed, windows=stats.windows, gauss=stats.gaussians)
                if on_stats:
                    on_stats(stats)
        return ingest_error[0] if ingest_error else None
    except BaseException as exc:  # noqa: BLE001 - recorded in run.json, then raised by reconstruct
        return exc
    finally:
        reader_stop.set()
        bar.close()


def _keyframes_only(prepare: Callable[[Frame], None] | None,
                    marks: KeyframeMarks) -> Callable[[Frame], None] | None:
    if prepare is None:
        return None
    return lambda f: prepare(f) if marks.is_key(f.index) else None


def _usable(frames: Iterator[Frame], run: _Run, bar, ingest_error: list[BaseException]) -> Iterator[Frame]:
    """Good frames only; an input that breaks mid-stream ends it, keeping what came before."""
    from recon.ingest import IngestError

    stats = run.stats
    try:
        for f in frames:
            stats.frames_received += 1
            bar.update(1)
            reason = run.quality.check(f)
            if reason:
                run.marks.forget(f.index)
                stats.frames_skipped += 1
                run.skipped.append({"index": f.index, "source": f.source, "reason": reason})
                continue
            stats.frames_processed += 1
            held = run.sink.held
            if held is not None and not run.marks.is_key(f.index):
                held.hold(f)  # posed by the sink once the window of the keyframes around it is aligned
                continue
            if held is not None:
                held.keyframe(f.index)
                run.marks.forget(f.index)
            stats.frames_keyframes += 1
            yield f
    except IngestError as exc:
        stats.errors.append(str(exc))
        ingest_error.append(exc)


# ---- phase 3: closing -------------------------------------------------------------------------

def _close(run: _Run) -> dict[str, Path]:
    """The sink's last state into the folder, then the writer and every observer closed."""
    outputs: dict[str, Path] = {}
    try:
        outputs = run.sink.finish()
    finally:
        run.writer.close()
        for obs in run.observers:
            obs.close()
    outputs.update({"trajectory.json": run.out_dir / "trajectory.json",
                    "trajectory.tum": run.out_dir / "trajectory.tum"})
    if run.config.rrd:
        outputs["recording.rrd"] = rrd_path(run.config, run.out_dir)
    return outputs


# ---- phase 4: the record ----------------------------------------------------------------------

def _record(run: _Run, error: BaseException | None) -> Path:
    """run.json: the whole config tree, the input, counters, timings and how the run ended."""
    timings, stats = run.timings, run.stats
    timings["total"] = time.perf_counter() - run.started
    stats.warnings.extend(run_warnings(stats, run.sink.map_points, run.config.gaussians))
    for warning in stats.warnings:
        log.warning(warning)
    stats.fps = stats.frames_received / timings["total"] if timings["total"] > 0 else 0.0
    record = {
        "version": __version__,
        "config": run.config.to_dict(),
        "input": str(run.source) if not hasattr(run.source, "read") else "<stream>",
        "source_info": _jsonable(getattr(run.src, "info", None)),
        "ingest_stats": _jsonable(getattr(run.src, "stats", None)),
        "stats": asdict(stats),
        "timings_s": timings,
        "skipped_frames": run.skipped,
        "skipped_windows": run.sink.skipped_windows,
        "alignment_scales": run.sink.window_scales,
        "loop_closure": _loop_record(run),
        "frame_order": _jsonable(run.order),
        "keyframes": {"policy": "parallax" if run.keyframer is not None else "all", "reasons": run.marks.reasons},
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
    return run.writer.write_run(record)


def _loop_record(run: _Run) -> dict | None:
    """Keyframe database, loops and pose-graph solves (align.globalmap), None with loop closure off."""
    global_map = getattr(run.aligner, "global_map", None)
    if global_map is None:
        return None
    record = global_map.summary()
    record["output_seconds"] = round(run.timings.get("loop_outputs", 0.0), 4)
    return record


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    try:
        d = asdict(obj)
    except TypeError:
        d = dict(vars(obj)) if hasattr(obj, "__dict__") else str(obj)
    return json.loads(json.dumps(d, default=str))
