"""A walk that stops to look around: turns on the spot inside one video, with exact cameras.

Renders the synthetic street (``stream4d.synthetic``) as a user films it: a walk, then (``--path``)
a turn on the spot of ``--turn-deg`` and back before walking on (``turn``), or a pause standing
still (``stop``), or a room orbit that starts with a sweep towards it (``sweep``). The clip is an
H.264 video with no intrinsics, reconstructed by ``stream4d reconstruct`` (default backend) and
scored on all its frames as one world: frames posed, world segments, pose kinds, the ATE after one
similarity (% of the path the camera walked) and the self-calibrated focal length against the
true one. A turn on the spot has no path of its own, so its frames count only through the
similarity fitted to every frame.

    python bench/bench_turn.py --out /tmp/turn [--path turn] [--fps 30] [--turn-deg 70]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cut import score_part  # noqa: E402
from common import markdown_table  # noqa: E402

from stream4d.synthetic import (  # noqa: E402
    intrinsics_for,
    make_scene,
    make_trajectory,
    render_sequence,
    write_sequence,
    yaw_matrix,
)

WALK_SPEED = 1.2  # m/s


def _turned(c2w: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Copies of one pose [4, 4] turned about the world vertical by each of ``degrees`` [N]."""
    out = np.repeat(c2w[None], len(degrees), axis=0)
    out[:, :3, :3] = np.stack([yaw_matrix(d) for d in degrees]) @ c2w[:3, :3]
    return out


def camera_path(path: str, fps: float, turn_deg: float) -> tuple[str, np.ndarray, list[tuple[str, int, int]]]:
    """(scene, camera-to-world [N, 4, 4], the parts as (name, first, end) frame ranges)."""
    n = lambda seconds: int(round(seconds * fps))  # noqa: E731
    if path == "sweep":
        scene = make_scene("room", seed=0)
        orbit = make_trajectory("orbit", n(8), seed=0, scene=scene, arc_deg=60.0)
        sweep = _turned(orbit[0], np.linspace(-60.0, 0.0, n(3)))
        return "room", np.concatenate([sweep, orbit[1:]]), [("sweep", 0, n(3)), ("orbit", n(3), n(3) + n(8) - 1)]
    scene = make_scene("street", seed=0)
    walk = make_trajectory("forward", n(12), seed=0, scene=scene, step=WALK_SPEED / fps)
    here = walk[n(6) - 1]
    if path == "stop":
        middle = np.repeat(here[None], n(3), axis=0)
    elif path == "turn":
        middle = np.concatenate([_turned(here, np.linspace(0.0, turn_deg, n(2))[1:]),
                                 _turned(here, np.linspace(turn_deg, 0.0, n(2))[1:])])
    else:
        raise ValueError(f"unknown path {path!r}")
    c2w = np.concatenate([walk[:n(6)], middle, walk[n(6):]])
    a, b = n(6), n(6) + len(middle)
    return "street", c2w, [("walk", 0, a), (path, a, b), ("walk on", b, len(c2w))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--path", choices=("turn", "stop", "sweep"), default="turn")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--turn-deg", type=float, default=70.0)
    ap.add_argument("--size", default="512x384")
    args = ap.parse_args()
    W, H = (int(v) for v in args.size.split("x"))
    K = intrinsics_for(W, H)
    scene_name, c2w, parts = camera_path(args.path, args.fps, args.turn_deg)
    clip = args.out / "clip"
    write_sequence(clip, render_sequence(make_scene(scene_name, seed=0), c2w, K, W, H, fps=args.fps),
                   video="clip.mp4", fps=args.fps)
    run = args.out / "run"
    exe = Path(sys.executable).with_name("stream4d")
    subprocess.run([str(exe), "reconstruct", str(clip / "clip.mp4"), "--out", str(run), "--no-rrd", "--quiet"],
                   check=True)
    posed = {f["index"]: f for f in json.loads((run / "trajectory.json").read_text())["frames"]}
    reference = json.loads((clip / "cameras.json").read_text())["frames"]
    whole = score_part(posed, reference, range(len(reference)))
    focal = json.loads((run / "run.json").read_text())["intrinsics"]
    if focal.get("focal_px") is not None:  # run.json gives it in pixels of the model's image
        focal["focal_px"] *= W / focal["model_size"][0]
    rows = []
    for name, a, b in parts:
        kinds = Counter(posed[i]["pose_kind"] for i in range(a, b) if i in posed)
        rows.append([name, f"{a}-{b - 1}", f"{sum(kinds.values())}/{b - a}", ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))])
    print(json.dumps({"path": args.path, "fps": args.fps, **whole, "unposed": len(whole["unposed"]),
                      "focal_px": focal.get("focal_px"), "true_focal_px": float(K[0, 0])}))
    print(markdown_table(["part", "frames", "posed", "pose kinds"], rows))
    ate = "-" if whole["ate_pct_path"] is None else f"{whole['ate_pct_path']:.4f} %"
    f_err = "-" if focal.get("focal_px") is None else f"{100 * (focal['focal_px'] / K[0, 0] - 1):+.1f} %"
    print(f"all frames: {whole['posed']} posed, segments {whole['segments']}, ATE {ate} of the path, focal {f_err}")


if __name__ == "__main__":
    main()
