"""``stream4d export OUT_DIR --format colmap|nerfstudio``: a finished run in a format other tools open."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> str:
    p = subparsers.add_parser(
        "export",
        help="export an output folder as a COLMAP sparse model or a nerfstudio transforms.json",
        description="Write the posed frames of a finished run (its model-resolution images, intrinsics, "
                    "poses and, from the default backend, the sparse points with their 2D observations) as a "
                    "COLMAP model (DIR/sparse/0 + DIR/images) or a nerfstudio dataset (DIR/transforms.json + "
                    "DIR/images + DIR/sparse_pc.ply). Exit code 2 on bad input.",
    )
    p.add_argument("out_dir", type=Path, help="output folder of `stream4d reconstruct`")
    p.add_argument("--format", required=True, dest="fmt", help="colmap, nerfstudio, or both comma-separated")
    p.add_argument("--to", type=Path, default=None,
                   help="destination folder (default OUT_DIR/<format>; with two formats, DIR/<format>)")
    p.add_argument("--text", action="store_true", help="COLMAP: write .txt files instead of .bin")
    p.add_argument("--segment", type=int, default=None,
                   help="world segment to export (default: the run's final one, as points.ply / splats.ply)")
    p.add_argument("--max-reproj", type=float, default=4.0,
                   help="drop sparse observations farther than this from their point's projection, px (default 4)")
    return "export"


def parse_formats(text: str) -> list[str]:
    from stream4d.export import FORMATS, ExportError

    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ExportError(f"unknown export format(s) {bad or text!r}; known: {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def export_all(out_dir: Path, formats: list[str], to: Path | None = None, text: bool = False,
               segment: int | None = None, max_reproj_px: float = 4.0) -> list[Path]:
    from stream4d.export import export

    written = []
    for fmt in formats:
        dst = None if to is None else (to if len(formats) == 1 else to / fmt)
        written.append(export(out_dir, fmt, dst, text=text, segment=segment, max_reproj_px=max_reproj_px))
    return written


def run(args: argparse.Namespace) -> int:
    from stream4d.export import ExportError

    try:
        written = export_all(args.out_dir, parse_formats(args.fmt), args.to, args.text, args.segment,
                             args.max_reproj)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"stream4d export: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
