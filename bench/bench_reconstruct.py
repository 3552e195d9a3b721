"""Speed and accuracy of ``stream4d reconstruct`` (default backend) against pycolmap, same frames, same run.

For each real set in ../shared/data the frames are resized once to the
working resolution (longest side ``--max-side``) and written with a
cameras.json whose K is rescaled (bench/common.py). Then, in this process:

ours (fast)   ``stream4d.pipeline.reconstruct`` on that folder: default
              backend, known intrinsics, Gaussian cache and rerun recording
              off. Decode to output files, dense depth included.
ours (full)   the same with the Gaussian cache (splats.ply) and the rerun
              recording on, as ``stream4d reconstruct`` runs by default.
pycolmap      SIFT extraction -> sequential matching -> incremental mapping
              (sparse poses only), 2 threads, CPU, on the same PNGs. It gets
              the known camera as one PINHOLE camera (CameraMode.SINGLE),
              held fixed in bundle adjustment; its largest model is scored.

Both trajectories are scored by ``stream4d.evaluation.evaluate_trajectory``
against the set's reference poses (Umeyama Sim(3), ATE in reference units).

    python bench/bench_reconstruct.py
    python bench/bench_reconstruct.py --sets kitti_seq1,dtu_scan24 --max-side 512 --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script: bench/common.py

from common import (  # noqa: E402
    DEFAULT_SETS,
    Measurement,
    WorkingSet,
    calibration_ms,
    fmt,
    load_note,
    machine_info,
    markdown_table,
    measure,
    parse_sets,
    prepare_working_set,
    process_peak_rss_mb,
    usable_cores,
    write_docs_section,
)

from stream4d.evaluation import EvaluationError, TrajectoryResult, evaluate_trajectory  # noqa: E402
from stream4d.geometry import invert_se3  # noqa: E402
from stream4d.outputs import PosedFrame, read_cameras_json, read_trajectory  # noqa: E402

SECTION = "bench_reconstruct"
THREADS = 2  # the budget: 2 cores


@dataclass
class MethodResult:
    """One method on one set."""

    method: str
    measurement: Measurement
    frames: int
    posed: int
    trajectory: TrajectoryResult | None = None
    error: str | None = None  # why there is no ATE (too few posed frames, a crash...)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.measurement.seconds if self.measurement.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        m = self.measurement
        return {
            "method": self.method, "seconds": m.seconds, "cpu_seconds": m.cpu_seconds,
            "peak_rss_mb": m.peak_rss_mb, "start_rss_mb": m.samples[0] if m.samples else None,
            "frames": self.frames, "posed": self.posed, "fps": self.fps,
            "trajectory": None if self.trajectory is None else self.trajectory.to_dict(per_frame=False),
            "error": self.error, "stages": self.stages, "notes": self.notes,
        }


def score(pred: list[PosedFrame], gt: list[PosedFrame]) -> tuple[TrajectoryResult | None, str | None]:
    try:
        return evaluate_trajectory(pred, gt, match="image"), None
    except EvaluationError as exc:
        return None, str(exc)


# ---- ours ------------------------------------------------------------------------------

def warm_up_imports() -> None:
    """Import every module a run touches, so no run pays Python's one-time import cost
    (pycolmap is imported before any timing too)."""
    import align  # noqa: F401
    import memory.gaussians  # noqa: F401
    import recon.default.model  # noqa: F401
    import recon.quality  # noqa: F401
    import viz  # noqa: F401


def scored(result: MethodResult, error: str | None, pred: list[PosedFrame], ws: WorkingSet,
           nothing: str) -> MethodResult:
    """``result`` with its ATE against the set's reference, or why there is none."""
    if error:
        result.error = error
    elif pred:
        result.trajectory, result.error = score(pred, read_cameras_json(ws.cameras_json))
    else:
        result.error = nothing
    return result


def run_ours(ws: WorkingSet, out_dir: Path, max_side: int | None, full: bool, progress: bool) -> MethodResult:
    from stream4d.pipeline import ReconstructConfig, reconstruct

    config = ReconstructConfig(backend="default", gaussians=full, rrd=full).override({"ingest.resize": max_side})
    method = "ours (full)" if full else "ours (fast)"
    error = None
    summary = None
    with measure() as m:
        try:
            summary = reconstruct(ws.root, out_dir, config, progress=progress)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the traceback on stderr
            import traceback

            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
    wrote = (out_dir / "trajectory.json").exists() or (out_dir / "trajectory.tum").exists()
    pred = read_trajectory(out_dir) if wrote else []
    result = MethodResult(method, m, ws.num_frames, len(pred))
    if summary is not None:
        result.stages = {k: float(v) for k, v in summary.timings.items()}
        if summary.stats.frames_skipped:
            result.notes.append(f"{summary.stats.frames_skipped} frames skipped by the quality filter")
        if summary.stats.errors:
            result.notes.append(f"{len(summary.stats.errors)} window errors: {summary.stats.errors[0]}")
        if summary.stats.segment:
            result.notes.append(f"{summary.stats.segment + 1} world segments")
    return scored(result, error, pred, ws, "no posed frames")


# ---- pycolmap ----------------------------------------------------------------------------

def pycolmap_options(max_side: int, overlap: int):
    """Extraction, matching, pairing and mapping options: CPU, THREADS threads, known camera fixed."""
    import pycolmap

    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = THREADS
    extraction.use_gpu = False
    extraction.max_image_size = max_side  # the images are already this size: no further downscaling
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = THREADS
    matching.use_gpu = False
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = overlap
    pairing.num_threads = THREADS
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = THREADS
    mapping.mapper.num_threads = THREADS
    # The calibration is known: keep it fixed as our backend does.
    mapping.ba_refine_focal_length = False
    mapping.ba_refine_principal_point = False
    mapping.ba_refine_extra_params = False
    mapping.mapper.abs_pose_refine_focal_length = False
    mapping.mapper.abs_pose_refine_extra_params = False
    return extraction, matching, pairing, mapping


def colmap_posed_frames(reconstruction) -> list[PosedFrame]:
    """Registered images of a pycolmap Reconstruction as PosedFrames (COLMAP cameras use OpenCV axes)."""
    frames = []
    for image in reconstruction.images.values():
        if not image.has_pose:
            continue
        w2c = np.eye(4)
        w2c[:3, :4] = image.cam_from_world().matrix()  # [3, 4] world -> camera
        cam = reconstruction.cameras[image.camera_id]
        frames.append(PosedFrame(index=image.image_id, timestamp=float(image.image_id), image=image.name,
                                 c2w=invert_se3(w2c), K=cam.calibration_matrix(),
                                 width=cam.width, height=cam.height))
    return sorted(frames, key=lambda f: f.image)


def run_pycolmap(ws: WorkingSet, work: Path, max_side: int, overlap: int) -> MethodResult:
    import pycolmap

    work.mkdir(parents=True, exist_ok=True)
    database = work / "database.db"
    sparse = work / "sparse"
    sparse.mkdir(exist_ok=True)
    extraction, matching, pairing, mapping = pycolmap_options(max_side, overlap)
    K = ws.shared_K()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "PINHOLE"
    reader.camera_params = ",".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    stages: dict[str, float] = {}
    error = None
    reconstructions: dict = {}
    with measure() as m:
        try:
            t = time.perf_counter()
            pycolmap.extract_features(database, ws.root, image_names=ws.image_names,
                                      camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                      extraction_options=extraction, device=pycolmap.Device.cpu)
            stages["extract"] = time.perf_counter() - t
            t = time.perf_counter()
            pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                      device=pycolmap.Device.cpu)
            stages["match"] = time.perf_counter() - t
            t = time.perf_counter()
            reconstructions = pycolmap.incremental_mapping(database, ws.root, sparse, mapping)
            stages["map"] = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001 - reported in the table
            error = f"{type(exc).__name__}: {exc}"
    best = max(reconstructions.values(), key=lambda r: r.num_reg_images(), default=None)
    pred = colmap_posed_frames(best) if best is not None else []
    result = MethodResult("pycolmap", m, ws.num_frames, len(pred), stages=stages)
    if len(reconstructions) > 1:
        sizes = sorted((r.num_reg_images() for r in reconstructions.values()), reverse=True)
        result.notes.append(f"{len(reconstructions)} models ({'/'.join(map(str, sizes))} images): largest scored")
    return scored(result, error, pred, ws, "no reconstruction")


# ---- one set ----------------------------------------------------------------------------------

@dataclass
class SetResult:
    name: str
    units: str
    frames: int
    size: tuple[int, int]
    input_size: tuple[int, int]
    methods: list[MethodResult]
    loadavg: tuple[float, float, float]  # at the end of the set
    calibration_ms: float = 0.0  # common.calibration_ms() just before the set's runs

    def method(self, name: str) -> MethodResult:
        return next(m for m in self.methods if m.method == name)

    @property
    def ratio(self) -> float:
        """pycolmap seconds / ours (fast) seconds (wall clock): > 1 means we are faster."""
        return self.method("pycolmap").measurement.seconds / self.method("ours (fast)").measurement.seconds

    @property
    def cpu_ratio(self) -> float:
        """The same ratio in CPU seconds of the process: steadier than wall clock on a shared machine."""
        return self.method("pycolmap").measurement.cpu_seconds / self.method("ours (fast)").measurement.cpu_seconds

    def to_dict(self) -> dict:
        return {"set": self.name, "units": self.units, "frames": self.frames, "size": list(self.size),
                "input_size": list(self.input_size), "ratio_pycolmap_over_ours": self.ratio,
                "cpu_ratio_pycolmap_over_ours": self.cpu_ratio,
                "loadavg": list(self.loadavg), "calibration_ms": self.calibration_ms,
                "methods": [m.to_dict() for m in self.methods]}


def bench_set(name: str, work: Path, max_side: int, overlap: int, progress: bool) -> SetResult:
    work.mkdir(parents=True, exist_ok=True)
    ws = prepare_working_set(name, work / "frames", max_side)
    print(f"{name}: {ws.num_frames} frames {ws.input_size[0]}x{ws.input_size[1]} -> "
          f"{ws.size[0]}x{ws.size[1]} in {ws.root}", flush=True)
    calibration = calibration_ms()
    methods = [
        run_ours(ws, work / "ours_fast", max_side, full=False, progress=progress),
        run_ours(ws, work / "ours_full", max_side, full=True, progress=progress),
        run_pycolmap(ws, work / "pycolmap", max_side, overlap),
    ]
    return SetResult(name, ws.spec.units, ws.num_frames, ws.size, ws.input_size, methods, os.getloadavg(),
                     calibration)


# ---- report ------------------------------------------------------------------------------------

HEADERS = ["set", "frames", "method", "time (s)", "frames/s", "pycolmap / ours", "CPU (s)", "pycolmap / ours (CPU)",
           "posed", "ATE RMSE", "ATE / path", "ATE / extent", "peak RSS (MB)", "notes"]


def table_rows(results: list[SetResult]) -> list[list[str]]:
    rows = []
    for r in results:
        colmap = r.method("pycolmap").measurement
        for m in r.methods:
            t = m.trajectory
            notes = list(m.notes)
            if m.error:
                notes.insert(0, m.error)
            if m.method == "pycolmap" and m.stages:
                notes.insert(0, "extract/match/map " + "/".join(f"{m.stages.get(k, float('nan')):.1f}"
                                                                  for k in ("extract", "match", "map")) + " s")
            rows.append([
                f"{r.name} ({r.units})", f"{r.frames} @ {r.size[0]}x{r.size[1]}", m.method,
                f"{m.measurement.seconds:.2f}", f"{m.fps:.2f}",
                f"{colmap.seconds / m.measurement.seconds:.2f}x" if m.method != "pycolmap" else "1",
                f"{m.measurement.cpu_seconds:.1f}",
                f"{colmap.cpu_seconds / m.measurement.cpu_seconds:.2f}x" if m.method != "pycolmap" else "1",
                f"{m.posed}/{m.frames}",
                fmt(t.ate_rmse, 3) if t else "-",
                f"{100 * t.ate_rmse_rel_path:.2f} %" if t else "-",
                f"{100 * t.ate_rmse_rel_extent:.2f} %" if t else "-",
                f"{m.measurement.peak_rss_mb:.0f}", "; ".join(notes),
            ])
    return rows


def verdicts(results: list[SetResult]) -> list[str]:
    """The issue's bar, per set: ours (fast) at least as fast as pycolmap, target 2x, >= 3 frames/s."""
    lines = []
    for r in results:
        fast = r.method("ours (fast)")
        ratio = r.ratio
        lines.append(f"{r.name}: pycolmap/ours = {ratio:.2f}x wall clock "
                     f"({'meets' if ratio >= 1 else 'MISSES'} >= 1x, {'meets' if ratio >= 2 else 'misses'} 2x target), "
                     f"{r.cpu_ratio:.2f}x in CPU time; "
                     f"{fast.fps:.2f} frames/s ({'meets' if fast.fps >= 3 else 'MISSES'} >= 3); "
                     f"machine calibration {r.calibration_ms:.0f} ms")
    return lines


def print_rich(results: list[SetResult], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("set", "method", "notes") else "right",
                         overflow="fold")
    for i, row in enumerate(table_rows(results)):
        table.add_row(*row, end_section=(i % 3 == 2))
    console = Console(width=max(Console().width, 220))
    console.print(table)
    for line in verdicts(results):
        console.print(line)


def docs_body(results: list[SetResult], command: str, machine: dict, note: str | None, max_side: int,
              overlap: int, started: datetime, total_peak_rss: float, baseline_rss: float) -> str:
    lines = [
        "## Reconstruct: default backend vs pycolmap (`bench/bench_reconstruct.py`)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine['nproc']} cores ({machine['cpu']}, "
        f"{machine['memory_gb']} GB RAM, Python {machine['python']}).",
        "",
        "```",
        command,
        "```",
        "",
    ]
    if note:
        lines += [f"**Note:** {note}.", ""]
    lines += [
        f"Frames resized once to max side {max_side} px (area interpolation) and written as PNG; every method "
        "reads those files in the same process. llff_fern uses `images_4` (1008x756, `cameras.json`) resized "
        "to 512x384. *ours (fast)*: `reconstruct()` with the default backend and known intrinsics, Gaussian "
        "cache and rerun recording off (decode to outputs, dense depth included). *ours (full)*: the same with "
        "splats.ply and recording.rrd on. *pycolmap*: `extract_features` (SIFT, pycolmap defaults, 2 threads) + "
        f"`match_sequential` (overlap {overlap}) + `incremental_mapping` (2 threads), sparse poses only, given "
        "the known PINHOLE camera (CameraMode.SINGLE) held fixed; its largest model is scored. ATE is the RMSE "
        "of camera centres after a Umeyama Sim(3) onto the reference (`evaluate_trajectory`), in the set's "
        "units, also as a fraction of the reference path length and extent. *pycolmap / ours* > 1 means "
        "ours is faster. *CPU (s)* is the user + system CPU time of the process (all its threads) during "
        "the run: on a machine shared with other work it is steadier than wall clock. Peak RSS is the highest "
        "sampled RSS of the process during that run; it includes what earlier runs in the same process left "
        "allocated, so only the first set's rows isolate one run. llff_fern's reference poses are COLMAP's own "
        "(pseudo ground truth), which favours pycolmap's ATE there.",
        "",
        markdown_table(HEADERS, table_rows(results)),
        "",
        "Against the bar (ours (fast) at least as fast as pycolmap, target 2x, >= 3 frames/s). *Machine "
        "calibration* is `common.calibration_ms()` (median time of one OpenCV SIFT on a fixed 512x384 texture) "
        "just before the set: the machine's speed drifts by tens of percent from hour to hour, and the "
        "frames/s bar is absolute.",
        "",
        *[f"- {line}" for line in verdicts(results)],
        "",
        f"Peak RSS of the whole benchmark process: {total_peak_rss:.0f} MB; {baseline_rss:.0f} MB of it is the "
        "imported libraries (torch, rerun, pycolmap, Open3D...) before any run.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS),
                        help="comma list of sets (also llff_fern_8: images_8) or 'all' (default: %(default)s)")
    parser.add_argument("--max-side", type=int, default=512, help="working resolution: longest side in px")
    parser.add_argument("--overlap", type=int, default=10, help="pycolmap sequential matching overlap")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the {SECTION} section of docs/benchmarks.md")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep frames and outputs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        names = parse_sets(args.sets)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_side < 16:
        parser.error(f"--max-side {args.max_side}: must be >= 16 px")
    if args.overlap < 1:
        parser.error(f"--overlap {args.overlap}: must be >= 1")

    import pycolmap

    pycolmap.logging.minloglevel = 2  # warnings and errors only: COLMAP's INFO log is per image
    warm_up_imports()
    baseline_rss = psutil.Process().memory_info().rss / 2**20  # imports (torch, rerun, pycolmap...) before any run
    started = datetime.now(timezone.utc)
    machine = machine_info()
    loads = [machine["loadavg"][0]]
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_reconstruct_"))
    results = []
    try:
        for name in names:
            results.append(bench_set(name, root / name, args.max_side, args.overlap, progress=not args.quiet))
            loads.append(results[-1].loadavg[0])
    finally:
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    note = load_note(loads, usable_cores())
    title = f"reconstruct vs pycolmap at max side {args.max_side} px, {machine['nproc']} cores"
    print_rich(results, title)
    total_peak = process_peak_rss_mb()
    print(f"peak RSS of the process: {total_peak:.0f} MB (after imports, before any run: {baseline_rss:.0f} MB)")
    if note:
        print(f"note: {note}")
    command = "python bench/bench_reconstruct.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "command": command, "started": started.isoformat(),
                                         "note": note, "peak_rss_mb": total_peak, "baseline_rss_mb": baseline_rss,
                                         "sets": [r.to_dict() for r in results]}, indent=1, default=str))
    if args.write_docs:
        path = write_docs_section(SECTION, docs_body(results, command.strip(), machine, note, args.max_side,
                                                     args.overlap, started, total_peak, baseline_rss))
        print(f"wrote section {SECTION} of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
