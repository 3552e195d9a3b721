"""A hard cut: one video of two unrelated scenes, reconstructed as one stream.

Renders two synthetic clips with exact cameras (``stream4d.synthetic``: by default a room orbit,
then a drive down a street), joins them into one H.264 video with no transition, reconstructs it
(``stream4d reconstruct``, default backend) and scores each scene on its own frames: how many of
them are posed, in which world segments, and the ATE after one similarity per scene (% of that
scene's path). The two scenes cannot share a world, so the best outcome is every frame posed and
each scene in one segment of its own.

    python bench/bench_cut.py --out /tmp/cut [--frames 150,150] [--fps 30]
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

PARTS = {  # scene, trajectory, trajectory options
    "room orbit": ("room", "orbit", {"arc_deg": 60.0}),
    "street drive": ("street", "forward", {"step": 0.04}),
}


def render_cut(out: Path, frames: tuple[int, int], fps: float, size: tuple[int, int]) -> Path:
    """The joined clip ``out/clip.mp4`` and its ``cameras.json`` (each part's poses in its own world)."""
    W, H = size
    K = intrinsics_for(W, H)
    parts, start = [], 0.0
    for (scene_name, trajectory, kw), n in zip(PARTS.values(), frames):
        scene = make_scene(scene_name, seed=0)
        c2w = make_trajectory(trajectory, n, seed=0, scene=scene, **kw)
        parts.append(render_sequence(scene, c2w, K, W, H, fps=fps, start_time=start))
        start += n / fps
    write_sequence(out, chain(*parts), video="clip.mp4", fps=fps)
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
    ap.add_argument("--frames", default="150,150", help="frames of the first and second scene")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", default="512x384")
    args = ap.parse_args()
    frames = tuple(int(v) for v in args.frames.split(","))
    size = tuple(int(v) for v in args.size.split("x"))
    clip = render_cut(args.out / "cut", frames, args.fps, size)
    run = args.out / "run"
    exe = Path(sys.executable).with_name("stream4d")
    subprocess.run([str(exe), "reconstruct", str(clip), "--out", str(run), "--no-rrd", "--quiet"], check=True)
    posed = {f["index"]: f for f in json.loads((run / "trajectory.json").read_text())["frames"]}
    reference = json.loads((clip.parent / "cameras.json").read_text())["frames"]
    rows, bounds = [], (range(0, frames[0]), range(frames[0], sum(frames)))
    for name, indices in zip(PARTS, bounds):
        r = score_part(posed, reference, indices)
        ate = "-" if r["ate_pct_path"] is None else f"{r['ate_pct_path']:.4f} %"
        unposed = r["unposed"]
        gap = f"{len(unposed)} ({unposed[0]}-{unposed[-1]})" if unposed else "0"
        rows.append([name, f"{indices.start}-{indices.stop - 1}", r["posed"], gap, str(r["segments"]), ate])
        print(json.dumps({"part": name, **r}))
    print(markdown_table(["scene", "frames", "posed", "not posed", "segments", "ATE (% of its path)"], rows))


if __name__ == "__main__":
    main()
