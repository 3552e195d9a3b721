"""Hard cuts: one video of unrelated scenes, reconstructed as one stream.

Renders synthetic clips with exact cameras (``stream4d.synthetic``; ``--parts``, by default a
room orbit, then a drive down a street), joins them into one H.264 video with no transition,
reconstructs it (``stream4d reconstruct``, default backend) and scores each part on its own
frames: how many of them are posed, in which world segments, and the ATE after one similarity
per part (% of that part's path). Different scenes cannot share a world, so the best outcome is
every frame posed and each scene in one segment; a part that returns to an earlier scene
(``room,street,room``: the same orbit again) should rejoin that scene's segment.

    python bench/bench_cut.py --out /tmp/cut [--parts room,street] [--frames 150,150] [--fps 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from itertools import chain
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from stream4d.geometry import umeyama  # noqa: E402
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence, write_sequence  # noqa: E402

PARTS = {  # name -> (label, scene, trajectory, trajectory options)
    "room": ("room orbit", "room", "orbit", {"arc_deg": 60.0}),
    "street": ("street drive", "street", "forward", {"step": 0.04}),
}


def render_cut(out: Path, parts: list[str], frames: list[int], fps: float, size: tuple[int, int]) -> Path:
    """The joined clip ``out/clip.mp4`` and its ``cameras.json`` (each scene's poses in its own world)."""
    W, H = size
    K = intrinsics_for(W, H)
    views, start = [], 0.0
    for name, n in zip(parts, frames):
        _, scene_name, trajectory, kw = PARTS[name]
        scene = make_scene(scene_name, seed=0)
        c2w = make_trajectory(trajectory, n, seed=0, scene=scene, **kw)
        views.append(render_sequence(scene, c2w, K, W, H, fps=fps, start_time=start))
        start += n / fps
    write_sequence(out, chain(*views), video="clip.mp4", fps=fps)
    return out / "clip.mp4"


def score_part(posed: dict[int, dict], reference: list[dict], indices: range) -> dict:
    """Posed frames of one scene, their segments, and the ATE after one similarity (% of its path)."""
    ref = np.array([np.asarray(reference[i]["c2w"])[:3, 3] for i in indices])
    path = float(np.linalg.norm(np.diff(ref, axis=0), axis=1).sum())
    mine = [i for i in indices if i in posed]
    row = {"posed": f"{len(mine)}/{len(indices)}", "segments": sorted({posed[i]["segment"] for i in mine}),
           "unposed": [i for i in indices if i not in posed], "ate_pct_path": None}
    if len(mine) >= 3:
        E = np.array([np.asarray(posed[i]["c2w"])[:3, 3] for i in mine])
        G = np.array([np.asarray(reference[i]["c2w"])[:3, 3] for i in mine])
        err = np.linalg.norm(umeyama(E, G).apply(E) - G, axis=1)
        row["ate_pct_path"] = 100 * float(np.sqrt((err ** 2).mean())) / path
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--parts", default="room,street", help=f"scenes in order, of {sorted(PARTS)}")
    ap.add_argument("--frames", default="150,150", help="frames of each part")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", default="512x384")
    args = ap.parse_args()
    parts = args.parts.split(",")
    frames = [int(v) for v in args.frames.split(",")]
    if len(frames) != len(parts) or any(p not in PARTS for p in parts):
        ap.error(f"--frames needs one count per part and --parts names of {sorted(PARTS)}")
    size = tuple(int(v) for v in args.size.split("x"))
    clip = render_cut(args.out / "cut", parts, frames, args.fps, size)
    run = args.out / "run"
    exe = Path(sys.executable).with_name("stream4d")
    subprocess.run([str(exe), "reconstruct", str(clip), "--out", str(run), "--no-rrd", "--quiet"], check=True)
    posed = {f["index"]: f for f in json.loads((run / "trajectory.json").read_text())["frames"]}
    reference = json.loads((clip.parent / "cameras.json").read_text())["frames"]
    rows, starts = [], np.cumsum([0] + frames)
    for name, a, b in zip(parts, starts[:-1], starts[1:]):
        indices = range(int(a), int(b))
        r = score_part(posed, reference, indices)
        name = PARTS[name][0]
        ate = "-" if r["ate_pct_path"] is None else f"{r['ate_pct_path']:.4f} %"
        unposed = r["unposed"]
        gap = f"{len(unposed)} ({unposed[0]}-{unposed[-1]})" if unposed else "0"
        rows.append([name, f"{indices.start}-{indices.stop - 1}", r["posed"], gap, str(r["segments"]), ate])
        print(json.dumps({"part": name, **r}))
    print(markdown_table(["scene", "frames", "posed", "not posed", "segments", "ATE (% of its path)"], rows))


if __name__ == "__main__":
    main()
