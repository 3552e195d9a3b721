"""Videos at camera rate: keyframes by parallax against every frame through the window model.

For each clip (a video with a ``cameras.json`` ground truth, or without one) it
runs the pipeline once per keyframe policy and reports: frames, keyframes, how
each frame got its pose (posed with depth / tracked / interpolated / rotation-
only / not posed), ATE as % of the ground-truth path over all frames and over
the tracked frames alone, points in the map, wall time and frames/s.
Splats and the recording are on (``--set rrd=false`` to drop it); the
recording's size is given per second of input. ``--synth DIR`` renders the
issue's synthetic clips (orbit, handheld, forward, sideways: 300 frames at
30 fps, 512x384, ``stream4d synth``) into DIR once and adds them.
``--fps-sweep`` renders one synthetic motion at several frame rates and counts
the keyframes the keyframer picks at each (no reconstruction).
``--tracking CLIP`` times the tracking front end alone on the clip's frames at
their own size: the keyframer's decision and the live tracker's pose against
the clip's first aligned window. ``--live CLIP`` pushes the clip in real time
(its own frame rate, JPEG frames) over the WebSocket of a ``stream4d serve``
on loopback and reports arrival-to-pose latency and drops from its run.json: over every frame,
over the frames posed live, and over those first posed on the two-view bootstrap map before the
first window (``recon/live_bootstrap.py``), with the load average sampled every second of the run.
``--handover CLIP`` checks that hand-over without timing: the clip's frames through the two-view
bootstrap and the live tracker, the first window of a file run of the same clip given to the
tracker 15 frames after its last keyframe; the provisional poses (after the best Sim(3)) and the
live poses after the hand-over against that run's trajectory.json, as a share of its path.
``--tracked-depth`` scores the depth files of tracked frames (recon/tracked_depth.py) and of keyframes
against each clip's exact depth (``stream4d synth --depth``; ``--synth`` renders with it) and times
the run with and without the tracked frames' maps, back to back.

    python bench/bench_video.py CLIP[:GT] ... [--synth DIR] [--policies parallax,all] [--write-docs]
    python bench/bench_video.py --fps-sweep orbit --fps 10,30,60
    python bench/bench_video.py --tracking CLIP
    python bench/bench_video.py --live CLIP [--live-options JSON] [--live-after S]
    python bench/bench_video.py --handover CLIP
    python bench/bench_video.py --tracked-depth CLIP:GT ... [--synth DIR]
    python bench/bench_video.py --tracked-depth-scales 1,0.5,0.25
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clip_as_jpegs, markdown_table, write_docs_section  # noqa: E402

from stream4d.contracts import StreamObserver  # noqa: E402
from stream4d.evaluation.report import load_reference  # noqa: E402
from stream4d.evaluation.trajectory import evaluate_trajectory  # noqa: E402
from stream4d.outputs import read_trajectory  # noqa: E402
from stream4d.pipeline import ReconstructConfig, reconstruct  # noqa: E402


def ate_percent(pred, gt) -> float:
    if len(pred) < 3:
        return float("nan")
    return 100.0 * evaluate_trajectory(pred, gt).ate_rmse_rel_path


def run_clip(clip: str, gt_path: str | None, policy: str, out_root: Path, extra: dict) -> dict:
    name = f"{Path(clip).parent.name}/{Path(clip).name}"
    out = out_root / f"{Path(clip).parent.name}_{Path(clip).stem}_{policy}"
    config = ReconstructConfig().override({"keyframes.policy": policy, **extra})
    t = time.perf_counter()
    summary = reconstruct(clip, out, config, progress=False)
    wall = time.perf_counter() - t
    s = summary.stats
    row = {"clip": name, "policy": policy, "frames": s.frames_received, "keyframes": s.frames_keyframes,
           "windows": s.windows, "with depth": s.frames_with_depth(),
           "tracked": s.frames_tracked, "interpolated": s.frames_interpolated, "rotation-only": s.frames_rotation_only,
           "not posed": s.frames_processed - s.frames_posed, "map points": summary.stats.gaussians,
           "time s": round(wall, 1), "frames/s": round(s.frames_received / wall, 2)}
    if gt_path:
        gt = load_reference(gt_path)
        pred = read_trajectory(out)
        row["ATE % path"] = round(ate_percent(pred, gt), 4)
        tracked = [p for p in pred if p.pose_kind == "tracked"]
        row["ATE % tracked only"] = round(ate_percent(tracked, gt), 4) if tracked else "-"
    run = json.loads((out / "run.json").read_text())
    row["map points"] = _ply_vertices(out / "points.ply")
    row["keyframe reasons"] = run.get("keyframes", {}).get("reasons", {})
    fps = (run.get("source_info") or {}).get("fps") or 0
    rrd = out / "recording.rrd"
    if rrd.exists() and fps:
        row["rrd MB per s of input"] = round(rrd.stat().st_size / 1e6 / (s.frames_received / fps), 2)
    return row


SYNTH = {"orbit": ["--traj-kw", "arc_deg=60"], "handheld": [], "forward": ["--traj-kw", "step=0.01"],
         "sideways": ["--traj-kw", "step=0.008"]}


def synth_clips(root: Path) -> list[str]:
    """The issue's synthetic clips (300 frames, 30 fps, 512x384, exact cameras), rendered once."""
    specs = []
    for kind, kw in SYNTH.items():
        out = root / kind
        if not (out / "clip.mp4").exists():
            subprocess.run([sys.executable, "-m", "stream4d.cli", "synth", "--scene", "room", "--trajectory", kind,
                            *kw, "--frames", "300", "--fps", "30", "--size", "512x384", "--out", str(out),
                            "--video", "clip.mp4", "--depth"], check=True)
        specs.append(f"{out / 'clip.mp4'}:{out / 'cameras.json'}")
    return specs


def tracking_alone(clip: str) -> dict:
    """ms a frame of the keyframer's decision and of the live tracker's pose, at the clip's own size."""
    import threading

    from recon.ingest import open_source
    from recon.ingest.options import IngestOptions
    from recon.keyframes import ParallaxKeyframer
    from recon.live_tracking import MapTracker

    first: list = []
    stop = threading.Event()

    class FirstWindow(StreamObserver):  # the protocol's other methods do nothing
        def on_window(self, window):
            if not first:
                first.append(window)
                stop.set()

    config = ReconstructConfig().override({"ingest.resize": None, "rrd": False, "gaussians": False})
    with tempfile.TemporaryDirectory() as tmp:
        reconstruct(clip, tmp, config, observers=[FirstWindow()], stop=stop, progress=False)
    with open_source(clip, IngestOptions(resize=None)) as src:
        frames = list(src)
    window = first[0]
    keyframer, tracker = ParallaxKeyframer(), MapTracker()
    tracker.set_map(window.prediction, window.segment)
    wall = {"keyframer": 0.0, "tracker": 0.0}
    cpu = dict(wall)  # CPU time of this thread: what the front end costs, whatever else runs
    posed = 0
    last = int(window.prediction.frame_indices[-1])
    for f in frames[last:]:  # from the map's last keyframe on, as live tracking meets them
        t, c = time.perf_counter(), time.thread_time()
        keyframer.decide(f.image, f.timestamp)
        wall["keyframer"] += time.perf_counter() - t
        cpu["keyframer"] += time.thread_time() - c
        t, c = time.perf_counter(), time.thread_time()
        posed += tracker.track(f.image, f.pixel_map, f.index) is not None
        wall["tracker"] += time.perf_counter() - t
        cpu["tracker"] += time.thread_time() - c
    n = len(frames) - last
    W, H = frames[0].size
    return {"clip": Path(clip).name, "size": f"{W}x{H}", "frames": n, "posed by the tracker": posed,
            "keyframer ms/frame": round(1000 * wall["keyframer"] / n, 1),
            "tracker ms/frame": round(1000 * wall["tracker"] / n, 1),
            "front end frames/s": round(n / sum(wall.values()), 1),
            "keyframer CPU ms/frame": round(1000 * cpu["keyframer"] / n, 1),
            "tracker CPU ms/frame": round(1000 * cpu["tracker"] / n, 1),
            "front end frames/s of one core": round(n / sum(cpu.values()), 1), "load average": os.getloadavg()[0]}


def live_push(clip: str, options: dict, after_s: float = 0.0) -> dict:
    """The clip pushed in real time over a real service's WebSocket; latency and drops from its run.
    ``after_s``: seconds the service runs before the session opens (a served process, warmed up)."""
    import threading

    import httpx
    import websockets.sync.client as ws_client

    from server.frames import encode_frame

    fps, jpegs = clip_as_jpegs(clip)
    with tempfile.TemporaryDirectory() as tmp:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "stream4d.cli", "serve", "--port", str(port), "--data-dir",
                                   str(Path(tmp) / "data"), "--viewer", "none"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            time.sleep(after_s)
            with httpx.Client(base_url=url, timeout=60) as c:
                body = c.post("/sessions", json={"viewer": False, **options}).json()
                headers = {"Authorization": f"Bearer {body['token']}"}
                t_start = time.monotonic()
                loads, sampling = [], threading.Event()
                sampler = threading.Thread(target=_sample_load, args=(loads, sampling), daemon=True)
                sampler.start()
                with ws_client.connect(url.replace("http", "ws") + f"/sessions/{body['id']}/live",
                                       additional_headers=headers, max_size=None) as ws:
                    acks = threading.Thread(target=lambda: [ws.recv(timeout=120) for _ in jpegs])
                    acks.start()
                    t0 = time.monotonic()
                    for i, jpeg in enumerate(jpegs):
                        time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
                        ws.send(encode_frame(jpeg, i / fps))
                    pushed = time.monotonic() - t0
                    acks.join()
                    ws.send(json.dumps({"type": "end"}))
                    closed = json.loads(ws.recv(timeout=120))
                while c.get(f"/sessions/{body['id']}", headers=headers).json()["state"] not in \
                        ("completed", "failed", "cancelled"):
                    time.sleep(0.5)
                done = time.monotonic() - t_start
                sampling.set()
                got = c.get(f"/sessions/{body['id']}/results/run.json", headers=headers)
                if got.status_code != 200:  # the session failed: say how, not a KeyError further on
                    session = c.get(f"/sessions/{body['id']}", headers=headers).json()
                    raise SystemExit(f"live session {session['state']} without run.json: {session.get('error')}")
                run = got.json()
        finally:
            server.terminate()
            server.wait(60)
    lat, st = run["latency_s"], run["stats"]
    boot = run.get("live_bootstrap") or {}
    boot_lat = lat.get("bootstrap") or {}
    handover = boot.get("handover") or {}

    def r3(v):
        return None if v is None else round(v, 3)

    return {"clip": Path(clip).name, "fps": round(fps, 2), "frames sent": len(jpegs), "push s": round(pushed, 1),
            "dropped": closed.get("dropped"), "posed": st["frames_posed"], "posed live": st["frames_posed_live"],
            "keyframes": st["frames_keyframes"], "latency p50 s": round(lat["p50"], 3), "p95 s": round(lat["p95"], 3),
            "live p50 s": r3(lat["live"]["p50"]), "live p95 s": r3(lat["live"]["p95"]),
            "posed on bootstrap": boot_lat.get("frames"), "bootstrap p50 s": r3(boot_lat.get("p50")),
            "bootstrap p95 s": r3(boot_lat.get("p95")), "held frames posed at init": boot.get("frames_posed_at_init"),
            "bootstrap refused": boot.get("refused"), "handover": handover.get("applied"),
            "never posed": lat.get("never_posed"), "run done after s": round(done, 1),
            "load average min/max": [min(loads, default=None), max(loads, default=None)]}


def _sample_load(loads: list[float], stop) -> None:
    """The 1-minute load average every second until ``stop`` is set (what ``uptime`` prints first)."""
    while not stop.wait(1.0):
        loads.append(round(os.getloadavg()[0], 1))


def bootstrap_handover(clip: str, out: Path) -> dict:
    """See the module doc (``--handover``)."""
    from recon.ingest import open_source
    from recon.live_bootstrap import TwoViewBootstrap, pose_sim3
    from recon.live_tracking import MapTracker

    first: list = []

    class FirstWindow(StreamObserver):
        def on_window(self, window):
            if not first:
                first.append(window)

    config = ReconstructConfig().override({"rrd": False, "gaussians": False})
    reconstruct(clip, out, config, observers=[FirstWindow()], progress=False)
    final = {p.index: p.c2w for p in read_trajectory(out)}
    window = first[0]
    arrives = int(max(window.prediction.frame_indices)) + 15
    boot, tracker = TwoViewBootstrap(focal_prior=config.model.focal_prior), MapTracker()
    provisional, live, init = {}, {}, None
    with open_source(clip, config.ingest) as src:
        for f in src:
            if f.index == arrives:
                tracker.set_map(window.prediction, window.segment)
            tracked = tracker.track(f.image, f.pixel_map, f.index)
            if tracked is None and tracker.needs_bootstrap:
                m = boot.add(f.image, f.index, f.timestamp, f.K)
                if m is not None:
                    tracker.set_bootstrap(m, f.pixel_map, 0)
                    boot.reset()
                    init = init if init is not None else m.index
                    provisional.update({i: c2w for i, (_, c2w) in m.poses.items()})
            elif tracked is not None:
                (provisional if tracker.handover is None else live)[f.index] = tracked.c2w
    centres = np.array([final[i][:3, 3] for i in sorted(final)])
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    both = sorted(set(provisional) & set(final))
    best = pose_sim3(np.stack([provisional[i] for i in both]), np.stack([final[i] for i in both]), 180.0, 1e9)
    err_p = [np.linalg.norm(best.apply_c2w(provisional[i])[:3, 3] - final[i][:3, 3]) / path for i in both]
    after = sorted(set(live) & set(final))
    err_l = [np.linalg.norm(live[i][:3, 3] - final[i][:3, 3]) / path for i in after]
    return {"clip": Path(clip).name, "bootstrap init frame": init, "provisional poses": len(both),
            "window keyframes": len(window.prediction.frame_indices), "map arrives at frame": arrives,
            "handover": tracker.handover,
            "provisional error % path median / max": [round(100 * float(np.median(err_p)), 2), round(100 * max(err_p), 2)],
            "live after handover": len(after), "first live error % path": round(100 * err_l[0], 2) if after else None,
            "live error % path median / max": [round(100 * float(np.median(err_l)), 2), round(100 * max(err_l), 2)] if after else None,
            "load average": os.getloadavg()[0]}


def tracked_depth(clip: str, gt_path: str, out_root: Path, extra: dict) -> dict:
    """Tracked frames' depth maps (recon/tracked_depth.py) on a clip with exact depth (``stream4d synth
    --depth``). One run writes every depth file (``save_depth``): frames posed with depth, ms a tracked
    frame (its map; its file), bytes a file, and the relative depth error after the run's Sim(3) scale,
    of the tracked frames' maps and of the keyframes' own (model) maps. Then the default run (no depth
    files) with and without the tracked maps, back to back: frames/s and the process's CPU seconds."""
    from stream4d.outputs import read_depth

    gt = load_reference(gt_path)
    gt_depth_dir = Path(gt_path).parent / "depth"
    name = Path(clip).parent.name
    row: dict = {"clip": name}

    def run(tag: str, overrides: dict):
        config = ReconstructConfig().override({**overrides, **extra})
        load = os.getloadavg()[0]
        t, c = time.perf_counter(), time.process_time()
        summary = reconstruct(clip, out_root / f"{name}_{tag}", config, progress=False)
        return summary.stats, time.perf_counter() - t, time.process_time() - c, load

    s, wall, cpu, load = run("files", {"save_depth": True})
    timings = json.loads((out_root / f"{name}_files" / "run.json").read_text())["timings_s"]
    row.update({"frames": s.frames_received, "keyframes": s.frames_keyframes, "tracked": s.frames_tracked,
                "with depth": s.frames_with_depth(),
                "with depth %": round(100.0 * s.frames_with_depth() / max(s.frames_received, 1), 1)})
    if s.frames_tracked:
        row["ms a tracked map"] = round(1e3 * timings.get("tracked_depth", 0.0) / s.frames_tracked, 2)
        row["ms its file"] = round(1e3 * timings.get("tracked_depth_write", 0.0) / s.frames_tracked, 2)
    pred = read_trajectory(out_root / f"{name}_files")
    scale = evaluate_trajectory(pred, gt).sim3.s
    errors: dict[str, list[np.ndarray]] = {"model": [], "keyframes": []}
    sizes: dict[str, list[int]] = {"model": [], "keyframes": []}
    for p in pred:
        path = out_root / f"{name}_files" / "depth" / f"{p.index:06d}.npz"
        if not path.exists():
            continue
        d = read_depth(out_root / f"{name}_files", p.index)
        source = str(d.get("source", "model"))
        sizes[source].append(path.stat().st_size)
        truth = np.load(gt_depth_dir / f"{p.index:06d}.npy")
        if truth.shape == d["depth"].shape:
            ok = (d["depth"] > 0) & (d["conf"] > 0) & (truth > 0)
            errors[source].append(truth[ok] / d["depth"][ok])  # true / written depth, per pixel
    # Two scales: the run's Sim(3) (poses), and the median of the keyframes' own depth ratios, which
    # also takes out a wrong self-calibrated focal length (depth scales with it, the path does not).
    keyframe_scale = float(np.median(np.concatenate(errors["model"]))) if errors["model"] else scale
    for source, label in (("keyframes", "tracked"), ("model", "keyframe")):
        if errors[source]:
            ratio = np.concatenate(errors[source])
            for tag, sc in (("Sim3", scale), ("kf scale", keyframe_scale)):
                e = np.abs(sc / ratio - 1.0)
                row[f"{label} AbsRel ({tag})"] = round(float(e.mean()), 4)
                row[f"{label} median rel ({tag})"] = round(float(np.median(e)), 4)
        if sizes[source]:
            row[f"{label} KB a file"] = round(float(np.mean(sizes[source])) / 1e3, 1)
    loads = [load]
    for tag, enabled in (("on", True), ("off", False)):
        s, wall, cpu, load = run(tag, {"tracked_depth.enabled": enabled})
        row[f"frames/s {tag}"] = round(s.frames_received / wall, 2)
        row[f"CPU s {tag}"] = round(cpu, 1)
        loads.append(load)
    row["load"] = f"{min(loads):.0f}-{max(loads):.0f}"
    return row


def tracked_depth_scales(scales: list[float]) -> list[dict]:
    """``depth_from_keyframes`` alone at 512x384 by working scale: CPU ms a frame (and a keyframe's lift)
    and the error against exact depth, keyframes 0 and 12 given their exact depth, frames 3, 6 and 9
    between them, on three 90-frame paths through the room (orbit 20 deg, forward and sideways walks)."""
    from recon.tracked_depth import TrackedDepthConfig, depth_from_keyframes, lift_keyframe
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

    W, H = 512, 384
    scene, K = make_scene("room", seed=0), intrinsics_for(W, H)
    paths = {"orbit": {"arc_deg": 20.0}, "forward": {"step": 0.01}, "sideways": {"step": 0.008}}
    views = {}
    for kind, kw in paths.items():
        c2w = make_trajectory(kind, 90, seed=0, scene=scene, **kw)
        views[kind] = (c2w, {i: render_view(scene, c2w[i], K, W, H) for i in (0, 3, 6, 9, 12)})
    rows = []
    for scale in scales:
        cfg = TrackedDepthConfig(scale=scale)
        lift_cpu = map_cpu = 0.0
        errors, valid = [], []
        for c2w, v in views.values():
            c = time.thread_time()
            clouds = [lift_keyframe(i, v[i].depth, (v[i].depth > 0).astype(np.float32), K, c2w[i], cfg.step)
                      for i in (0, 12)]
            lift_cpu += time.thread_time() - c
            for i in (3, 6, 9):
                c = time.thread_time()
                for _ in range(3):
                    got = depth_from_keyframes(clouds, K, c2w[i], (W, H), cfg)
                map_cpu += (time.thread_time() - c) / 3
                ok = (got.depth > 0) & (v[i].depth > 0)
                errors.append(np.abs(got.depth[ok] - v[i].depth[ok]) / v[i].depth[ok])
                valid.append(got.valid_share)
        e = np.concatenate(errors)
        rows.append({"scale": scale, "CPU ms a frame": round(1e3 * map_cpu / 9, 1),
                     "CPU ms a keyframe lift": round(1e3 * lift_cpu / 6, 1), "valid %": round(100 * np.mean(valid), 1),
                     "AbsRel": round(float(e.mean()), 4), "median rel": round(float(np.median(e)), 4),
                     "> 5 % off, %": round(100 * float((e > 0.05).mean()), 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _ply_vertices(path: Path) -> int:
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"element vertex"):
                return int(line.split()[-1])
            if line.startswith(b"end_header"):
                break
    return 0


def fps_sweep(trajectory: str, rates: list[float], seconds: float, size: tuple[int, int]) -> list[dict]:
    """One motion (the same path over ``seconds``) rendered at each rate; the keyframes chosen."""
    from recon.keyframes import ParallaxKeyframer
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

    scene = make_scene("room", seed=0)
    K = intrinsics_for(size[0], size[1], 60.0)
    kw = {"orbit": {"arc_deg": 60.0}, "sideways": {"step": 1.2 / 60}, "forward": {"step": 1.5 / 60},
          "handheld": {}}[trajectory]
    dense = make_trajectory(trajectory, int(round(max(rates) * seconds)), seed=0, scene=scene, **kw)
    rows = []
    images: dict[int, np.ndarray] = {}  # the slower rates reuse the fastest rate's frames
    for rate in sorted(rates, reverse=True):
        step = max(rates) / rate
        picks = np.round(np.arange(0, len(dense) - 1e-9, step)).astype(int)
        kf = ParallaxKeyframer()
        keys = collections.Counter()
        t = 0.0
        for n, i in enumerate(picks):
            if i not in images:
                images[i] = render_view(scene, dense[i], K, size[0], size[1]).rgb
            image = images[i]
            t0 = time.perf_counter()
            d = kf.decide(image, n / rate)
            t += time.perf_counter() - t0
            if d.previous:  # the frame before was the closer keyframe
                keys[d.previous_reason] += 1
            if d.keyframe:
                keys[d.reason] += 1
        rows.append({"trajectory": trajectory, "fps": rate, "frames": len(picks), "keyframes": sum(keys.values()),
                     "reasons": dict(keys), "keyframer ms/frame": round(1000 * t / len(picks), 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", help="CLIP or CLIP:GT_CAMERAS_JSON")
    ap.add_argument("--policies", default="parallax,all")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (JSON value)")
    ap.add_argument("--fps-sweep", default=None, metavar="TRAJECTORY")
    ap.add_argument("--fps", default="10,30,60")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--write-docs", default=None, metavar="SECTION")
    ap.add_argument("--synth", type=Path, default=None, metavar="DIR")
    ap.add_argument("--tracking", default=None, metavar="CLIP")
    ap.add_argument("--live", default=None, metavar="CLIP")
    ap.add_argument("--live-options", default="{}", help="session options (JSON) of the --live run")
    ap.add_argument("--live-after", type=float, default=0.0,
                    help="seconds the --live run's service runs before its session opens")
    ap.add_argument("--handover", default=None, metavar="CLIP")
    ap.add_argument("--tracked-depth", action="store_true",
                    help="the clips (CLIP:GT, GT beside a depth/ folder of stream4d synth --depth) with and "
                         "without tracked frames' depth maps, instead of the keyframe policies")
    ap.add_argument("--tracked-depth-scales", default=None, metavar="S,S,...",
                    help="time and score the tracked frames' depth maps alone at these working scales")
    args = ap.parse_args()
    rows = []
    if args.tracked_depth_scales:
        rows += tracked_depth_scales([float(v) for v in args.tracked_depth_scales.split(",")])
    if args.tracking:
        rows.append(tracking_alone(args.tracking))
        print(json.dumps(rows[-1]), flush=True)
    if args.live:
        rows.append(live_push(args.live, json.loads(args.live_options), args.live_after))
        print(json.dumps(rows[-1]), flush=True)
    if args.handover:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(bootstrap_handover(args.handover, Path(tmp) / "out"))
        print(json.dumps(rows[-1]), flush=True)
    if args.synth:
        args.clips = synth_clips(args.synth) + args.clips
    if args.fps_sweep:
        rows = fps_sweep(args.fps_sweep, [float(r) for r in args.fps.split(",")], args.seconds, (512, 384))
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    out_root = args.out or Path(tempfile.mkdtemp(prefix="bench_video_"))
    for spec in args.clips if args.tracked_depth else []:
        clip, _, gt = spec.partition(":")
        rows.append(tracked_depth(clip, gt, out_root, extra))
        print(json.dumps(rows[-1]), flush=True)
    for spec in [] if args.tracked_depth else args.clips:
        clip, _, gt = spec.partition(":")
        for policy in args.policies.split(","):
            rows.append({**run_clip(clip, gt or None, policy, out_root, extra), "load average": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    headers = list(dict.fromkeys(k for r in rows for k in r))
    table = markdown_table(headers, [[r.get(h, "") for h in headers] for r in rows])
    print(table)
    if args.write_docs:
        write_docs_section(args.write_docs, table)


if __name__ == "__main__":
    main()
