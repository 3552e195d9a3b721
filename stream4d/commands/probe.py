"""``stream4d probe INPUT``: what an input is and how reading it goes.

Reads the input through ``recon.ingest`` with the given selection / resize
options and prints the source info, frame counts, timestamps and decode
speed, as a table or as JSON (``--json``). Exit code 0 when the whole input
was read, 1 when it broke part-way (what was read is still reported), 2 when
it could not be opened.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from tqdm import tqdm

from recon.ingest import IngestError, IngestOptions, open_source, parse_resize
from recon.ingest.options import DEFAULT_KEYFRAME_MIN_MOTION

LIVE_DEFAULT_MAX_FRAMES = 100  # a camera never ends: probe this many frames unless told


def add_parser(subparsers) -> str:
    p = subparsers.add_parser("probe", help="describe an input (video, images, dataset, camera) and time reading it",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="video file, image folder, dataset folder or .json, camera:N, URL, or - for stdin bytes")
    p.add_argument("--stride", type=int, default=1, help="keep every N-th frame (default 1)")
    p.add_argument("--target-fps", type=float, default=None, help="subsample to at most this rate by timestamps")
    p.add_argument("--max-frames", type=int, default=None,
                   help=f"stop after N frames (live sources default to {LIVE_DEFAULT_MAX_FRAMES})")
    p.add_argument("--resize", default=None, help="none, vggt, or a max side in pixels")
    p.add_argument("--keyframes", action="store_true", help="skip near-duplicate frames")
    p.add_argument("--keyframe-min-motion", type=float, default=DEFAULT_KEYFRAME_MIN_MOTION,
                   help=f"motion threshold for --keyframes (default {DEFAULT_KEYFRAME_MIN_MOTION})")
    p.add_argument("--image-fps", type=float, default=None, help="frame rate of image folders / datasets")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for cameras / network streams")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return "probe"


def run(args: argparse.Namespace) -> int:
    try:
        options = IngestOptions(
            stride=args.stride, target_fps=args.target_fps, max_frames=args.max_frames,
            resize=parse_resize(args.resize), keyframes=args.keyframes,
            keyframe_min_motion=args.keyframe_min_motion, image_fps=args.image_fps, timeout=args.timeout)
        spec = sys.stdin.buffer if args.input == "-" else args.input
        source = open_source(spec, options, name="stdin" if args.input == "-" else None)
    except IngestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with source:
        report = probe(source, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 1 if report["error"] else 0


def probe(source, progress: bool = True) -> dict:
    """Read ``source`` through and describe it as a JSON-serialisable dict."""
    info = source.info
    if info.kind in ("camera", "push") and source.options.max_frames is None:
        # Cameras never end: cap the probe (IngestOptions is frozen, so swap in a capped copy).
        source.options = replace(source.options, max_frames=LIVE_DEFAULT_MAX_FRAMES)
    first_t = last_t = None
    out_sizes: set[tuple[int, int]] = set()
    error = None
    start = time.perf_counter()
    bar = tqdm(total=info.frame_count if _one_to_one(source.options) else None, unit="frame",
               desc=f"probe {info.name}", disable=not progress, file=sys.stderr, leave=False)
    try:
        for frame in source:
            first_t = frame.timestamp if first_t is None else first_t
            last_t = frame.timestamp
            out_sizes.add(frame.size)
            bar.update(1)
    except IngestError as err:
        error = {"reason": err.reason, "message": str(err)}
    finally:
        bar.close()
    wall = time.perf_counter() - start
    stats = source.stats
    span = (last_t - first_t) if first_t is not None and last_t is not None else None
    return {
        "input": {"kind": info.kind, "name": info.name, "fps": info.fps,
                  "frame_count": info.frame_count, "size": list(info.size) if info.size else None},
        "frames": {"decoded": stats.decoded, "yielded": stats.yielded, "skipped_stride": stats.skipped_stride,
                   "skipped_keyframe": stats.skipped_keyframe, "dropped": stats.dropped},
        "output_sizes": sorted(list(s) for s in out_sizes),
        "timestamps": {"first": first_t, "last": last_t,
                       "mean_fps": (stats.yielded - 1) / span if span else None},
        "timing": {"wall_s": wall, "frames_per_s": stats.yielded / wall if wall > 0 else None},
        "errors": list(stats.errors),
        "error": error,
    }


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['input']['kind']}: {report['input']['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for section in ("input", "frames", "timestamps", "timing"):
        for key, value in report[section].items():
            table.add_row(f"{section}.{key}", _fmt(value))
    table.add_row("output_sizes", ", ".join(f"{w}x{h}" for w, h in report["output_sizes"]) or "-")
    for message in report["errors"]:
        table.add_row("error", message, style="red")
    Console().print(table)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return str(value)


def _one_to_one(options: IngestOptions) -> bool:
    return options.stride == 1 and options.target_fps is None and not options.keyframes \
        and options.max_frames is None
