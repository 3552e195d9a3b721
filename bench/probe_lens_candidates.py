"""One window of a lensed sideways walk, grown through candidate lenses (docs/benchmarks.md, "Growing
the barrel-lens window through candidate lenses").

Renders 20 views of ``bench_lens.py``'s ``sideways90`` path (street, FOV 90, 512x384) through a lens
of radial coefficient ``--k1``, undistorts them with OpenCV through ``--focal`` px and each candidate
coefficient, and grows each set as pinhole images with the intrinsics hidden
(``DefaultWindowModel.predict``). Prints, per candidate: the window's median reprojection error (px),
its focal length (px), the largest rotation error of a view relative to the first (deg; the camera
never turns) and the ATE after one similarity (% of the path's length).

    python bench/probe_lens_candidates.py [--k1 -0.15] [--focal 228] [--candidates 0,-0.05,-0.1,-0.12,-0.15,-0.2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lens import PATHS  # noqa: E402

from recon.default.model import DefaultWindowModel  # noqa: E402
from stream4d.contracts import Frame  # noqa: E402
from stream4d.geometry import rotation_angle_deg, umeyama  # noqa: E402
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k1", type=float, default=-0.15, help="the lens the views are rendered through")
    ap.add_argument("--focal", type=float, default=228.0, help="px: the focal the candidates undistort through")
    ap.add_argument("--candidates", default="0,-0.05,-0.1,-0.12,-0.15,-0.2")
    ap.add_argument("--first", type=int, default=0, help="the window's first frame of the path")
    ap.add_argument("--step", type=int, default=2, help="frames of the path between the window's views")
    args = ap.parse_args()

    scene_name, trajectory, frames_total, fps, (W, H), fov, seed = PATHS["sideways90"]
    scene = make_scene(scene_name, seed=seed)
    c2w = make_trajectory(trajectory, frames_total, seed=seed, scene=scene)[args.first::args.step][:20]
    views = list(render_sequence(scene, c2w, intrinsics_for(W, H, fov), W, H, fps=fps, noise_std=2.0, seed=seed,
                                 radial_k1=args.k1))
    guess = np.array([[args.focal, 0.0, (W - 1) / 2], [0.0, args.focal, (H - 1) / 2], [0.0, 0.0, 1.0]])
    print("| candidate k1 | median reprojection px | focal px | largest turn deg | ATE % of the path | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k1 in (float(c) for c in args.candidates.split(",")):
        images = [cv2.undistort(v.rgb, guess, np.array([k1, 0.0, 0.0, 0.0, 0.0]), None, guess) if k1 else v.rgb
                  for v in views]
        frames = [Frame(index=k, timestamp=k / fps, image=im, source=f"sideways90#{k}") for k, im in enumerate(images)]
        t0 = time.perf_counter()
        pred = DefaultWindowModel().predict(frames)
        first = pred.c2w[0, :3, :3] @ c2w[0, :3, :3].T
        turn = max(float(rotation_angle_deg((p[:3, :3] @ t[:3, :3].T) @ first.T)) for p, t in zip(pred.c2w, c2w))
        centres, truth = pred.c2w[:, :3, 3], c2w[:, :3, 3]
        err = np.linalg.norm(umeyama(centres, truth).apply(centres) - truth, axis=1)
        path = float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum())
        reproj = pred.info.get("median_reproj_px")
        print(f"| {k1:g} | {reproj if reproj is None else round(reproj, 3)} | {pred.K[0, 0, 0]:.1f} | {turn:.2f} "
              f"| {100 * np.sqrt((err ** 2).mean()) / path:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
