"""``stream4d synth``: render a synthetic sequence with exact geometry into a data folder."""

from __future__ import annotations

import argparse
import sys
import time


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x384, got {text!r}") from None
    if w < 2 or h < 2:
        raise argparse.ArgumentTypeError(f"size must be at least 2x2, got {text!r}")
    return w, h


def _option(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"trajectory option must look like KEY=NUMBER, got {text!r}") from None


def add_parser(subparsers) -> str:
    from stream4d.synthetic.layouts import SCENE_KINDS
    from stream4d.synthetic.trajectories import TRAJECTORY_KINDS

    p = subparsers.add_parser(
        "synth",
        help="render a synthetic scene (RGB, exact depth, poses) along a camera path",
        description="Render a synthetic sequence: images/NNNNNN.png (or an H.264 video with --video), "
                    "cameras.json (K, c2w, timestamp per frame) and, with --depth, exact z-depth maps. "
                    "Exit code 2 on bad input.",
    )
    p.add_argument("--scene", choices=SCENE_KINDS, default="room")
    p.add_argument("--trajectory", choices=TRAJECTORY_KINDS, default="orbit",
                   help="camera path: forward (drive), orbit (circle looking in), sideways (walk along a wall), "
                        "handheld (hover), figure8 (walk a figure-eight looking ahead; laps=2 by default, "
                        "the last frame ends the last lap) (default orbit)")
    p.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    p.add_argument("--size", type=_size, default=(512, 384), help="WxH in pixels (default 512x384)")
    p.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate: timestamps and video (default 10)")
    p.add_argument("--seed", type=int, default=0, help="scene, path and noise seed (default 0)")
    p.add_argument("--noise", type=float, default=0.0, help="gaussian pixel noise std, 0..255 units (default 0)")
    p.add_argument("--radial", type=float, default=0.0, metavar="K1",
                   help="lens distortion: normalised image coordinates n are seen at n (1 + K1 |n|^2) (COLMAP's "
                        "SIMPLE_RADIAL, OpenCV's k1); negative bends like a wide-angle lens (barrel), positive "
                        "like pincushion (default 0, a pinhole); cameras.json records it per frame")
    p.add_argument("--moving-object", action="store_true", help="add an object moving on a known path")
    p.add_argument("--traj-kw", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="trajectory option, repeatable (e.g. arc_deg=60, step=0.2, laps=3; "
                        "see stream4d.synthetic.make_trajectory)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--video", default=None, metavar="NAME.mp4", help="write an H.264 video instead of PNGs")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--depth", action="store_true", help="also write depth/NNNNNN.npy (float32 z-depth)")
    p.add_argument("--masks", action="store_true", help="also write masks/NNNNNN.png of the moving object")
    return "synth"


def run(args: argparse.Namespace) -> int:
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence, write_sequence

    width, height = args.size
    try:
        if args.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {args.frames}")
        scene = make_scene(args.scene, seed=args.seed, moving_object=args.moving_object)
        traj_kw = dict(args.traj_kw)
        c2w = make_trajectory(args.trajectory, args.frames, seed=args.seed, scene=scene, **traj_kw)
        K = intrinsics_for(width, height, args.fov)
        views = render_sequence(scene, c2w, K, width, height, fps=args.fps, noise_std=args.noise,
                                seed=args.seed, progress=True, radial_k1=args.radial)
        meta = {"scene": {"kind": args.scene, "seed": args.seed, "moving_object": args.moving_object},
                "trajectory": {"kind": args.trajectory, "frames": args.frames, **traj_kw},
                "noise_std": args.noise, **({"radial_k1": args.radial} if args.radial else {})}
        start = time.perf_counter()
        path = write_sequence(args.out, views, video=args.video or False, fps=args.fps, depth=args.depth,
                              masks=args.masks, crf=args.crf, meta=meta)
    except (ValueError, OSError) as exc:
        print(f"stream4d synth: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(f"wrote {args.frames} frames ({width}x{height}) to {args.out} in {elapsed:.1f} s "
          f"({elapsed / args.frames:.2f} s/frame); cameras: {path}")
    return 0
