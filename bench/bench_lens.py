"""Videos seen through a lens: the radial coefficient of the windows and of the final adjustment.

Renders synthetic clips (``stream4d.synthetic``, exact cameras) through a lens of radial coefficient
k1 (``geometry.radial_distorted``: barrel below 0, as wide-angle lenses bend, pincushion above) and
reconstructs each video once per variant with ``stream4d reconstruct`` (intrinsics unknown):

- ``pinhole``: no lens anywhere (config ``final_ba_lens`` false, windows' ``lens_min_corner_px`` 0);
- ``final``: the final adjustment's lens alone (windows' ``lens_min_corner_px`` 0);
- ``windows``: the default, self-calibrating windows adjust a lens too and the final adjustment
  starts from theirs.

Scored on every frame: ATE after one similarity, % of the bounding-box diagonal of the true camera
centres; the coefficient the run kept (run.json ``final_ba.lens``), the windows' own, and the focal
length against the truth.

    python bench/bench_lens.py --out /tmp/lens [--clips handheld:0,handheld:0.03,...] [--variants final,windows]
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
         "dashcam": ("street", "forward", 200, 25.0, (640, 360), 90.0, 5315),
         # long enough for the stream's focal to be fixed and for loops (the orbit: 3.3 turns)
         "orbit90": ("room", "orbit", 400, 30.0, (512, 384), 90.0, 5721),
         "sideways90": ("street", "sideways", 400, 30.0, (512, 384), 90.0, 5722)}
CLIPS = "handheld:0,handheld:0.03,handheld:-0.08,forward:0,forward:-0.05,dashcam:0,dashcam:-0.12"
WINDOWS_PINHOLE = {"model": {"sfm": {"lens_min_corner_px": 0.0}}}
VARIANTS = {"pinhole": {"final_ba_lens": False, **WINDOWS_PINHOLE}, "final": WINDOWS_PINHOLE, "windows": {}}


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
    run_json = json.loads((run / "run.json").read_text())
    record = run_json["final_ba"] or {}
    windows = (run_json.get("intrinsics") or {}).get("windows") or []
    kept = [w["lens"]["radial_k1"] for w in windows if (w.get("lens") or {}).get("kept")]
    return {"posed": f"{len(posed)}/{len(reference)}", "ate_pct": 100 * float(np.sqrt((err ** 2).mean())) / extent,
            "lens": record.get("lens"), "focal_px": float(posed[0]["K"][0][0]), "true_focal_px": reference[0]["K"][0][0],
            "final_ba_s": record.get("seconds"), "final_ba_skipped": record.get("skipped"),
            "windows_lens": f"{len(kept)}/{len(windows)}" + (f" ({min(kept):.3f} to {max(kept):.3f})" if kept else ""),
            "run_s": run_json.get("timings_s", {}).get("total")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clips", default=CLIPS, help="path:k1 pairs, comma-separated, path of " + ", ".join(PATHS))
    ap.add_argument("--variants", default="final,windows", help="comma-separated, of " + ", ".join(VARIANTS))
    args = ap.parse_args()
    variants = args.variants.split(",")
    exe = Path(sys.executable).with_name("stream4d")
    rows, results = [], []
    for item in args.clips.split(","):
        path, k1 = item.split(":")
        clip = render(path, float(k1), args.out / f"{path}{k1}")
        for variant in variants:
            config = args.out / f"{variant}.json"
            config.write_text(json.dumps(VARIANTS[variant]))
            run = args.out / f"{path}{k1}_{variant}"
            subprocess.run([str(exe), "reconstruct", str(clip / "clip.mp4"), "--out", str(run), "--no-rrd",
                            "--no-gaussians", "--quiet", "--config", str(config)], check=True)
            scored = score(clip, run)
            results.append({"path": path, "k1": float(k1), "variant": variant, **scored})
            kept = scored["lens"] or {}
            rows.append([path, k1, variant, scored["posed"], f"{scored['ate_pct']:.4f}", scored["windows_lens"],
                         f"{kept.get('radial_k1', '-')} ({'kept' if kept.get('kept') else 'not kept'}, "
                         f"{kept.get('corner_px', '-')} px)" if not scored["final_ba_skipped"] else "not adjusted",
                         f"{scored['focal_px']:.1f} / {scored['true_focal_px']:.1f}",
                         f"{scored['final_ba_s']}", f"{scored['run_s']:.0f}" if scored["run_s"] else "-"])
    print(json.dumps(results))
    print(markdown_table(["path", "true k1", "variant", "posed", "ATE %", "windows with a lens (k1)",
                          "final k1 (corner)", "focal px: found / true", "final adjustment s", "run s"], rows))


if __name__ == "__main__":
    main()
