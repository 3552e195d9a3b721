"""``stream4d reconstruct INPUT --out DIR``: the streaming run, from input to output folder."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from stream4d.pipeline import ReconstructConfig


def _resize(value: str) -> int | str | None:
    if value in ("none", "0"):
        return None
    if value == "vggt":
        return value
    return int(value)


def add_parser(sub) -> str:
    d = ReconstructConfig()
    p = sub.add_parser("reconstruct", help="reconstruct a video, image folder, dataset folder or camera",
                       description="Stream INPUT through sliding windows, align them into one world and write "
                                   "trajectory.json, trajectory.tum, points.ply, splats.ply, recording.rrd and run.json.")
    p.add_argument("input", help="video file, image folder, dataset folder (cameras.json), camera:N or an RTSP/HTTP URL")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--backend", choices=["default", "vggt"], default=d.backend)
    p.add_argument("--weights", help="VGGT checkpoint: .pt, .safetensors or hf:facebook/VGGT-1B (local cache only)")
    p.add_argument("--device", default=None, help="torch device for the VGGT backend (default: cuda if present)")
    p.add_argument("--window", type=int, default=d.window, help=f"frames per window (default {d.window})")
    p.add_argument("--overlap", type=int, default=d.overlap, help=f"frames shared by windows (default {d.overlap})")
    p.add_argument("--no-layerwise", action="store_true", help="Sim(3) alignment only, no LASER layer-wise scales")
    p.add_argument("--resize", type=_resize, default=d.resize, help="max side in px, 'vggt' or 'none' (default 512)")
    p.add_argument("--stride", type=int, default=d.stride)
    p.add_argument("--fps", type=float, default=None, dest="target_fps", help="subsample to this frame rate")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--keyframes", action="store_true", help="skip near-duplicate frames")
    p.add_argument("--viewer", choices=["none", "spawn", "serve"], default=d.viewer)
    p.add_argument("--rrd", type=Path, default=None, help="where to save the rerun recording (default OUT/recording.rrd)")
    p.add_argument("--no-rrd", action="store_true", help="do not save a rerun recording")
    p.add_argument("--no-gaussians", action="store_true", help="no Gaussian-splat cache / splats.ply")
    p.add_argument("--max-gaussians", type=int, default=d.max_gaussians)
    p.add_argument("--splat-max-side", type=int, default=d.splat_max_side,
                   help="the splat cache takes every k-th pixel so frames fit this many px (0: every pixel; "
                        "3x slower, ~2 dB sharper renders at 512 px, see docs/benchmarks.md)")
    p.add_argument("--save-depth", action="store_true", help="write depth/<index>.npz per posed frame")
    p.add_argument("--no-save-frames", action="store_true",
                   help="do not keep the model-resolution frames in OUT/frames (exports need them)")
    p.add_argument("--export", default=None, metavar="FORMATS",
                   help="after the run, export to OUT/<format>: colmap, nerfstudio or both comma-separated")
    p.add_argument("--gt", type=Path, default=None, help="cameras.json ground truth: print ATE at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return "reconstruct"


def run(args: argparse.Namespace) -> int:
    from recon.ingest import IngestError
    from stream4d.pipeline import reconstruct

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ReconstructConfig(
            backend=args.backend, weights=args.weights, device=args.device, window=args.window,
            overlap=args.overlap, layerwise=not args.no_layerwise, resize=args.resize, stride=args.stride,
            target_fps=args.target_fps, max_frames=args.max_frames, keyframes=args.keyframes,
            viewer=args.viewer, rrd=not args.no_rrd, rrd_path=str(args.rrd) if args.rrd else None, gaussians=not args.no_gaussians,
            max_gaussians=args.max_gaussians, splat_max_side=args.splat_max_side or None,
            save_depth=args.save_depth, save_frames=not args.no_save_frames)
        if args.export:
            from stream4d.commands.export import parse_formats

            formats = parse_formats(args.export)
            if args.no_save_frames:
                raise ValueError("--export needs the saved frames: drop --no-save-frames")
    except ValueError as exc:
        print(f"stream4d reconstruct: {exc}", file=sys.stderr)
        return 2
    try:
        summary = reconstruct(args.input, args.out, config, progress=not args.quiet)
    except IngestError as exc:
        # Whatever was decoded before the input broke has been reconstructed and written.
        print(f"stream4d reconstruct: input error: {exc} (outputs for the frames before it are in {args.out})",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a clear message, the traceback is in the log
        logging.getLogger("stream4d").exception("reconstruct failed")
        print(f"stream4d reconstruct: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    s = summary.stats
    print(f"posed {s.frames_posed}/{s.frames_received} frames in {summary.timings['total']:.1f} s "
          f"({s.frames_received / max(summary.timings['total'], 1e-9):.2f} frames/s), {s.windows} windows, "
          f"{s.gaussians} Gaussians, {s.frames_skipped} skipped -> {args.out}")
    if args.export:
        from stream4d.commands.export import export_all
        from stream4d.export import ExportError

        try:
            for path in export_all(args.out, formats):
                print(f"exported {path}")
        except ExportError as exc:
            print(f"stream4d reconstruct: export failed: {exc}", file=sys.stderr)
            return 1
    if args.gt is not None:
        from stream4d.evaluation import evaluate_output, print_report

        print_report(evaluate_output(args.out, args.gt))
    if summary.viewer_url:
        print(f"viewer: {summary.viewer_url}")
        if args.viewer == "serve":
            # The web viewer lives in this process: keep it up until the user is done looking.
            print("serving the recording; press Ctrl-C to stop")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
    return 0
