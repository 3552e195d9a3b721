"""One long video in overlapping chunks: each chunk reconstructed on its own (on different
machines: ``server.ray_chunks`` runs them as Ray tasks), then joined into one trajectory and
one point cloud.

A chunk is the frames ``[start, stop)`` of the video (decode order); consecutive chunks share
``overlap`` frames. Each chunk is a whole run of the pipeline, with its own windows, alignment
and world. ``join_chunks`` maps each chunk into one world by a Sim(3) fitted on frames it
shares: with an anchor run (the whole video at a stride, e.g. every 10th frame: a short run
that can go alongside the chunks), onto the anchor's poses of the anchor frames inside the
chunk, spread over its whole length; without one, onto chunk k-1's joined poses of the
``overlap`` frames, which carries each join's error into the next and, on a lever arm of a
chunk's length, amplifies it. The Sim(3): scale from the spread of the camera centres,
rotation and translation from the centres plus points along each camera's axes (as ATE
evaluation maps a trajectory onto its reference). A frame in two chunks keeps the earlier
chunk's pose. This is a pose-level join after the fact, not the aligner's layer-wise
point-map alignment.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from recon.ingest import FrameSource, IngestOptions, RawFrame, SourceInfo, open_source
from stream4d.evaluation.trajectory import pose_sim3
from stream4d.geometry import Sim3, camera_centres, umeyama
from stream4d.outputs import (
    POINTS_PLY,
    RUN_JSON,
    TRAJECTORY_JSON,
    OutputWriter,
    PosedFrame,
    read_points_ply,
    read_trajectory_json,
)

MIN_OVERLAP = 3  # a Sim(3) needs three shared posed frames


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


@dataclass
class JoinReport:
    """How the chunks were joined (``run.json`` ``chunks`` of the joined output)."""

    chunks: list[dict[str, Any]] = field(default_factory=list)  # per chunk: range, frames, shared, scale
    frames: int = 0


def _main_segment(frames: list[PosedFrame]) -> dict[str, PosedFrame]:
    """The frames of the segment holding most of them, by name, in segment 0."""
    if not frames:
        return {}
    main = np.bincount([f.segment for f in frames]).argmax()
    return {f.image: replace(f, segment=0) for f in frames if f.segment == main}


def anchor_config(config: Any, stride: int) -> Any:
    """The config of the anchor run: ``config`` on every ``stride``-th frame of the whole input."""
    return replace(config, ingest=replace(config.ingest, stride=stride))


def _sim3_onto(prev: np.ndarray, cur: np.ndarray) -> Sim3:
    """Sim(3) taking poses ``cur [M, 4, 4]`` onto ``prev [M, 4, 4]`` (the same frames)."""
    centres = umeyama(camera_centres(cur), camera_centres(prev))
    return pose_sim3(cur, prev, centres)


def join_chunks(chunk_dirs: list[str | Path], chunks: list[Chunk], out_dir: str | Path,
                anchor_dir: str | Path | None = None) -> JoinReport:
    """Join the chunk outputs (trajectory.json, points.ply) in ``out_dir`` (see the module doc).

    With ``anchor_dir`` (the output of a sparse run over the whole input, e.g. every 10th frame:
    ``anchor_config``), every chunk is mapped onto the anchor's poses of the frames it shares
    with it, spread over the whole chunk, instead of onto the previous chunk's poses of the
    overlap: errors of one join do not carry into the next, and the lever arm is the chunk's
    length. Frame indices in the joined trajectory are decode positions in the whole input
    (``chunk.start`` + the chunk's own index). A chunk sharing fewer than ``MIN_OVERLAP`` posed
    frames with what it is fitted to cannot be joined: ``ValueError``.
    """
    if len(chunk_dirs) != len(chunks) or not chunks:
        raise ValueError(f"{len(chunk_dirs)} chunk outputs for {len(chunks)} chunks")
    out = Path(out_dir)
    report = JoinReport()
    joined: dict[str, PosedFrame] = {}  # frame name -> pose in the joined world
    anchor = {} if anchor_dir is None else _main_segment(read_trajectory_json(Path(anchor_dir) / TRAJECTORY_JSON))
    points, colors = [], []
    next_segment = 1 if anchor else 0  # with an anchor, its world is segment 0
    for k, (chunk_dir, chunk) in enumerate(zip(chunk_dirs, chunks)):
        frames = read_trajectory_json(Path(chunk_dir) / TRAJECTORY_JSON)
        shared = [f for f in frames if f.image in joined]
        target = anchor or joined
        fitted = [f for f in frames if f.image in target]
        seg_map: dict[int, int] = {}  # the chunk's segments -> joined segments
        if k == 0 and not anchor:
            sim3 = Sim3.identity()
        else:
            if len(fitted) < MIN_OVERLAP:
                what = "the anchor run" if anchor else "the chunks before it"
                raise ValueError(f"chunk {k} ({chunk.start}:{chunk.stop}) shares {len(fitted)} posed frames with "
                                 f"{what}; joining needs {MIN_OVERLAP}")
            main = np.bincount([f.segment for f in fitted]).argmax()  # fitted on one world segment
            fitted = [f for f in fitted if f.segment == main]
            sim3 = _sim3_onto(np.stack([target[f.image].c2w for f in fitted]), np.stack([f.c2w for f in fitted]))
            seg_map[int(main)] = target[fitted[0].image].segment  # the other segments get new ids
        for f in frames:
            if f.segment not in seg_map:
                seg_map[f.segment] = next_segment
                next_segment += 1
        for f in frames:
            if f.image in joined:
                continue
            joined[f.image] = PosedFrame(chunk.start + f.index, f.timestamp, f.image, sim3.apply_c2w(f.c2w), f.K,
                                         f.width, f.height, seg_map[f.segment], f.pose_kind)
        ply = Path(chunk_dir) / POINTS_PLY
        if ply.is_file():
            p, c = read_points_ply(ply)
            points.append(sim3.apply(p))
            colors.append(c)
        report.chunks.append({"start": chunk.start, "stop": chunk.stop, "posed": len(frames), "shared": len(shared),
                              "fitted_on": len(fitted) if k or anchor else 0, "sim3_scale": sim3.s})
    out.mkdir(parents=True, exist_ok=True)
    with OutputWriter(out) as writer:
        for f in sorted(joined.values(), key=lambda f: f.index):
            writer.add_frame(f)
        if points:
            writer.write_points(np.concatenate(points), np.concatenate(colors))
    report.frames = len(joined)
    (out / RUN_JSON).write_text(json.dumps({"chunked": asdict(report)}, indent=1), encoding="utf-8")
    return report
