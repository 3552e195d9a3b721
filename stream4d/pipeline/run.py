"""The streaming run: ingest -> sliding windows -> alignment -> Gaussian cache -> outputs/observers.

Three threads share the work so both cores stay busy: a reader decodes frames
ahead into a bounded queue, the caller's thread runs the window model, and the
alignment worker places each window in the world and feeds the cache, the
output folder and the observers. Nothing that grows with the stream is kept,
except small per-frame records: the trajectory the output folder needs and the
frames behind the per-frame counters (run.json ``counted_frames``).

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from stream4d import __version__
from stream4d.contracts import POSE_POSED, Frame, StreamObserver, StreamStats, WindowModel
from stream4d.outputs import OutputWriter
from stream4d.pipeline.config import ReconstructConfig
from stream4d.pipeline.grouping import DroppedViews, grouped_windows
from stream4d.pipeline.keyframing import HeldFrames, KeyframeMarks, LagJudge, mark_keyframes
from stream4d.pipeline.live import LatencyLog, LiveFrames, live_tracking_active, lower_this_thread
from stream4d.pipeline.maps import MapRun, finish_run, relocalisation, start_run
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
    map: dict | None = None  # run.json "map": {"loaded": relocalisation, "saved": the map written}


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
    latency: LatencyLog = field(default_factory=LatencyLog)
    live: LiveFrames | None = None  # arrivals stamped, frames tracked live (live sources)
    maps: MapRun = field(default_factory=MapRun)
    map_record: dict = field(default_factory=dict)  # run.json "map"
    final_ba: dict | None = None  # run.json "final_ba" (pipeline/final_ba.py)
    lag_judge: LagJudge | None = None  # a live run's keyframer on a thread of its own


def reconstruct(source: Any, out_dir: str | Path, config: ReconstructConfig | None = None,
                observers: Sequence[StreamObserver] = (), stop: threading.Event | None = None,
                progress: bool = True, model: WindowModel | None = None,
                on_stats: Callable[[StreamStats], None] | None = None) -> RunSummary:
    """Reconstruct ``source`` into ``out_dir`` (see docs/output_format.md).

    The output folder is complete even when the input breaks or the run fails midway: what was
    reconstructed before is written, run.json records the error, and the error is raised.
    """
    run = _open(source, Path(out_dir), config or ReconstructConfig(), observers, model)
    try:
        error = _stream(run, stop or threading.Event(), progress, on_stats)
        _final_ba(run, error)
        outputs = _close(run)
        error = _save_map(run, outputs) or error
        outputs["run.json"] = _record(run, error)
    finally:
        if run.model is not model:  # the model this run started (a process of its own, live) ends with it
            getattr(run.model, "close", lambda: None)()
    if error is not None:
        raise error
    return RunSummary(run.out_dir, run.stats, run.timings, outputs, run.viewer_url, run.skipped,
                      run.sink.skipped_windows, run.map_record or None)


# ---- phase 1: the stages ----------------------------------------------------------------------

def _open(source: Any, out_dir: Path, config: ReconstructConfig, observers: Sequence[StreamObserver],
          model: WindowModel | None) -> _Run:
    from recon.quality import FrameQualityFilter

    stats = StreamStats()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if config.final_ba:  # a missing pycolmap is said now, not after the whole stream
        from align.bundle import require_pycolmap

        require_pycolmap()
    src = open_input(source, config)
    live_on = live_tracking_active(config.live.tracking, getattr(src.info, "kind", ""))
    # A live run's default model runs in a process of its own (pipeline/model_process.py), started last.
    own_process = model is None and live_on and config.live.model_process and config.backend == "default"
    if not own_process:
        model = model or build_model(config)
        model.reset()
    writer = OutputWriter(out_dir)
    own_observers = build_observers(config, out_dir)
    all_observers = list(observers) + own_observers
    viewer_url = next((getattr(o, "viewer_url", None) for o in own_observers if getattr(o, "viewer_url", None)), None)
    if viewer_url:
        log.info("viewer at %s", viewer_url)
    keyframer = None
    keyframe_config = config.keyframes.for_source(getattr(src.info, "kind", ""), getattr(src.info, "fps", None))
    if keyframe_config is not None:
        from recon.keyframes import ParallaxKeyframer

        keyframer = ParallaxKeyframer(keyframe_config)
    # The latency log first: a pose's time is taken as the observers get it.
    latency = LatencyLog()
    tracker = bootstrap = None
    if live_on:
        from recon.live_tracking import MapTracker

        tracker = MapTracker()
        if config.live.bootstrap:
            from recon.live_bootstrap import TwoViewBootstrap

            bootstrap = TwoViewBootstrap(focal_prior=config.model.focal_prior)
    all_observers = [latency, *all_observers]
    live = LiveFrames(latency, all_observers, stats, timings, tracker, getattr(src, "stats", None),
                      mapping_nice=config.live.mapping_nice, bootstrap=bootstrap)
    sink = Sink(writer, config, all_observers, stats, timings, HeldFrames() if keyframer else None)
    sink.keep_held_tracks = _final_ba_will_run(config, src)
    if tracker is not None:  # live: the frames between keyframes are re-posed on a CPU budget
        from recon.tracking import TrackingConfig

        sink.tracking_config = TrackingConfig(max_points=config.live.repose_points)
        sink.live_poses = live.poses
    aligner = build_aligner(config, src)
    maps = start_run(config, aligner, sink.cache)
    if own_process:
        from stream4d.pipeline.model_process import ModelProcess

        model = ModelProcess(config, nice=config.live.mapping_nice, idle=True, images_held=4 * config.align.window)
    return _Run(source, out_dir, config, src, model, writer, all_observers, sink, aligner,
                FrameQualityFilter(), stats, timings, started, viewer_url, keyframer=keyframer,
                latency=latency, live=live, maps=maps)


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
    mapper: ThreadPoolExecutor | None = None  # a live run's window-model thread
    try:
        with run.src, AlignmentWorker(run.aligner, maxsize=2, on_aligned=run.live.map_first(run.sink),
                                      on_skipped=run.sink.skip_unusable) as worker:
            # Decoding, ordering (photo collections out of capture order), keyframe choice and
            # per-frame preparation (of keyframes) run a window ahead in the reader thread.
            kind = getattr(run.src.info, "kind", "")
            run.order = OrderReport(config.ingest.order)
            frames = run.live(order_frames(iter(run.src), kind, config.ingest.order, report=run.order))
            prepare = getattr(run.model, "prepare", None)
            judge = None
            if run.live.tracking and config.live.keyframe_queue:
                # Tracking on a thread of its own: the keyframer, quality check and holding (most of
                # the front end's CPU) follow it through this queue and never hold up a live pose.
                frames = read_ahead(frames, config.live.keyframe_queue, reader_stop)
                judge = run.lag_judge = LagJudge(config.live.keyframer_lag_s)
            if run.keyframer is not None:
                frames = mark_keyframes(frames, run.keyframer, run.marks, judge)
            if run.live.tracking:
                # Tracking must never wait for mapping: the reader thread tracks, picks keyframes and
                # holds the frames between them; only keyframes queue up for the model.
                keyframes = read_ahead(_usable(frames, run, bar, ingest_error), config.live.map_queue, reader_stop)
                yield_cpu = partial(lower_this_thread, config.live.mapping_nice)
                frames = read_ahead(keyframes, config.align.window, reader_stop, prepare, on_thread_start=yield_cpu)
                mapper = ThreadPoolExecutor(1, thread_name_prefix="stream4d-model", initializer=yield_cpu)
                predict = partial(_predict_on, mapper, run.model)
            else:
                predict = run.model.predict
                if run.keyframer is not None:
                    prepare = _keyframes_only(prepare, run.marks)
                ahead = read_ahead(frames, config.align.window, reader_stop, prepare)
                frames = _usable(ahead, run, bar, ingest_error)
            live = kind in ("camera", "push")
            tail_merge = 0 if live else config.tail_merge
            retry = DroppedViews(config.align.window, config.align.overlap, at_end=kind in ("video", "camera", "push"),
                                held=run.sink.held)
            for window in retry.windows(grouped_windows(frames, lambda: run.order.groups, config.align.window,
                                                        config.align.overlap, tail_merge,
                                                        config.live.first_window_for(config.align) if live else None)):
                if stop.is_set():
                    break
                t = time.perf_counter()
                try:
                    pred = predict(window)
                except Exception as exc:  # noqa: BLE001 - one bad window must not end the stream
                    run.sink.skip([f.index for f in window], f"the window model failed: {type(exc).__name__}: {exc}")
                    continue
                timings["model"] = timings.get("model", 0.0) + time.perf_counter() - t
                retry.after(window, pred.frame_indices)
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
        if mapper is not None:
            mapper.shutdown(wait=False)
        # The alignment worker has drained: the last windows' frames count now, not a window late.
        bar.set_postfix(posed=stats.frames_posed, windows=stats.windows, gauss=stats.gaussians)
        bar.close()


def _predict_on(mapper: ThreadPoolExecutor, model: WindowModel, window: list[Frame]):
    """``model.predict(window)`` on the live run's model thread (which yields the CPU to tracking)."""
    return mapper.submit(model.predict, window).result()


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
            run.sink.counted.count("frames_keyframes", (f.index,))
            yield f
    except IngestError as exc:
        stats.errors.append(str(exc))
        ingest_error.append(exc)
    finally:  # nothing left to track: a live run's model process gets its share of the CPU back
        getattr(run.model, "input_ended", lambda: None)()


# ---- phase 3: closing -------------------------------------------------------------------------

def _final_ba_will_run(config: ReconstructConfig, src) -> bool:
    """Whether the run is to end with the final adjustment (so its tracked frames' observations are kept)."""
    if config.final_ba is False or getattr(src.info, "kind", "") in ("camera", "push"):
        return False
    return bool(config.final_ba) or not _why_no_default_final_ba(config)


def _final_ba(run: _Run, error: BaseException | None) -> None:
    """``final_ba``: the finished stream's keyframes and tracks adjusted together, the outputs moved
    (by default for a finite input: ``ReconstructConfig.final_ba`` None). The tracked frames' observations
    it was given are then dropped from sparse/ (the outputs keep their size)."""
    try:
        _adjust_at_the_end(run, error)
    finally:
        if run.sink.keep_held_tracks:
            run.writer.drop_held_tracks()


def _adjust_at_the_end(run: _Run, error: BaseException | None) -> None:
    asked = run.config.final_ba
    if asked is False:
        return
    if getattr(run.src.info, "kind", "") in ("camera", "push"):
        if asked:
            log.info("final_ba ignored: a live input has no end to adjust at")
            run.final_ba = {"applied": False, "skipped": "live input"}
        return
    if error is not None:
        run.final_ba = {"applied": False, "skipped": "the stream ended with an error"}
        return
    if asked is None:
        why = _why_no_default_final_ba(run.config)
        if why:
            log.info("final bundle adjustment not run: %s", why)
            run.final_ba = {"applied": False, "skipped": why}
            return
    from stream4d.pipeline.final_ba import final_bundle_adjustment

    sink = run.sink
    segment = sink.largest_segment()  # the world the map files and the exports show
    if segment is None:
        run.final_ba = {"applied": False, "skipped": "no window was posed"}
        return
    try:
        run.final_ba = final_bundle_adjustment(run.writer, segment, sink.frame_window, sink.cache,
                                               sink.fallback_points if sink.cache is None else None,
                                               refine_focal=_focal_measured(_intrinsics_report(run.model)),
                                               exclude_frames=_relocated_frames(run), loops=_accepted_loops(run),
                                               loop_pairs=[*getattr(_global_map(run), "loop_pairs", ()),
                                                           *run.aligner.link_pairs],
                                               on_adjusted=_map_follows(run),
                                               max_observations=run.config.final_ba_max_observations,
                                               tracked_observations=run.config.final_ba_tracked_observations,
                                               lens=run.config.final_ba_lens)
    except Exception as exc:  # noqa: BLE001 - the outputs as the stream left them are still written
        log.warning("final bundle adjustment failed: %s: %s", type(exc).__name__, exc)
        run.final_ba = {"applied": False, "skipped": f"failed: {type(exc).__name__}: {exc}"}
    run.timings["final_ba"] = run.final_ba.get("seconds", 0.0)


def _map_follows(run: _Run):
    """What moves the keyframes ``save_map`` will write with the adjusted frames (None without a map)."""
    return run.aligner.follow_adjustment if run.config.save_map else None


def _focal_measured(report: dict | None) -> bool:
    """Whether the windows' motion measured the self-calibrated focal length: only then does the final
    adjustment refine it (a starting guess or the input's own statement is held where it is)."""
    return bool(report) and "windows" in (report.get("focal_source") or "")


def _why_no_default_final_ba(config: ReconstructConfig) -> str:
    """Why a run that did not ask for the final adjustment goes without it ("" when it gets it)."""
    from align.bundle import BundleAdjustmentUnavailable, require_pycolmap

    if config.map_from:
        return ("the run starts in a saved map, whose world the adjustment does not see: it would move the stream "
                "away from it (ask with --final-ba)")
    try:
        require_pycolmap()
    except BundleAdjustmentUnavailable:
        return "pycolmap is not installed (pip install 'stream4d[ba]')"
    return ""


def _global_map(run: _Run):
    """The aligner's align.globalmap.GlobalMap (None with loop closure off)."""
    return getattr(run.aligner, "global_map", None)


def _relocated_frames(run: _Run) -> set[int]:
    """Frames the loop closure re-posed by PnP on an earlier keyframe."""
    return {int(r["frame"]) for r in getattr(_global_map(run), "relocated", ())}


def _accepted_loops(run: _Run) -> list[dict]:
    """The loop closures the pose graph kept (run.json ``loop_closure.loops``)."""
    return list(getattr(_global_map(run), "loops", ()))


def _close(run: _Run) -> dict[str, Path]:
    """The sink's last state into the folder, then the writer and every observer closed."""
    outputs: dict[str, Path] = {}
    try:
        outputs = run.sink.finish()
        if run.sink.map_segment is not None and run.sink.map_segment != run.stats.segment:
            run.map_record["segment"] = run.sink.map_segment  # points.ply / splats.ply: not the last world
        _publish_final(run)
    finally:
        run.writer.close()
        for obs in run.observers:
            obs.close()
    outputs.update({"trajectory.json": run.out_dir / "trajectory.json",
                    "trajectory.tum": run.out_dir / "trajectory.tum"})
    if run.config.rrd:
        outputs["recording.rrd"] = rrd_path(run.config, run.out_dir)
    return outputs


def _publish_final(run: _Run) -> None:
    """The frames' final poses to the observers that take them (``StreamObserver.on_final``)."""
    takers = [obs for obs in run.observers if callable(getattr(obs, "on_final", None))]
    if takers:
        frames = run.writer.posed_frames()
        for obs in takers:
            obs.on_final(frames)


def _save_map(run: _Run, outputs: dict[str, Path]) -> BaseException | None:
    """The relocalisation record and ``save_map``; a map that cannot be written is the run's error."""
    found = relocalisation(run.maps, run.aligner)
    if found is not None:
        run.map_record["loaded"] = found
        if not found["relocalised"]:
            run.stats.warnings.append(f"the input was not relocalised in the map {found['map']}: "
                                      "its outputs are in its own world")
    try:
        saved = finish_run(run.maps, run.config, run.out_dir, run.aligner, run.sink.cache, str(run.source))
    except Exception as exc:  # noqa: BLE001 - recorded in run.json, then raised by reconstruct
        return exc
    if saved is not None:
        run.map_record["saved"] = saved
        outputs["map"] = Path(saved["path"])
    return None


# ---- phase 4: the record ----------------------------------------------------------------------

def _record(run: _Run, error: BaseException | None) -> Path:
    """run.json: the whole config tree, the input, counters, timings and how the run ended."""
    timings, stats = run.timings, run.stats
    timings["total"] = time.perf_counter() - run.started
    if run.sink.map_points == 0:  # nothing any keyframe saw reached the map: none was posed "with depth"
        counted = run.sink.counted
        counted.recount("frames_without_depth", [f.index for f in run.writer.posed_frames()
                                                 if f.pose_kind == POSE_POSED])
        counted.recount("frames_tracked_with_depth", ())
        counted.recount("frames_depth_from_tracks", ())
    stats.warnings.extend(run_warnings(stats, run.sink.map_points, run.config.gaussians))
    for warning in stats.warnings:
        log.warning(warning)
    stats.fps = stats.frames_received / timings["total"] if timings["total"] > 0 else 0.0
    run.latency.refresh(stats)
    record = {
        "version": __version__,
        "config": run.config.to_dict(),
        "input": str(run.source) if not hasattr(run.source, "read") else "<stream>",
        "source_info": _jsonable(getattr(run.src, "info", None)),
        "ingest_stats": _jsonable(getattr(run.src, "stats", None)),
        "stats": asdict(stats),
        "timings_s": timings,
        "skipped_frames": run.skipped,
        "counted_frames": run.sink.counted.to_json(),
        "skipped_windows": run.sink.skipped_windows,
        "alignment_scales": run.sink.window_scales,
        "loop_closure": _loop_record(run),
        "frame_order": _jsonable(run.order),
        "keyframes": {"policy": "parallax" if run.keyframer is not None else "all", "reasons": run.marks.reasons,
                      "unjudged": run.lag_judge.unjudged if run.lag_judge is not None else 0,
                      **_keyframe_thresholds(run.keyframer)},
        "intrinsics": _intrinsics_report(run.model),
        "live_tracking": run.live is not None and run.live.tracking,
        "model_process": _model_process_record(run.model),
        "latency_s": run.latency.summary(),
        "live_bootstrap": run.live.bootstrap_report() if run.live is not None else None,
        "map": run.map_record or None,
        "final_ba": run.final_ba,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
    return run.writer.write_run(record)


def _intrinsics_report(model: WindowModel) -> dict | None:
    """The model's stream-wide self-calibration (focal estimate, sigma, when fixed), if it keeps one."""
    report = getattr(model, "intrinsics_report", None)
    return _jsonable_dict(report()) if callable(report) else None


def _model_process_record(model: WindowModel) -> dict | None:
    """A live run's model in a process of its own (pipeline/model_process.py), else None."""
    from stream4d.pipeline.model_process import ModelProcess

    return {"restarts": model.restarts} if isinstance(model, ModelProcess) else None


def _jsonable_dict(d: dict | None) -> Any:
    return None if d is None else json.loads(json.dumps(d, default=str))


def _keyframe_thresholds(keyframer) -> dict:
    """The thresholds a run's keyframer used (a folder's differ from the configured ones:
    ``KeyframeConfig.for_source``); none when every frame was a keyframe."""
    if keyframer is None:
        return {}
    cfg = keyframer.config
    return {"min_parallax": cfg.min_parallax, "max_interval": cfg.max_interval_s}


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
