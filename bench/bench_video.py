"""Videos at camera rate: keyframes by parallax against every frame through the window model.

For each clip (a video with a ``cameras.json`` ground truth, or without one) it
runs the pipeline once per keyframe policy and reports: frames, keyframes, how
each frame got its pose (posed with depth / tracked / interpolated / rotation-
only / not posed), ATE as % of the ground-truth path over all frames and over
the tracked frames alone, points in the map, wall time and frames/s.
``--fps-sweep`` renders one synthetic motion at several frame rates and counts
the keyframes the keyframer picks at each (no reconstruction).

    python bench/bench_video.py CLIP[:GT] ... [--policies parallax,all] [--write-docs]
    python bench/bench_video.py --fps-sweep orbit --fps 10,30,60
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_docs_section  # noqa: E402

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
    config = ReconstructConfig().override({"keyframes.policy": policy, "rrd": False, **extra})
    t = time.perf_counter()
    summary = reconstruct(clip, out, config, progress=False)
    wall = time.perf_counter() - t
    s = summary.stats
    between = s.frames_tracked + s.frames_interpolated
    row = {"clip": name, "policy": policy, "frames": s.frames_received, "keyframes": s.frames_keyframes,
           "windows": s.windows, "with depth": s.frames_posed - s.frames_rotation_only - between,
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
    return row


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
    args = ap.parse_args()
    rows = []
    if args.fps_sweep:
        rows = fps_sweep(args.fps_sweep, [float(r) for r in args.fps.split(",")], args.seconds, (512, 384))
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    out_root = args.out or Path(tempfile.mkdtemp(prefix="bench_video_"))
    for spec in args.clips:
        clip, _, gt = spec.partition(":")
        for policy in args.policies.split(","):
            rows.append(run_clip(clip, gt or None, policy, out_root, extra))
            print(json.dumps(rows[-1]), flush=True)
    headers = list(dict.fromkeys(k for r in rows for k in r))
    table = markdown_table(headers, [[r.get(h, "") for h in headers] for r in rows])
    print(table)
    if args.write_docs:
        write_docs_section(args.write_docs, table)


if __name__ == "__main__":
    main()
