"""Loop closure ablation: each input reconstructed with and without the global map (docs/global_map.md).

For each dataset folder (images + ``cameras.json``) it runs ``stream4d reconstruct`` once with
loop closure and once with ``--no-loop-closure`` and reports: frames posed, end-point drift
(a similarity fitted on the first ``--head`` frames, then the last frame's centre error, % of
the ground-truth path), ATE after one similarity over all frames (% of the path and of the
extent), segments, loops accepted / rejected, relocated frames, global-map seconds per
keyframe, the mean pose-graph solve time and the wall time.

    python bench/bench_loops.py DATASET [DATASET ...] [--head 10] [--out DIR]
    python bench/bench_loops.py /tmp/orbit250 /work/shared/data/strecha_castle_p30

Make a double orbit with exact cameras:
    stream4d synth --trajectory orbit --frames 1000 --traj-kw arc_deg=720 --noise 2 --out /tmp/orbit1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from stream4d.geometry import umeyama  # noqa: E402
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
            "wall_s": run["timings_s"]["total"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--head", type=int, default=10, help="frames the drift's similarity is fitted on")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_loops_"))
    rows = []
    for data in args.datasets:
        for mode, flags in (("loop closure", []), ("--no-loop-closure", ["--no-loop-closure"])):
            out = work / f"{data.name}_{'on' if not flags else 'off'}"
            cmd = [sys.executable, "-m", "stream4d.cli", "reconstruct", str(data), "--out", str(out), "--quiet",
                   "--no-rrd", *flags]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{data.name} {mode}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            r = score(out, data / "cameras.json", args.head)
            rows.append([data.name, mode, r["posed"], f"{r['end_drift_pct_path']:.3f}", f"{r['ate_pct_path']:.3f}",
                         f"{r['ate_pct_extent']:.3f}", str(r["segments"]), r["loops"], str(r["relocated"]),
                         "-" if r["s_per_keyframe"] is None else f"{r['s_per_keyframe']:.3f}",
                         "-" if r["solve_s"] is None else f"{r['solve_s']:.3f}", f"{r['wall_s']:.0f}"])
    print(markdown_table(["input", "run", "posed", "end drift % path", "ATE % path", "ATE % extent", "segments",
                          "loops acc./rej.", "relocated", "s / keyframe", "solve s", "wall s"], rows))


if __name__ == "__main__":
    main()
