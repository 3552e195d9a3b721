"""``stream4d reconstruct INPUT --out DIR``: the streaming run, from input to output folder."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream4d.pipeline import ReconstructConfig, load_config


def _resize(value: str) -> int | str | None:
    if value in ("none", "0"):
        return None
    if value == "vggt":
        return value
    return int(value)


def _intrinsics(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FX,FY,CX,CY in pixels of the input's frames")
    return values


def _not(value: bool) -> bool:
    return not value


# The one mapping of flags onto the config tree: flag dest -> (tree key, flag value -> tree value).
# Flags default to "not given" (argparse.SUPPRESS), so only the ones given override --config.
FLAG_KEYS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "backend": ("backend", None),
    "weights": ("weights", None),
    "device": ("device", None),
    "window": ("align.window", None),
    "overlap": ("align.overlap", None),
    "no_layerwise": ("align.layerwise", _not),
    "no_loop_closure": ("align.loop_closure.enabled", _not),
    "resize": ("ingest.resize", None),
    "stride": ("ingest.stride", None),
    "target_fps": ("ingest.target_fps", None),
    "max_frames": ("ingest.max_frames", None),
    "order": ("ingest.order", None),
    "intrinsics": ("ingest.intrinsics", None),
    "fov": ("ingest.fov_deg", None),
    "no_metadata_focal": ("ingest.metadata_focal", _not),
    "keyframes": ("keyframes.policy", None),
    "min_parallax": ("keyframes.min_parallax", None),
    "no_tracked_depth": ("tracked_depth.enabled", _not),
    "drop_duplicates": ("ingest.keyframes", None),
    "viewer": ("viz.mode", None),
    "rrd": ("viz.rrd_path", str),
    "no_rrd": ("rrd", _not),
    "no_gaussians": ("gaussians", _not),
    "max_gaussians": ("cache.max_gaussians", None),
    "splat_max_side": ("cache.window_max_side", lambda side: side or None),
    "save_depth": ("save_depth", None),
    "no_save_frames": ("save_frames", _not),
    "map_from": ("map_from", str),
    "save_map": ("save_map", str),
    "final_ba": ("final_ba", None),
}


def add_parser(sub) -> str:
    d = ReconstructConfig()
    given = argparse.SUPPRESS
    p = sub.add_parser("reconstruct", help="reconstruct a video, image folder, dataset folder or camera",
                       description="Stream INPUT through sliding windows, align them into one world and write "
                                   "trajectory.json, trajectory.tum, points.ply, splats.ply, recording.rrd and run.json.",
                       argument_default=given)
    p.add_argument("input", help="video file, image folder, dataset folder (cameras.json), camera:N or an RTSP/HTTP URL")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, default=None,
                   help="start from this config: a run.json (repeats that run) or a JSON config tree; "
                        "the flags given here override it")
    p.add_argument("--backend", choices=["default", "vggt"], help=f"window model (default {d.backend})")
    p.add_argument("--weights", help="VGGT checkpoint: .pt, .safetensors or hf:facebook/VGGT-1B (local cache only)")
    p.add_argument("--device", help="torch device for the VGGT backend (default: cuda if present)")
    p.add_argument("--window", type=int, help=f"frames per window (default {d.align.window})")
    p.add_argument("--overlap", type=int, help=f"frames shared by windows (default {d.align.overlap})")
    p.add_argument("--no-layerwise", action="store_true", help="Sim(3) alignment only, no LASER layer-wise scales")
    p.add_argument("--no-loop-closure", action="store_true",
                   help="no keyframe database, loop closure or pose graph (the ablation; docs/global_map.md)")
    p.add_argument("--resize", type=_resize, help=f"max side in px, 'vggt' or 'none' (default {d.ingest.resize})")
    p.add_argument("--stride", type=int, help=f"keep every N-th frame (default {d.ingest.stride})")
    p.add_argument("--fps", type=float, dest="target_fps", help="subsample to this frame rate")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--order", choices=["auto", "given", "retrieval"],
                   help="frame order for the windows: 'retrieval' reorders a photo collection so consecutive "
                        "frames overlap, 'auto' only when its given order overlaps far worse (never a live "
                        f"input; up to 400 frames, a longer input keeps its order; default {d.ingest.order})")
    camera = p.add_mutually_exclusive_group()
    camera.add_argument("--intrinsics", type=_intrinsics, metavar="FX,FY,CX,CY",
                        help="the camera's intrinsics in pixels of the input's frames, for an input that lists "
                             "none (video, camera, image folder): posed with them instead of self-calibrating")
    camera.add_argument("--fov", type=float, metavar="DEG",
                        help="the camera's field of view in degrees across the frames' longest side (principal "
                             "point at the centre), for an input that lists no intrinsics")
    p.add_argument("--no-metadata-focal", action="store_true",
                   help="ignore the focal length the input's metadata states (photos' EXIF, iPhone videos' "
                        "QuickTime tag; otherwise the starting point and a prior of self-calibration): for "
                        "frames cropped or zoomed after capture")
    p.add_argument("--keyframes", nargs="?", const="parallax", choices=["auto", "parallax", "all"],
                   help="which frames the window model sees: 'parallax' (a new keyframe once the camera "
                        "moved enough; the others are tracked, pose_kind 'tracked'), 'all', or 'auto': "
                        "parallax, at a third of --min-parallax for image folders, whose photos stay "
                        f"keyframes and frames of a video saved as images do not (default "
                        f"{d.keyframes.policy}; the bare flag means parallax)")
    p.add_argument("--min-parallax", type=float,
                   help="parallax (rotation-unexplained motion, share of the image's longest side) that "
                        f"makes a keyframe (default {d.keyframes.min_parallax})")
    p.add_argument("--no-tracked-depth", action="store_true",
                   help="give tracked frames no depth map (by default their keyframes' depth is projected "
                        "into them: depth/<index>.npz with --save-depth, and counted as posed with depth)")
    p.add_argument("--drop-duplicates", action="store_true",
                   help="drop near-duplicate frames at ingest by thumbnail difference (they get no pose)")
    p.add_argument("--viewer", choices=["none", "spawn", "serve"], help=f"live viewer (default {d.viz.mode})")
    p.add_argument("--rrd", type=Path, help="where to save the rerun recording (default OUT/recording.rrd)")
    p.add_argument("--no-rrd", action="store_true", help="do not save a rerun recording")
    p.add_argument("--no-gaussians", action="store_true", help="no Gaussian-splat cache / splats.ply")
    p.add_argument("--max-gaussians", type=int, help=f"splat cache size bound (default {d.cache.max_gaussians})")
    p.add_argument("--splat-max-side", type=int,
                   help="the splat cache takes every k-th pixel so frames fit this many px (0: every pixel; "
                        "3x slower, ~2 dB sharper renders at 512 px, see docs/benchmarks.md; "
                        f"default {d.cache.window_max_side})")
    p.add_argument("--save-depth", action="store_true", help="write depth/<index>.npz per posed frame")
    p.add_argument("--no-save-frames", action="store_true",
                   help="do not keep the model-resolution frames in OUT/frames (exports need them)")
    p.add_argument("--map", type=Path, dest="map_from",
                   help="a saved map folder (--save-map of an earlier run): relocalise INPUT in it and extend it")
    p.add_argument("--save-map", type=Path,
                   help="write a map folder a later run can continue (--map) or merge (stream4d merge)")
    ba = p.add_mutually_exclusive_group()
    ba.add_argument("--final-ba", action="store_true",
                    help="after a finite input, one bundle adjustment of all keyframes and sparse tracks, every "
                         "output following it: done by default when pycolmap is installed (pip install "
                         "'stream4d[ba]') and no map is loaded (--map); this flag asks for it then too "
                         "(an error without pycolmap)")
    ba.add_argument("--no-final-ba", action="store_false", dest="final_ba",
                    help="skip the final bundle adjustment (faster; the windows' poses as the stream left them)")
    p.add_argument("--export", default=None, metavar="FORMATS",
                   help="after the run, export to OUT/<format>: colmap, nerfstudio or both comma-separated")
    p.add_argument("--gt", type=Path, default=None, help="cameras.json ground truth: print ATE at the end")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    return "reconstruct"


def config_from_args(args: argparse.Namespace) -> ReconstructConfig:
    """``--config`` (or the defaults) with the flags given on top."""
    base = load_config(args.config) if args.config else ReconstructConfig()
    values = {key: convert(getattr(args, dest)) if convert else getattr(args, dest)
              for dest, (key, convert) in FLAG_KEYS.items() if hasattr(args, dest)}
    return base.override(values) if values else base


def _print_map(summary) -> None:
    record = (summary.map or {})
    loaded, saved = record.get("loaded"), record.get("saved")
    if loaded and loaded["relocalised"]:
        print(f"relocalised in the map {loaded['map']} (frame {loaded['frame_index']} matched map keyframe "
              f"{loaded['map_keyframe']} with {loaded['inliers']} inliers): outputs are in the map's world")
    elif loaded:
        print(f"NOT relocalised in the map {loaded['map']}: outputs are in the input's own world")
    if record.get("segment") is not None:
        print(f"the frames are posed in more than one world (trajectory.json \"segment\"); "
              f"points.ply and splats.ply show world segment {record['segment']}, the largest")
    if saved:
        what = "the loaded map extended by this run" if saved["includes_loaded_map"] else "this run"
        print(f"map saved to {saved['path']} ({what}: {saved['keyframes']} keyframes, {saved['frames']} frames)")


def run(args: argparse.Namespace) -> int:
    from align.bundle import BundleAdjustmentUnavailable
    from recon.ingest import IngestError
    from stream4d.pipeline import reconstruct
    from stream4d.pipeline.report import pose_summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        if args.export:
            from stream4d.commands.export import parse_formats

            formats = parse_formats(args.export)
            if not config.save_frames:
                raise ValueError("--export needs the saved frames: drop --no-save-frames")
        if config.map_from:
            from stream4d.pipeline.maps import read_map

            read_map(config.map_from)  # a bad map folder is bad input, before anything runs
        if config.final_ba:
            from align.bundle import require_pycolmap

            require_pycolmap()  # said now, not after the whole stream
    except (ValueError, IngestError, BundleAdjustmentUnavailable) as exc:
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
    print(f"{pose_summary(s)}; {s.gaussians} Gaussians; {summary.timings['total']:.1f} s "
          f"({s.frames_received / max(summary.timings['total'], 1e-9):.2f} frames/s) -> {args.out}")
    for line in _camera_lines(summary.outputs.get("run.json")):
        print(line)
    _print_map(summary)
    for warning in s.warnings:
        print(f"warning: {warning}")
    if s.frames_posed == 0:  # the only failure: nothing at all could be posed
        print(f"stream4d reconstruct: no frame could be posed (details in {args.out / 'run.json'})", file=sys.stderr)
        return 1
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
        if config.viz.mode == "serve":
            # The web viewer lives in this process: keep it up until the user is done looking.
            print("serving the recording; press Ctrl-C to stop")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
    return 0


def _camera_lines(run_json) -> list[str]:
    """What the run found about the camera, for the console: the focal length (``_focal_line``) and the
    lens the final adjustment kept (``"lens: k1 = -0.0794 (found by the final adjustment), the image corner
    bent by 21.3 px; ..."``)."""
    import json

    try:
        run = json.loads(Path(run_json).read_text()) if run_json else {}
    except (OSError, ValueError):
        return []
    lines = [_focal_line(run)]
    lens = (run.get("final_ba") or {}).get("lens") or {}
    if lens.get("kept"):
        lines.append(f"lens: k1 = {lens['radial_k1']:.4f} (found by the final adjustment), the image corner bent by "
                     f"{lens['corner_px']:.1f} px; trajectory.json and the exports carry it")
    return [line for line in lines if line]


def _focal_line(run: dict) -> str | None:
    """``"focal length (self-calibrated): 281.3 px at 512x154, +- 6.3 %, fixed after window 1"``."""
    cal = run.get("intrinsics")
    if cal and "held_focal_px" in cal:
        W, H = cal["model_size"]
        windows = cal.get("windows", [])
        # a window solved through a lens its pinhole misread (recon/default/lens_search.py) read one too
        wide = sum(w.get("plausible") is False or bool(w.get("misread")) for w in windows)
        grown = sum(bool((w.get("lens") or {}).get("grown_through")) for w in windows)
        why = (f"{wide} window(s) read a view wider than a rectilinear lens sees, a lens that bends rather than a "
               "focal length" if wide else "no window's motion constrained it")
        if grown:
            why += f"; {grown} window(s) solved through that lens instead"
        return (f"focal length: NOT determined by the input ({why}); "
                f"held at the starting guess {cal['held_focal_px']:.1f} px at {W}x{H}: depth and points "
                "are only as right as that guess (give --fov or --intrinsics when you know them)")
    if not cal or "focal_px" not in cal:
        return None
    W, H = cal["model_size"]
    stated = cal.get("stated_focal")
    if cal.get("focal_source") == "stated":
        return (f"focal length: {cal['focal_px']:.1f} px at {W}x{H} as the input's metadata states it, +- "
                f"{100 * cal['focal_sigma_rel']:.0f} %; no window's motion refined it (give --fov or "
                "--intrinsics when you know better, --no-metadata-focal to self-calibrate without it)")
    fixed = f"fixed after window {cal['fixed_at_window']}" if cal["fixed"] else "not fixed"
    line = (f"focal length (self-calibrated): {cal['focal_px']:.1f} px at {W}x{H}, "
            f"+- {100 * cal['focal_sigma_rel']:.1f} %, {fixed}")
    if stated:
        said = f"the metadata stated {stated['focal_rel'] * max(W, H):.1f} px"
        line += f"; {said}, used" if stated["used"] else f"; {said}, left out: the windows disagree"
    refined = ((run.get("final_ba") or {}).get("focal") or {})
    if refined.get("refined"):
        line += f"; {refined['focal_px_after']:.1f} px after the final bundle adjustment"
    return line
