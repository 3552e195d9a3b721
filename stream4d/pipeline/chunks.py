"""One long video in overlapping chunks: each chunk reconstructed on its own (on different
machines: ``server.ray_chunks`` runs them as Ray tasks; ``reconstruct_in_chunks`` one after
the other in this process), then joined into one world (``stream4d.pipeline.chunk_join``).

A chunk is the frames ``[start, stop)`` of the video (decode order); consecutive chunks share
``overlap`` frames. Each chunk is a whole run of the pipeline, with its own windows, alignment
and world. With ``anchor_stride`` one more run, the anchor, reconstructs every n-th frame of
the whole video (a ``1/n`` share of the work, alongside the chunks): it ties every chunk to
one world over the chunk's whole length, where the overlaps alone tie a chunk to the one
before only over a short stretch. The join is a Sim(3) pose graph over the runs' worlds; it
works on poses after the fact, not the aligner's layer-wise point-map alignment.

The parts of a chunked run (``plan_parts``) are plain data so that any executor can run them:
``run_part`` runs one into its folder, ``finish_chunked`` joins the folders into the run's
output folder and writes its run.json.
"""

from __future__ import annotations

import json
import platform
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from recon.ingest import FrameSource, IngestOptions, RawFrame, SourceInfo, open_source
from stream4d import __version__
from stream4d.contracts import POSE_INTERPOLATED, POSE_ROTATION_ONLY, POSE_TRACKED, StreamObserver, StreamStats
from stream4d.outputs import FORMAT_VERSION, RUN_JSON, json_default
from stream4d.pipeline.chunk_join import MIN_OVERLAP, JoinReport, join_chunks

__all__ = ["MIN_OVERLAP", "Chunk", "ChunkedRun", "FrameRange", "JoinReport", "Part", "anchor_config",
           "check_chunkable", "finish_chunked", "join_chunks", "joined_stats", "part_config", "part_dir", "part_result",
           "plan_chunks", "plan_parts", "reconstruct_chunk", "reconstruct_in_chunks", "run_part"]




@dataclass(frozen=True)
class Chunk:
    """Frames ``[start, stop)`` of the input, in decode order."""

    start: int
    stop: int


def plan_chunks(frame_count: int, chunks: int, overlap: int) -> list[Chunk]:
    """``chunks`` chunks of about equal length covering ``frame_count`` frames, each sharing
    ``overlap`` frames with the next."""
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    if overlap < MIN_OVERLAP:
        raise ValueError(f"overlap must be >= {MIN_OVERLAP} frames (a Sim(3) joins chunks), got {overlap}")
    core = (frame_count - overlap) / chunks  # frames of each chunk not shared with the next
    if core < 2 * overlap:
        raise ValueError(f"{frame_count} frames are too few for {chunks} chunks overlapping by {overlap}")
    bounds = [round(k * core) for k in range(chunks + 1)]
    return [Chunk(bounds[k], min(frame_count, bounds[k + 1] + overlap)) for k in range(chunks)]


class FrameRange(FrameSource):
    """Frames ``[start, stop)`` of a video file as a source of its own: same kind, the frames'
    names and timestamps as in the whole video (so chunks share frames by name)."""

    restartable = True

    def __init__(self, path: str | Path, chunk: Chunk, options: IngestOptions | None = None) -> None:
        self._path = str(path)
        self._chunk = chunk
        with open_source(self._path, IngestOptions()) as whole:
            info = whole.info
        super().__init__(SourceInfo(info.kind, f"{info.name}[{chunk.start}:{chunk.stop}]", info.fps,
                                    chunk.stop - chunk.start, info.size), options)

    def _raw_frames(self) -> Iterator[RawFrame]:
        # The whole video at its own size, every frame: its frame index is its decode position.
        with open_source(self._path, IngestOptions()) as whole:
            for frame in whole:
                if frame.index >= self._chunk.stop:
                    return
                if frame.index >= self._chunk.start:
                    image = frame.image
                    yield RawFrame(frame.index - self._chunk.start, frame.timestamp, frame.source,
                                   lambda image=image: image, frame.K)


def check_chunkable(ingest: IngestOptions) -> None:
    """Chunks number frames by decode position: options that select frames by other rules would
    make the chunks' frames differ from the whole video's."""
    if ingest.stride != 1 or ingest.target_fps is not None or ingest.keyframes or ingest.max_frames is not None:
        raise ValueError("chunked runs need every frame of the input: stride 1, no fps cap, no near-duplicate "
                         "skipping, no max_frames")


def reconstruct_chunk(path: str | Path, chunk: Chunk, out_dir: str | Path, config: Any, stop: Any = None) -> Any:
    """Run the pipeline on one chunk of the video at ``path`` into ``out_dir``; its ``RunSummary``."""
    from stream4d.pipeline.run import reconstruct

    check_chunkable(config.ingest)
    return reconstruct(FrameRange(path, chunk, config.ingest), out_dir, config, stop=stop, progress=False)


def anchor_config(config: Any, stride: int) -> Any:
    """The config of the anchor run: ``config`` on every ``stride``-th frame of the whole input."""
    return replace(config, ingest=replace(config.ingest, stride=stride))


@dataclass(frozen=True)
class Part:
    """One run of a chunked run: a chunk (``chunk``) or the anchor (every ``stride``-th frame of the
    whole video); ``name`` is its folder name ("anchor", "000", "001", ...)."""

    name: str
    chunk: Chunk | None = None
    stride: int | None = None

    @property
    def is_anchor(self) -> bool:
        return self.chunk is None


def plan_parts(frame_count: int, chunks: int, overlap: int, anchor_stride: int | None) -> list[Part]:
    """The runs of a chunked run: the anchor first (it is the shortest and every join needs it),
    then the chunks. ``ValueError`` for a plan that cannot work (see ``plan_chunks``)."""
    if anchor_stride is not None and not 2 <= anchor_stride <= frame_count // MIN_OVERLAP:
        raise ValueError(f"the anchor stride must be 2..{frame_count // MIN_OVERLAP} for {frame_count} frames "
                         f"(the anchor run needs {MIN_OVERLAP} frames), got {anchor_stride}")
    parts = [Part("anchor", stride=anchor_stride)] if anchor_stride else []
    return parts + [Part(f"{k:03d}", chunk=c) for k, c in enumerate(plan_chunks(frame_count, chunks, overlap))]


def part_config(config: Any) -> Any:
    """A part's config: the run's, without what belongs to the joined run alone (its recording,
    a viewer, a saved map) or cannot apply to a part (a map to start from, a final adjustment: the
    join places each part by its overlap as the part left it)."""
    return replace(config, rrd=False, save_map=None, map_from=None, final_ba=False,
                   viz=replace(config.viz, mode="none"))


def run_part(path: str | Path, part: Part, out_dir: str | Path, config: Any, stop: threading.Event | None = None,
             observers: Sequence[Any] = ()) -> Any:
    """Reconstruct one part of the video at ``path`` into ``out_dir`` (with ``part_config``); its ``RunSummary``."""
    from stream4d.pipeline.run import reconstruct

    config = part_config(config)
    if part.is_anchor:
        return reconstruct(str(path), out_dir, anchor_config(config, part.stride), observers=observers, stop=stop,
                           progress=False)
    check_chunkable(config.ingest)
    return reconstruct(FrameRange(path, part.chunk, config.ingest), out_dir, config, observers=observers, stop=stop,
                       progress=False)


def part_result(part: Part, summary: Any, seconds: float, cpu_seconds: float, node: str | None = None,
                attempts: int = 1) -> dict[str, Any]:
    """What one part's run reports for the joined run.json (JSON-able)."""
    return {"part": part.name, "start": None if part.chunk is None else part.chunk.start,
            "stop": None if part.chunk is None else part.chunk.stop, "stride": part.stride,
            "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3), "node": node, "attempts": attempts,
            "stats": asdict(summary.stats)}


@dataclass
class ChunkedRun:
    """A finished chunked run (what ``reconstruct`` returns for one run): the joined run's
    ``stats``, the join report and the wall seconds of the parts and of the join."""

    out_dir: Path
    stats: StreamStats
    report: JoinReport
    parts: list[dict[str, Any]]
    chunks_s: float
    join_s: float


def joined_stats(parts: list[dict[str, Any]], report: JoinReport) -> StreamStats:
    """The joined run's counters: frames as the chunks saw them (each frame of the video once),
    posed frames and Gaussians of the joined outputs, windows and problems of every chunk.

    A frame two chunks share counts once, from the chunk whose copy of it the join kept (or, not
    posed by a joined chunk, the first that received it): rotation-only, tracked and interpolated by
    the joined frames' ``pose_kind`` (``report.pose_kinds``); skipped, keyframes, without depth, depth
    from tracks and tracked with depth from that chunk's run.json (``report.frame_counts``,
    ``pipeline.counted``). A counter the join could not count (its parts predate the record) is the
    chunks' own, summed. So are dropped frames (chunks read a file, which drops none: 0), and the
    per-chunk events: windows, skipped windows, re-attachments."""
    chunks = [p for p in parts if p["start"] is not None]
    stats = StreamStats()
    stats.frames_received = max((p["start"] + p["stats"]["frames_received"] for p in chunks), default=0)
    for name in ("frames_skipped", "frames_dropped", "frames_rotation_only", "frames_without_depth",
                 "frames_depth_from_tracks", "frames_tracked",
                 "frames_tracked_with_depth", "frames_interpolated", "frames_keyframes", "windows", "windows_skipped",
                 "reattachments"):
        setattr(stats, name, sum(p["stats"].get(name, 0) for p in chunks))
    kinds = report.pose_kinds
    if kinds:
        stats.frames_rotation_only = kinds.get(POSE_ROTATION_ONLY, 0)
        stats.frames_tracked = kinds.get(POSE_TRACKED, 0)
        stats.frames_interpolated = kinds.get(POSE_INTERPOLATED, 0)
    for name, count in report.frame_counts.items():
        setattr(stats, name, count)
    if kinds:
        stats.frames_tracked_with_depth = min(stats.frames_tracked_with_depth, stats.frames_tracked)
    stats.frames_processed = max(0, stats.frames_received - stats.frames_skipped)
    stats.frames_posed = report.frames
    stats.gaussians = report.gaussians
    for p in parts:
        stats.errors += [f"{p['part']}: {e}" for e in p["stats"].get("errors", [])]
        stats.warnings += [f"{p['part']}: {w}" for w in p["stats"].get("warnings", [])]
    return stats


def finish_chunked(path: str | Path, out_dir: str | Path, work_dir: str | Path, parts: list[Part],
                   results: list[dict[str, Any]], config: Any, chunks_s: float, runner: str,
                   method: str = "pose_graph", stopped: bool = False) -> ChunkedRun:
    """Join the parts' folders (``work_dir/<part>/out``) into ``out_dir`` and write its run.json:
    the config, ``chunked`` (the plan, each part's seconds / node / attempts / counters, the join)
    and the joined counters. ``results``: ``part_result`` of each part, in ``parts`` order.
    ``stopped``: the run was stopped early, so its chunks may be cut short: those that cannot be
    placed are left out of the join (run.json ``chunked.join.left_out``) instead of failing it."""
    started = time.perf_counter()
    out = Path(out_dir)
    chunk_parts = [p for p in parts if not p.is_anchor]
    anchor = next((p for p in parts if p.is_anchor), None)
    rrd = out / "recording.rrd" if config.rrd else None
    report = join_chunks([part_dir(work_dir, p) for p in chunk_parts], [p.chunk for p in chunk_parts], out,
                         None if anchor is None else part_dir(work_dir, anchor), method=method, rrd=rrd,
                         leave_out_unplaceable=stopped)
    join_s = time.perf_counter() - started
    stats = joined_stats(results, report)
    stats.fps = stats.frames_received / max(chunks_s + join_s, 1e-9)
    record = {
        "config": config.to_dict(),
        "input": str(path),
        "chunked": {"chunks": len(chunk_parts), "overlap": chunk_parts[0].chunk.stop - chunk_parts[1].chunk.start
                    if len(chunk_parts) > 1 else 0, "anchor_stride": None if anchor is None else anchor.stride,
                    "runner": runner, "stopped": stopped, "parts": results, "join": asdict(report)},
        "stats": asdict(stats),
        "timings_s": {"chunks": round(chunks_s, 3), "join": round(join_s, 3), "total": round(chunks_s + join_s, 3)},
        "error": None,
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
    body = {"stream4d_version": __version__, "format_version": FORMAT_VERSION, "version": __version__, **record}
    (out / RUN_JSON).write_text(json.dumps(body, indent=1, default=json_default), encoding="utf-8")
    return ChunkedRun(out, stats, report, results, chunks_s, join_s)


def part_dir(work_dir: str | Path, part: Part) -> Path:
    """A part's output folder; its control files (stop, attempts, progress) go next to it."""
    return Path(work_dir) / part.name / "out"


class _Counted(StreamObserver):  # the protocol's other methods do nothing
    """Passes a part's progress on to the run's observers as the whole run's: the chunks done
    so far added to the current one's counters."""

    _SUMMED = ("frames_received", "frames_processed", "frames_posed", "frames_skipped", "windows")

    def __init__(self, observers: Sequence[Any], done: StreamStats) -> None:
        self._observers = [o for o in observers if callable(getattr(o, "on_stats", None))]
        self._done = done

    def on_stats(self, stats: StreamStats) -> None:
        total = replace(stats, errors=list(stats.errors), warnings=list(stats.warnings))
        for name in self._SUMMED:
            setattr(total, name, getattr(stats, name) + getattr(self._done, name))
        for obs in self._observers:
            obs.on_stats(total)


def reconstruct_in_chunks(path: str | Path, out_dir: str | Path, work_dir: str | Path, config: Any,
                          frame_count: int, chunks: int, overlap: int, anchor_stride: int | None = 10,
                          stop: threading.Event | None = None, observers: Sequence[Any] = (),
                          method: str = "pose_graph") -> ChunkedRun:
    """A chunked run in this process, one part after the other (the executor without Ray): the
    same parts, folders, join and outputs as on Ray, so the same result as there, not faster
    than the whole video in one run. ``observers`` get each chunk's progress as the whole run's
    (``on_stats``). The anchor runs last: on ``stop`` the current chunk writes what it has, later
    parts do not start, and the chunks done are joined by their overlaps (as a stopped upload
    keeps the frames it reconstructed)."""
    check_chunkable(config.ingest)
    parts = plan_parts(frame_count, chunks, overlap, anchor_stride)
    work = Path(work_dir)
    if work.exists():  # a resumed job starts over
        shutil.rmtree(work)
    stop = stop or threading.Event()
    done = StreamStats()
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for part in sorted(parts, key=lambda p: p.is_anchor):
        if stop.is_set():
            break
        t, cpu = time.perf_counter(), time.process_time()
        summary = run_part(path, part, part_dir(work, part), config, stop,
                           observers=[] if part.is_anchor else [_Counted(observers, done)])
        results[part.name] = part_result(part, summary, time.perf_counter() - t, time.process_time() - cpu)
        if not part.is_anchor:
            for name in _Counted._SUMMED:
                setattr(done, name, getattr(done, name) + getattr(summary.stats, name))
    stopped = stop.is_set()
    ran = [p for p in parts if p.name in results and not (stopped and p.is_anchor)]
    if not any(not p.is_anchor for p in ran):
        raise RuntimeError("the chunked run was stopped before any chunk ran: nothing to join")
    return finish_chunked(path, out_dir, work, ran, [results[p.name] for p in ran], config,
                          time.perf_counter() - started, "local", method, stopped)
