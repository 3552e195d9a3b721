"""Loop closure ablation: each input reconstructed with and without the global map (docs/global_map.md).

For each dataset folder (images + ``cameras.json``) it runs ``stream4d reconstruct`` once with
loop closure and once with ``--no-loop-closure`` and reports: frames posed, end-point drift
(a similarity fitted on the first ``--head`` frames, then the last frame's centre error, % of
the ground-truth path), ATE after one similarity over all frames (% of the path and of the
extent), segments, loops accepted / rejected, relocated frames, global-map seconds per
keyframe, the mean pose-graph solve time, the wall time, and memory: the resident size of the
reconstruct process sampled every ``--sample-s`` seconds together with the frames it has posed
(lines of ``trajectory.tum``), reported as the peak until the ground truth's first return to its
start frame has been posed ("first loop") and the peak after it ("end"), with the keyframes the
database holds at the end. The samples are kept in ``<out>/<run>/rss.json``.

    python bench/bench_loops.py DATASET [DATASET ...] [--head 10] [--out DIR] [--runs on off]
    python bench/bench_loops.py /tmp/orbit250 /work/shared/data/strecha_castle_p30

Per-loop errors without re-running the window model: ``--record DIR`` runs one dataset once with
``--no-loop-closure`` and pickles every window prediction the aligner received (and its config);
``--replay DIR`` feeds them to a fresh aligner with loop closure on and prints, for every loop edge
(and re-attachment link) the pose graph was given, its error against the ground truth (the measured
``Z = T_a^-1 T_b`` against the ground-truth relative pose of the two windows' anchor frames, the last
new frame of each; its scale against the ratio of the two windows' own similarities onto the ground truth), its
own sigmas, and whether the graph kept it; then the ATE with and without loop closure, and what one
sequential alignment gets wrong (scale and rotation between consecutive windows' similarities onto
the ground truth). ``--loop-config JSON`` replays with other loop-closure settings
(``align.config.LoopClosureConfig`` fields); ``'{"optimise_above": 1e9}'`` keeps every loop from
moving anything, so every loop is scored against the chain without loop closure. A recording made
from an image folder is replayed against the set it came from (same file order).

    python bench/bench_loops.py /tmp/orbit250 --record /tmp/orbit250_preds
    python bench/bench_loops.py /tmp/orbit250 --replay /tmp/orbit250_preds [--loop-config '{"chi_limit": 4}']

Each window's own accuracy, apart from how the windows were chained: ``--window-errors DIR
[DIR ...]`` takes recordings (of the same dataset, e.g. made by two versions of the window
model; windows are paired by position, and pairs over different frames are left out of the
comparison) and prints, per window, the RMS error of its posed views' centres after one similarity of
that window alone onto the ground truth, % of the window's own ground-truth path (for a video, the
``cameras.json`` beside it); given two recordings, how many windows differ and which recording is
better on them.

    python bench/bench_loops.py /tmp/orbit250 --window-errors /tmp/preds_a /tmp/preds_b

Make a double orbit with exact cameras:
    stream4d synth --trajectory orbit --frames 1000 --traj-kw arc_deg=720 --noise 2 --out /tmp/orbit1000
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from stream4d.geometry import camera_centres, path_length, rotation_angle_deg, umeyama  # noqa: E402
from stream4d.outputs import read_cameras_json, read_trajectory  # noqa: E402


def score(out: Path, reference: Path, head: int) -> dict:
    """Drift and ATE of a run folder against ``cameras.json`` (frames matched by index)."""
    est = {f.index: f for f in read_trajectory(out)}
    ref = read_cameras_json(reference)
    idx = sorted(set(est) & set(range(len(ref))))
    E = np.array([est[i].c2w[:3, 3] for i in idx])
    G = np.array([ref[i].c2w[:3, 3] for i in idx])
    all_ref = np.array([f.c2w[:3, 3] for f in ref])
    path = float(np.linalg.norm(np.diff(all_ref, axis=0), axis=1).sum())
    extent = float(np.linalg.norm(np.ptp(all_ref, axis=0)))
    first = umeyama(E[:head], G[:head])
    whole = umeyama(E, G)
    ate = float(np.sqrt(((whole.apply(E) - G) ** 2).sum(1).mean()))
    run = json.loads((out / "run.json").read_text())
    loops = run.get("loop_closure") or {}
    solves = loops.get("optimisations", [])
    return {"posed": f"{len(idx)}/{len(ref)}",
            "end_drift_pct_path": 100 * float(np.linalg.norm(first.apply(E[-1:]) - G[-1:])) / path,
            "ate_pct_path": 100 * ate / path, "ate_pct_extent": 100 * ate / extent,
            "segments": len({est[i].segment for i in idx}),
            "loops": f"{loops.get('loops_accepted', '-')}/{loops.get('loops_rejected', '-')}",
            "relocated": len(loops.get("frames_relocated", [])),
            "s_per_keyframe": loops.get("seconds_per_keyframe"),
            "solve_s": float(np.mean([s["seconds"] for s in solves])) if solves else None,
            "keyframes": loops.get("keyframes"), "database_mb": loops.get("database_bytes", 0) / 1e6 or None,
            "stored_frames": loops.get("stored_frames"),
            "wall_s": run["timings_s"]["total"]}


def first_return(reference: Path) -> int:
    """Index of the first frame that comes back to the start (within 2 % of the extent of frame 0's
    centre and 20 degrees of its viewing direction, after the path went farther than a quarter of the
    extent): the end of the first loop (a figure-eight's crossing at half a lap looks elsewhere)."""
    c2w = np.array([f.c2w for f in read_cameras_json(reference)])
    centres = c2w[:, :3, 3]
    extent = float(np.linalg.norm(np.ptp(centres, axis=0)))
    away = np.linalg.norm(centres - centres[0], axis=1)
    same_view = c2w[:, :3, 2] @ c2w[0, :3, 2] >= np.cos(np.radians(20))
    left = np.flatnonzero(away > 0.25 * extent)
    if not len(left):
        return len(centres) - 1
    back = np.flatnonzero((away <= 0.02 * extent) & same_view & (np.arange(len(centres)) > left[0]))
    return int(back[0]) if len(back) else len(centres) - 1


def _frames_posed(out: Path) -> int:
    try:
        with open(out / "trajectory.tum", encoding="utf-8") as f:
            return sum(1 for line in f if line.strip() and not line.startswith("#"))
    except OSError:
        return 0


def run_sampled(cmd: list[str], out: Path, every_s: float) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``cmd``; every ``every_s`` seconds record its resident size (bytes, from /proc) and the
    frames it has posed so far."""
    samples = []
    start = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        status = Path(f"/proc/{proc.pid}/status")
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=every_s)
                break
            except subprocess.TimeoutExpired:
                pass
            try:
                rss_kb = next(int(line.split()[1]) for line in status.read_text().splitlines()
                              if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                continue
            samples.append({"s": round(time.perf_counter() - start, 1), "rss_bytes": rss_kb * 1024,
                            "frames": _frames_posed(out)})
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), samples


def memory(samples: list[dict], lap_end: int) -> dict:
    """Peak resident size (MB) until frame ``lap_end`` was posed and after it."""
    first = [x["rss_bytes"] for x in samples if x["frames"] <= lap_end]
    after = [x["rss_bytes"] for x in samples if x["frames"] > lap_end]
    mb = lambda v: round(max(v) / 1e6) if v else None  # noqa: E731
    return {"rss_first_loop_mb": mb(first), "rss_end_mb": mb(after)}


def _keyframes(r: dict, lap_end: int) -> str:
    """Keyframes in the database at the end, how many were stored after frame ``lap_end``, its MB."""
    if r["keyframes"] is None:
        return "-"
    after = "?" if r["stored_frames"] is None else str(sum(f > lap_end for f in r["stored_frames"]))
    return f"{r['keyframes']} ({after}), {r['database_mb']:.0f} MB"


def record(data: Path, folder: Path) -> None:
    """Reconstruct ``data`` once without loop closure, pickling each window prediction the aligner gets."""
    from align.aligner import StreamAligner
    from stream4d.pipeline import ReconstructConfig
    from stream4d.pipeline.run import reconstruct

    folder.mkdir(parents=True, exist_ok=True)
    add = StreamAligner.add
    count = [0]

    def recording_add(aligner, pred):
        if count[0] == 0:
            (folder / "align_config.pkl").write_bytes(pickle.dumps(aligner.config))
        (folder / f"window_{count[0]:04d}.pkl").write_bytes(pickle.dumps(pred))
        count[0] += 1
        return add(aligner, pred)

    StreamAligner.add = recording_add  # this process only runs this one reconstruction
    try:
        config = ReconstructConfig(rrd=False, gaussians=False).override({"align.loop_closure.enabled": False})
        reconstruct(str(data), str(folder / "run"), config, observers=[], progress=False)
    finally:
        StreamAligner.add = add
    print(f"{count[0]} windows recorded in {folder}")


def _replay_poses(folder: Path, loop_closure: bool, on_edge=None, overrides: dict | None = None
                  ) -> tuple[dict[int, np.ndarray], dict, object, dict[int, list[int]]]:
    """Frame -> c2w after replaying the recorded windows; window -> anchor frame; the aligner; window ->
    all its frames. ``overrides``: loop-closure settings replacing the recorded ones (``LoopClosureConfig``
    fields)."""
    from dataclasses import replace

    from align.aligner import StreamAligner

    config = pickle.loads((folder / "align_config.pkl").read_bytes())
    loops = replace(config.loop_closure, **(overrides or {}), enabled=loop_closure)
    aligner = StreamAligner(replace(config, loop_closure=loops))
    if on_edge is not None and aligner.global_map is not None:
        graph = aligner.global_map.graph
        add_edge = graph.add_edge

        def recording_add_edge(edge):  # with whether the graph has moved windows before (then the
            add_edge(edge)  # chain differs from the replay without loop closure)
            on_edge((edge, bool(aligner.global_map.optimisations)))
        graph.add_edge = recording_add_edge
    frames: dict[int, list[int]] = {}
    poses: dict[int, np.ndarray] = {}
    anchor: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    for path in sorted(folder.glob("window_*.pkl")):
        out = aligner.add(pickle.loads(path.read_bytes()))
        members[out.window_index] = [int(i) for i in out.prediction.frame_indices]
        for w, c in out.moved.items():
            for i in frames[w]:
                poses[i] = c.apply_c2w(poses[i])
        new = np.flatnonzero(out.is_new)
        frames[out.window_index] = [int(out.prediction.frame_indices[k]) for k in new]
        for k in new:
            poses[int(out.prediction.frame_indices[k])] = out.prediction.c2w[k].astype(np.float64)
        if len(new):
            anchor[out.window_index] = int(out.prediction.frame_indices[new[-1]])
    return poses, anchor, aligner, members


def _window_fits(poses: dict[int, np.ndarray], members: dict[int, list[int]], truth: list[np.ndarray]
                 ) -> dict[int, tuple[float, np.ndarray]]:
    """Window -> (scale, rotation [3, 3]) of the similarity fitted from its frames' centres in ``poses`` (the
    chain without loop closure) onto the ground truth: how a loop should compare two windows."""
    out = {}
    for w, frames in members.items():
        frames = [f for f in frames if f in poses]
        if len(frames) >= 3:
            fit = umeyama(np.array([poses[f][:3, 3] for f in frames]), np.array([truth[f][:3, 3] for f in frames]))
            # The rotation from the orientations (their chordal mean): a window's centres lie nearly on a
            # line, which leaves the centres' rotation free about it.
            U, _, Vt = np.linalg.svd(sum(truth[f][:3, :3] @ poses[f][:3, :3].T for f in frames))
            out[w] = (fit.s, U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt)
    return out


def replay(data: Path, folder: Path, overrides: dict | None = None) -> None:
    """Per-loop errors against ``data/cameras.json`` (a video: the one beside it) and the ATE with / without
    loop closure (module docstring)."""
    from align.posegraph import relative, sim3_from_pose

    ref = read_cameras_json(data / "cameras.json" if data.is_dir() else data.parent / "cameras.json")
    truth = [f.c2w for f in ref]
    all_ref = np.array([c[:3, 3] for c in truth])
    path = float(np.linalg.norm(np.diff(all_ref, axis=0), axis=1).sum())
    edges = []
    results = {}
    for on in (False, True):
        poses, anchor, aligner, members = _replay_poses(folder, on, edges.append if on else None, overrides)
        if not on:
            fits = _window_fits(poses, members, truth)
        idx = sorted(poses)
        E = np.array([poses[i][:3, 3] for i in idx])
        G = np.array([truth[i][:3, 3] for i in idx])
        fit = umeyama(E, G)
        results[on] = (100 * float(np.sqrt(((fit.apply(E) - G) ** 2).sum(1).mean())) / path, fit.s, anchor, aligner)
    ate_on, scale, anchor, aligner = results[True]
    kept = {id(e) for e in aligner.global_map.graph.edges}
    loops = sum(e.kind == "loop" for e, _ in edges)
    rows = []
    for e, after_solve in edges:
        if e.kind not in ("loop", "link"):  # a link: a segment re-attached, scored as a loop is
            continue
        Zt = relative(sim3_from_pose(truth[anchor[e.i]]), sim3_from_pose(truth[anchor[e.j]]))
        deg = rotation_angle_deg(e.Z.R.T @ Zt.R)
        metres = float(np.linalg.norm(e.Z.t * scale - Zt.t))  # node scales ~1: the replay's world -> metres
        sigma = "-" if e.sigma is None else (f"{np.degrees(e.sigma[0]):.4f} / {1000 * e.sigma[1] * scale:.2f} / "
                                             f"{100 * e.sigma[2]:.3f}")
        # The loop's scale against the two windows' own scales on the ground truth (log, as %).
        # Only before the first solve is the chain the one without loop closure that the scales came from.
        known = not after_solve and {e.i, e.j} <= set(fits)
        truth_log_s = np.log(fits[e.j][0] / fits[e.i][0]) if known else np.nan
        rows.append([f"{e.i} -> {e.j}" + (" link" if e.kind == "link" else ""), f"{anchor[e.i]} -> {anchor[e.j]}", f"{deg:.3f}", f"{1000 * metres:.1f}",
                     f"{np.log(e.Z.s):+.4f}", "-" if not known else f"{100 * (np.log(e.Z.s) - truth_log_s):+.3f}", sigma,
                     "kept" if id(e) in kept else "dropped"])
    print(markdown_table(["windows", "anchor frames", "rotation error deg", "translation error mm", "log scale",
                          "scale error %", "sigma deg / mm / scale %", "graph"], rows))
    print(f"\nATE % path: {results[False][0]:.4f} without loop closure, {ate_on:.4f} with "
          f"({loops} loop edges given to the graph; scale errors only before the first solve)")
    steps = [(np.log(fits[w][0] / fits[w - 1][0]), rotation_angle_deg(fits[w - 1][1].T @ fits[w][1]))
             for w in sorted(fits) if w - 1 in fits]
    if steps:  # what one sequential alignment gets wrong, for comparison with the loops' errors
        log_s, deg = np.array(steps).T
        print(f"sequential steps ({len(steps)}), each window's similarity onto the ground truth against the "
              f"previous one's: scale RMS {100 * np.sqrt(np.mean(log_s ** 2)):.3f} %, rotation RMS "
              f"{np.sqrt(np.mean(deg ** 2)):.4f} deg")


def window_error_pct(pred, truth: np.ndarray) -> float:
    """RMS centre error of a window prediction's posed views after one similarity of the window
    alone onto ``truth`` (c2w [N, 4, 4] by frame index), % of the window's ground-truth path; NaN
    with fewer than 3 posed views or no path."""
    frames = np.asarray(pred.frame_indices)
    posed = np.ones(len(frames), bool) if pred.rotation_only is None else ~np.asarray(pred.rotation_only)
    est, ref = camera_centres(pred.c2w[posed]), camera_centres(truth[frames[posed]])
    path = path_length(truth[frames])
    if posed.sum() < 3 or path <= 0:
        return float("nan")
    residual = umeyama(est, ref).apply(est) - ref
    return 100 * float(np.sqrt((residual ** 2).sum(1).mean())) / path


def window_errors(data: Path, folders: list[Path]) -> None:
    """Per-window own errors of one or more recordings of ``data`` (module docstring)."""
    cameras = data / "cameras.json" if data.is_dir() else data.parent / "cameras.json"  # a video: beside it
    truth = np.array([f.c2w for f in read_cameras_json(cameras)])
    frames, errors = [], []  # per recording: each window's frame indices and error; the predictions are let go
    for folder in folders:
        paths = sorted(folder.glob("window_*.pkl"))
        if not paths:
            raise SystemExit(f"{folder}: no recorded windows (window_*.pkl; make them with --record)")
        preds = (pickle.loads(p.read_bytes()) for p in paths)
        kept = [(np.asarray(pred.frame_indices), window_error_pct(pred, truth)) for pred in preds]
        frames.append([f for f, _ in kept])
        errors.append([e for _, e in kept])
    n = min(len(e) for e in errors)
    errors = np.array([e[:n] for e in errors])
    rows = []
    for w in range(n):
        first = frames[0][w]
        rows.append([str(w), f"{int(first[0])}-{int(first[-1])}", *(f"{e:.4f}" for e in errors[:, w])])
    print(markdown_table(["window", "frames", *(f.name for f in folders)], rows))
    for f, e in zip(folders, errors):
        print(f"{f.name}: {n} windows, error % of window path mean {np.nanmean(e):.4f}, median {np.nanmedian(e):.4f}")
    if len(folders) == 2:
        # Windows are paired by position; where the two runs cut different frames they are not compared.
        same = np.array([np.array_equal(frames[0][w], frames[1][w]) for w in range(n)])
        if not same.all():
            print(f"{int((~same).sum())} windows hold other frames in the two recordings (from window "
                  f"{int(np.argmin(same))}): left out of the comparison")
        differ = same & ~np.isclose(errors[0], errors[1], rtol=1e-6, atol=0.0, equal_nan=True)
        a, b = errors[0][differ], errors[1][differ]
        if not len(a):
            print("no window differs")
            return
        print(f"{len(a)} windows differ: mean {np.nanmean(a):.4f} ({folders[0].name}) vs {np.nanmean(b):.4f} "
              f"({folders[1].name}); {folders[1].name} better in {int((b < a).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--head", type=int, default=10, help="frames the drift's similarity is fitted on")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--record", type=Path, default=None, help="pickle one dataset's window predictions here")
    parser.add_argument("--replay", type=Path, default=None, help="replay recorded windows: per-loop errors")
    parser.add_argument("--window-errors", nargs="+", type=Path, default=None, metavar="DIR",
                        help="recorded windows: each window's own error (module docstring)")
    parser.add_argument("--loop-config", type=json.loads, default=None, metavar="JSON",
                        help="with --replay: loop-closure settings to replay with, e.g. '{\"chi_limit\": 4}'")
    parser.add_argument("--runs", nargs="+", choices=("on", "off"), default=["on", "off"],
                        help="which runs: loop closure on, off (default both)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between resident-size samples")
    args = parser.parse_args()
    if args.record or args.replay or args.window_errors:
        if len(args.datasets) != 1:
            parser.error("--record / --replay / --window-errors take exactly one dataset")
        if args.window_errors:
            window_errors(args.datasets[0], args.window_errors)
        if args.record:
            record(args.datasets[0], args.record)
        if args.replay:
            replay(args.datasets[0], args.replay, args.loop_config)
        return
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_loops_"))
    rows = []
    for data in args.datasets:
        lap_end = first_return(data / "cameras.json")
        for run in args.runs:
            mode, flags = ("loop closure", []) if run == "on" else ("--no-loop-closure", ["--no-loop-closure"])
            out = work / f"{data.name}_{run}"
            cmd = [sys.executable, "-m", "stream4d.cli", "reconstruct", str(data), "--out", str(out), "--quiet",
                   "--no-rrd", *flags]
            proc, samples = run_sampled(cmd, out, args.sample_s)
            if proc.returncode != 0:
                print(f"{data.name} {mode}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            r = score(out, data / "cameras.json", args.head)
            m = memory(samples, lap_end)
            (out / "rss.json").write_text(json.dumps({"first_loop_frame": lap_end, **m, "samples": samples}))
            rows.append([data.name, mode, r["posed"], f"{r['end_drift_pct_path']:.3f}", f"{r['ate_pct_path']:.3f}",
                         f"{r['ate_pct_extent']:.3f}", str(r["segments"]), r["loops"], str(r["relocated"]),
                         "-" if r["s_per_keyframe"] is None else f"{r['s_per_keyframe']:.3f}",
                         "-" if r["solve_s"] is None else f"{r['solve_s']:.3f}",
                         _keyframes(r, lap_end),
                         f"{m['rss_first_loop_mb']} (frame {lap_end})", str(m["rss_end_mb"]), f"{r['wall_s']:.0f}"])
    print(markdown_table(["input", "run", "posed", "end drift % path", "ATE % path", "ATE % extent", "segments",
                          "loops acc./rej.", "relocated", "s / keyframe", "solve s",
                          "keyframes stored (after first loop), DB",
                          "RSS MB to first loop", "RSS MB after", "wall s"], rows))

if __name__ == "__main__":
    main()
