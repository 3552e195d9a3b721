"""Videos seen through a lens: the final adjustment's radial coefficient, on and off.

Renders synthetic clips (``stream4d.synthetic``, exact cameras) through a lens of radial coefficient
k1 (``geometry.radial_distorted``: barrel below 0, as wide-angle lenses bend, pincushion above) and
reconstructs each video twice with ``stream4d reconstruct`` (intrinsics unknown): config
``final_ba_lens`` true (the default) and false (pinholes). Scored on every frame: ATE after one
similarity, % of the bounding-box diagonal of the true camera centres; the coefficient the run
kept (run.json ``final_ba.lens``) and its focal length against the truth.

    python bench/bench_lens.py --out /tmp/lens [--clips handheld:0,handheld:0.03,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from stream4d.geometry import umeyama  # noqa: E402
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence, write_sequence  # noqa: E402

# path: (scene, trajectory, frames, fps, size, horizontal field of view, seed)
PATHS = {"handheld": ("room", "handheld", 180, 30.0, (512, 384), 60.0, 5311),
         "forward": ("street", "forward", 200, 25.0, (640, 360), 70.0, 5313),
         "dashcam": ("street", "forward", 200, 25.0, (640, 360), 90.0, 5315)}
CLIPS = "handheld:0,handheld:0.03,handheld:-0.08,forward:0,forward:-0.05,dashcam:0,dashcam:-0.12"


def render(path: str, k1: float, dest: Path) -> Path:
    scene_name, trajectory, frames, fps, (W, H), fov, seed = PATHS[path]
    scene = make_scene(scene_name, seed=seed)
    c2w = make_trajectory(trajectory, frames, seed=seed, scene=scene)
    views = render_sequence(scene, c2w, intrinsics_for(W, H, fov), W, H, fps=fps, noise_std=2.0, seed=seed,
                            radial_k1=k1)
    write_sequence(dest, views, video="clip.mp4", fps=fps)
    return dest


def score(clip: Path, run: Path) -> dict:
    reference = json.loads((clip / "cameras.json").read_text())["frames"]
    posed = json.loads((run / "trajectory.json").read_text())["frames"]
    E = np.array([np.asarray(f["c2w"])[:3, 3] for f in posed])
    G = np.array([np.asarray(reference[f["index"]]["c2w"])[:3, 3] for f in posed])
    truth = np.array([np.asarray(f["c2w"])[:3, 3] for f in reference])
    extent = float(np.linalg.norm(np.ptp(truth, axis=0)))
    err = np.linalg.norm(umeyama(E, G).apply(E) - G, axis=1)
    record = json.loads((run / "run.json").read_text())["final_ba"] or {}
    return {"posed": f"{len(posed)}/{len(reference)}", "ate_pct": 100 * float(np.sqrt((err ** 2).mean())) / extent,
            "lens": record.get("lens"), "focal_px": float(posed[0]["K"][0][0]), "true_focal_px": reference[0]["K"][0][0],
            "final_ba_s": record.get("seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clips", default=CLIPS, help="path:k1 pairs, comma-separated, path of " + ", ".join(PATHS))
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("stream4d")
    rows, results = [], []
    for item in args.clips.split(","):
        path, k1 = item.split(":")
        clip = render(path, float(k1), args.out / f"{path}{k1}")
        scored = {}
        for lens in (False, True):
            config = args.out / f"lens_{lens}.json"
            config.write_text(json.dumps({"final_ba_lens": lens}))
            run = args.out / f"{path}{k1}_{'lens' if lens else 'pinhole'}"
            subprocess.run([str(exe), "reconstruct", str(clip / "clip.mp4"), "--out", str(run), "--no-rrd",
                            "--no-gaussians", "--quiet", "--config", str(config)], check=True)
            scored[lens] = score(clip, run)
        results.append({"path": path, "k1": float(k1), "pinhole": scored[False], "lens": scored[True]})
        kept = scored[True]["lens"] or {}
        rows.append([path, k1, scored[True]["posed"], f"{scored[False]['ate_pct']:.4f}", f"{scored[True]['ate_pct']:.4f}",
                     f"{kept.get('radial_k1', '-')} ({'kept' if kept.get('kept') else 'not kept'}, "
                     f"{kept.get('corner_px', '-')} px)",
                     f"{scored[False]['focal_px']:.1f} / {scored[True]['focal_px']:.1f} / {scored[True]['true_focal_px']:.1f}",
                     f"{scored[False]['final_ba_s']} / {scored[True]['final_ba_s']}"])
    print(json.dumps(results))
    print(markdown_table(["path", "true k1", "posed", "ATE % pinhole", "ATE % lens", "k1 found (corner)",
                          "focal px: pinhole / lens / true", "final adjustment s: pinhole / lens"], rows))


if __name__ == "__main__":
    main()
