"""Joining chunk runs into one world: a Sim(3) pose graph over the chunks (``align.posegraph``).

Each chunk run (and the optional anchor run over the whole video at a stride) has a world of
its own. Every pair of runs that posed the same frames gives one measured Sim(3) between their
worlds, fitted on those frames' poses, with its noise taken from how well the fit explains them:

- consecutive chunks: the ``overlap`` frames they share (a short stretch of the path: its
  rotation and scale are poorly fixed, which the noise says);
- the anchor and a chunk: the anchor frames inside the chunk, spread over its whole length.

The graph's nodes are the runs' worlds (the anchor's, or the first chunk's, holds the gauge);
its edges are those measurements, each whitened by its own noise, and ``PoseGraph.optimise``
finds the placements that agree best with all of them (an overlap edge the others contradict
is dropped as an outlier when there is an anchor). ``method="anchor"`` keeps the older join:
each chunk mapped onto the anchor alone (or, without one, chained by its overlap with the chunk
before), which is the graph's solution with only one edge per chunk.

Outputs in the joined world: trajectory.json / .tum (frame indices are decode positions in the
whole video; a frame in two chunks keeps the earlier chunk's pose), points.ply and splats.ply
(the chunks' maps moved into the joined world and concatenated: where chunks overlap, their
Gaussians of the same surface both stay) and, when asked, recording.rrd re-logged from the
joined outputs (every frame's camera, the final path, the joined Gaussians). The report's
``frame_counts`` count each frame of the video from that same chunk (``pipeline.counted``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from align.posegraph import Edge, PoseGraph
from stream4d.contracts import POSE_TRACKED, FramePose, GaussianSnapshot
from stream4d.evaluation.trajectory import pose_sim3
from stream4d.geometry import Sim3, camera_centres, rotation_angle_deg, umeyama
from stream4d.outputs import (
    POINTS_PLY,
    SPLATS_PLY,
    TRAJECTORY_JSON,
    OutputWriter,
    PosedFrame,
    read_points_ply,
    read_trajectory_json,
)
from stream4d.pipeline.counted import count_once

MIN_OVERLAP = 3  # a Sim(3) needs three shared posed frames
JOIN_METHODS = ("pose_graph", "anchor")


@dataclass
class JoinReport:
    """How the chunks were joined (``run.json`` ``chunked.join``)."""

    method: str = "pose_graph"
    chunks: list[dict[str, Any]] = field(default_factory=list)  # per chunk: range, frames, shared, scale
    edges: list[dict[str, Any]] = field(default_factory=list)  # per measured edge: runs, frames, noise
    pose_graph: dict[str, Any] | None = None  # iterations, cost before/after, edges dropped
    frames: int = 0
    pose_kinds: dict[str, int] = field(default_factory=dict)  # joined frames per pose_kind
    frame_counts: dict[str, int] = field(default_factory=dict)  # per-frame counters, each frame once (count_once)
    gaussians: int = 0
    points: int = 0
    left_out: list[dict[str, Any]] = field(default_factory=list)  # chunks a stopped run could not place


@dataclass(frozen=True)
class _Fit:
    """A measured Sim(3) taking run ``j``'s world into run ``i``'s, fitted on ``frames`` shared frames."""

    i: int
    j: int
    Z: Sim3
    frames: int
    sigma: tuple[float, float, float]  # rotation rad, translation (j's world units), log scale
    rms: tuple[float, float]  # centre residual (i's units), rotation residual (deg)


def _main_segment(frames: list[PosedFrame]) -> dict[str, PosedFrame]:
    """The frames of the segment holding most of them, by name, in segment 0."""
    if not frames:
        return {}
    main = np.bincount([f.segment for f in frames]).argmax()
    return {f.image: replace(f, segment=0) for f in frames if f.segment == main}


def _sim3_onto(target: np.ndarray, source: np.ndarray) -> Sim3:
    """Sim(3) taking poses ``source [M, 4, 4]`` onto ``target [M, 4, 4]`` (the same frames): scale
    from the centres' spread, rotation and translation from centres plus points along each camera's
    axes (as ATE evaluation maps a trajectory onto its reference)."""
    centres = umeyama(camera_centres(source), camera_centres(target))
    return pose_sim3(source, target, centres)


def _fit(i: int, j: int, target: dict[str, PosedFrame], source: dict[str, PosedFrame]) -> _Fit | None:
    """The Sim(3) from run ``j``'s world (``source``) into run ``i``'s (``target``) on the frames both
    posed, and its noise; None with fewer than ``MIN_OVERLAP`` shared frames.

    Noise of the fitted similarity from the residuals of the M frames: centre residual r_t, spread
    of the centres d_c; rotation error ~ max(r_rot, r_t / d_c) / sqrt(M), log-scale error ~
    r_t / (d_c sqrt(M)); the translation error at run j's origin (what the edge's translation is)
    adds the rotation and scale errors on the lever arm from the shared frames to that origin.
    """
    names = [n for n in source if n in target]
    if len(names) < MIN_OVERLAP:
        return None
    tgt = np.stack([target[n].c2w for n in names])
    src = np.stack([source[n].c2w for n in names])
    Z = _sim3_onto(tgt, src)
    mapped = Z.apply_c2w(src)
    m = len(names)
    centres = camera_centres(tgt)
    r_t = float(np.sqrt(np.mean(np.sum((camera_centres(mapped) - centres) ** 2, axis=1))))
    angles = np.radians(rotation_angle_deg(np.swapaxes(tgt[:, :3, :3], -1, -2) @ mapped[:, :3, :3]))
    r_rot = float(np.sqrt(np.mean(angles ** 2)))
    centroid = centres.mean(axis=0)
    spread = max(float(np.sqrt(np.mean(np.sum((centres - centroid) ** 2, axis=1)))), 1e-12)
    sigma_rot = max(r_rot, r_t / spread) / np.sqrt(m)
    sigma_scale = r_t / (spread * np.sqrt(m))
    lever = float(np.linalg.norm(Z.t - centroid))
    sigma_t = float(np.sqrt(r_t ** 2 / m + ((sigma_rot + sigma_scale) * lever) ** 2)) / Z.s
    return _Fit(i, j, Z, m, (float(sigma_rot), sigma_t, float(sigma_scale)), (r_t, float(np.degrees(r_rot))))


def _placements(fits: list[_Fit], nodes: list[int], anchor: bool) -> dict[int, Sim3]:
    """Each node's world -> the joined world by chaining one fit per node: onto the anchor (node 0)
    when there is one, else onto the node before. The anchor join, and the pose graph's start."""
    place = {nodes[0]: Sim3.identity()}
    by_pair = {(f.i, f.j): f for f in fits}
    for n in nodes[1:]:
        fit = by_pair.get((0, n)) if anchor else by_pair.get((n - 1, n))
        place[n] = place[0 if anchor else n - 1].compose(fit.Z)
    return place


def _optimise(fits: list[_Fit], place: dict[int, Sim3], anchor: bool) -> tuple[dict[int, Sim3], dict[str, Any]]:
    """The placements that agree best with every measured edge (``align.posegraph``)."""
    graph = PoseGraph()
    for n, pose in place.items():
        graph.add_node(n, pose)
    for f in fits:
        # With an anchor, a chunk's anchor edge is the backbone; an overlap edge the rest contradicts is dropped.
        kind = "loop" if anchor and f.i != 0 else "sequential"
        graph.add_edge(Edge(f.i, f.j, f.Z, kind=kind, sigma=f.sigma))
    result = graph.optimise()
    record = {"nodes": result.nodes, "edges": len(fits), "iterations": result.iterations,
              "cost_before": result.cost_before, "cost_after": result.cost_after,
              "seconds": round(result.seconds, 4),
              "dropped": [f"{e.i}-{e.j}" for e in result.rejected]}
    return dict(graph.poses), record


def join_chunks(chunk_dirs: list[str | Path], chunks: list[Any], out_dir: str | Path,
                anchor_dir: str | Path | None = None, method: str = "pose_graph",
                rrd: str | Path | None = None, leave_out_unplaceable: bool = False) -> JoinReport:
    """Join the chunk outputs in ``out_dir`` (see the module doc); ``chunks[k]`` has ``start``/``stop``.

    With ``anchor_dir`` (a sparse run over the whole input: ``chunks.anchor_config``) every chunk is
    also measured against the anchor's world, which becomes the joined world. ``rrd``: write a
    recording of the joined outputs there. A chunk that cannot be placed (fewer than
    ``MIN_OVERLAP`` posed frames shared with the anchor, or without one with the chunk before):
    ``ValueError``, or with ``leave_out_unplaceable`` (a stopped run: chunks cut short) it is left
    out, and without an anchor every chunk after it too (``JoinReport.left_out``).
    """
    if method not in JOIN_METHODS:
        raise ValueError(f"join method must be one of {JOIN_METHODS}, got {method!r}")
    if len(chunk_dirs) != len(chunks) or not chunks:
        raise ValueError(f"{len(chunk_dirs)} chunk outputs for {len(chunks)} chunks")
    has_anchor = anchor_dir is not None
    runs = [read_trajectory_json(Path(d) / TRAJECTORY_JSON) for d in chunk_dirs]
    if leave_out_unplaceable:
        kept = _placeable(runs, None if anchor_dir is None else read_trajectory_json(Path(anchor_dir) / TRAJECTORY_JSON))
        if not kept:
            raise ValueError("no chunk posed enough frames to be joined")
        if len(kept) < len(chunks):
            report = join_chunks([chunk_dirs[k] for k in kept], [chunks[k] for k in kept], out_dir, anchor_dir,
                                 method, rrd)
            report.left_out = [{"start": c.start, "stop": c.stop} for k, c in enumerate(chunks) if k not in kept]
            # The left-out chunks' frames were received too: counted where no kept chunk posed them.
            placed = [frames if k in kept else [] for k, frames in enumerate(runs)]
            report.frame_counts = count_once(chunk_dirs, [c.start for c in chunks], _kept_copies(placed, chunks))
            return report
    main = [_main_segment(frames) for frames in runs]  # fitted on each run's main world segment
    first = int(has_anchor)  # node of chunk 0
    nodes = list(range(first + len(chunks)))
    fits = [f for k in range(1, len(chunks)) if (f := _fit(first + k - 1, first + k, main[k - 1], main[k]))]
    anchor: dict[str, PosedFrame] = {}
    if has_anchor:
        anchor = _main_segment(read_trajectory_json(Path(anchor_dir) / TRAJECTORY_JSON))
        fits = [f for k in range(len(chunks)) if (f := _fit(0, first + k, anchor, main[k]))] + fits
    for k, chunk in enumerate(chunks):  # each chunk must be placeable by one edge, as the anchor join places it
        target = anchor if has_anchor else (main[k - 1] if k else None)
        shared = 0 if target is None else sum(n in target for n in main[k])
        if target is not None and shared < MIN_OVERLAP:
            what = "the anchor run" if has_anchor else "the chunk before it"
            raise ValueError(f"chunk {k} ({chunk.start}:{chunk.stop}) shares {shared} posed frames with {what}; "
                             f"joining needs {MIN_OVERLAP}")
    place = _placements(fits, nodes, has_anchor)
    report = JoinReport(method)
    if method == "pose_graph" and len(nodes) > 1:
        place, report.pose_graph = _optimise(fits, place, has_anchor)
    report.edges = [{"runs": [_run_name(f.i, has_anchor), _run_name(f.j, has_anchor)], "frames": f.frames,
                     "sigma_rot_deg": float(np.degrees(f.sigma[0])), "sigma_log_scale": f.sigma[2],
                     "rms_centre": f.rms[0], "rms_rot_deg": f.rms[1]} for f in fits]
    sims = [place[first + k] for k in range(len(chunks))]
    copies = _kept_copies(runs, chunks)
    joined = _joined_frames(runs, main, chunks, sims, copies)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with OutputWriter(out) as writer:
        for f in joined:
            writer.add_frame(f)
        report.points = _join_points(chunk_dirs, sims, writer)
    snapshot = _join_splats(chunk_dirs, sims, out / SPLATS_PLY)
    report.gaussians = 0 if snapshot is None else snapshot.num
    report.frames = len(joined)
    report.pose_kinds = dict(Counter(f.pose_kind for f in joined))
    report.frame_counts = count_once(chunk_dirs, [c.start for c in chunks], copies)
    placed_by = {f.j: f.frames for f in fits if (f.i == 0 if has_anchor else f.i == f.j - 1)}
    for k, (chunk, sim) in enumerate(zip(chunks, sims)):
        report.chunks.append({"start": chunk.start, "stop": chunk.stop, "posed": len(runs[k]),
                              "shared": sum(f.image in main[k - 1] for f in runs[k]) if k else 0,
                              "fitted_on": placed_by.get(first + k, 0), "sim3_scale": sim.s})
    if rrd is not None:
        record_joined(Path(rrd), joined, snapshot)
    return report


def _placeable(runs: list[list[PosedFrame]], anchor: list[PosedFrame] | None) -> list[int]:
    """The chunks a join can place: sharing ``MIN_OVERLAP`` posed frames with the anchor, or without
    one, the first chunk that posed a frame and each next one sharing them with the one before."""
    main = [_main_segment(frames) for frames in runs]
    if anchor is not None:
        target = _main_segment(anchor)
        return [k for k, m in enumerate(main) if sum(n in target for n in m) >= MIN_OVERLAP]
    kept = [0] if main and main[0] else []
    for k in range(1, len(main)):
        if kept and kept[-1] == k - 1 and sum(n in main[k - 1] for n in main[k]) >= MIN_OVERLAP:
            kept.append(k)
    return kept


def _run_name(node: int, has_anchor: bool) -> str:
    return "anchor" if has_anchor and node == 0 else f"chunk {node - int(has_anchor)}"


def _kept_copies(runs: list[list[PosedFrame]], chunks: list[Any]) -> dict[int, int]:
    """Decode position of each posed frame -> the chunk whose copy the join keeps: the first that posed it."""
    kept: dict[int, int] = {}
    for k, (frames, chunk) in enumerate(zip(runs, chunks)):
        for f in frames:
            kept.setdefault(chunk.start + f.index, k)
    return kept


def _joined_frames(runs: list[list[PosedFrame]], main: list[dict[str, PosedFrame]], chunks: list[Any],
                   sims: list[Sim3], copies: dict[int, int]) -> list[PosedFrame]:
    """Every chunk's frames in the joined world, by decode position; a frame two chunks posed keeps
    the copy ``copies`` names (``_kept_copies``). Each chunk's main segment is the joined segment 0;
    its other segments (tracking lost inside the chunk) get new ids, still moved by the chunk's Sim(3)."""
    joined: dict[int, PosedFrame] = {}
    next_segment = 1
    for k, (frames, fitted, chunk, sim) in enumerate(zip(runs, main, chunks, sims)):
        seg_map: dict[int, int] = {}
        if fitted:
            seg_map[next(f.segment for f in frames if f.image in fitted)] = 0
        for f in frames:
            if f.segment not in seg_map:
                seg_map[f.segment] = next_segment
                next_segment += 1
            index = chunk.start + f.index
            if copies[index] == k:
                joined[index] = PosedFrame(index, f.timestamp, f.image, sim.apply_c2w(f.c2w), f.K, f.width, f.height,
                                           seg_map[f.segment], f.pose_kind)
    return sorted(joined.values(), key=lambda f: f.index)


def _join_points(chunk_dirs: list[str | Path], sims: list[Sim3], writer: OutputWriter) -> int:
    points, colors = [], []
    for chunk_dir, sim in zip(chunk_dirs, sims):
        ply = Path(chunk_dir) / POINTS_PLY
        if ply.is_file():
            p, c = read_points_ply(ply)
            points.append(sim.apply(p.astype(np.float64)))
            colors.append(c)
    if not points:
        return 0
    cloud = np.concatenate(points)
    writer.write_points(cloud, np.concatenate(colors))
    return len(cloud)


def _join_splats(chunk_dirs: list[str | Path], sims: list[Sim3], path: Path) -> GaussianSnapshot | None:
    """The chunks' splats.ply moved into the joined world (means, scales, orientations) and
    concatenated into ``path``; None when no chunk kept a Gaussian cache."""
    from memory.gaussians.export import read_splats_ply, write_splats_ply
    from memory.gaussians.store import transform_columns

    parts = []
    for chunk_dir, sim in zip(chunk_dirs, sims):
        ply = Path(chunk_dir) / SPLATS_PLY
        if not ply.is_file():
            continue
        s = read_splats_ply(ply)
        cols = {"means": s.means, "scales": s.scales, "quats": s.quats}
        transform_columns(cols, sim)
        parts.append(s)
    if not parts:
        return None
    snapshot = GaussianSnapshot(*(np.concatenate([getattr(p, name) for p in parts])
                                  for name in ("means", "colors", "opacities", "scales", "quats", "timestamps")))
    write_splats_ply(path, snapshot)
    return snapshot


def record_joined(path: Path, frames: list[PosedFrame], snapshot: GaussianSnapshot | None) -> Path:
    """A rerun recording of a joined run at ``path``: each frame's camera at its frame time, the
    joined Gaussians and every segment's final path (the chunks' own recordings are in their own
    worlds, so the joined one is logged anew from the joined outputs)."""
    from viz import RerunSession, StreamRecorder, VizConfig, build_blueprint

    config = VizConfig(mode="none", rrd_path=path, announce=False)
    session = RerunSession(config, build_blueprint(config))
    recorder = StreamRecorder(session.recording, config)
    try:
        for f in frames:
            if np.isnan(f.K).any():  # no intrinsics: no frustum to draw
                continue
            size = (f.width, f.height)
            recorder.record_pose(FramePose(f.index, f.timestamp, f.c2w, f.K, size, POSE_TRACKED, f.segment, True))
        if snapshot is not None and snapshot.num:
            recorder.record_gaussians(snapshot, 0, 0.0, budget=config.final_point_budget)
        if frames:
            recorder.record_final(frames, frames[-1].index, frames[-1].timestamp)
    finally:
        session.finish()
    return path
