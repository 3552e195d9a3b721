"""``stream4d eval OUT_DIR --gt cameras.json``: score a run against reference poses (and points)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> str:
    p = subparsers.add_parser(
        "eval",
        help="score an output folder against reference cameras (ATE, RPE, coverage) and points",
        description="Score a reconstruction against a reference: ATE after Sim(3) alignment, RPE, "
                    "coverage, and with --gt-points accuracy / completeness / Chamfer of points.ply. "
                    "Exit code 2 on bad input.",
    )
    p.add_argument("out_dir", help="output folder of `stream4d reconstruct` (or a trajectory.json / .tum)")
    p.add_argument("--gt", required=True,
                   help="reference cameras: cameras.json (shared data format), trajectory.json, .tum "
                        "or an output folder")
    p.add_argument("--gt-points", default=None, help="reference point cloud (.ply) to score points.ply against")
    p.add_argument("--json", default=None, dest="json_path", help="write the full report here")
    p.add_argument("--match", choices=("auto", "index", "timestamp", "image"), default="auto",
                   help="how frames are paired (auto: image names, else index, else timestamp)")
    p.add_argument("--max-dt", type=float, default=None,
                   help="timestamp matching tolerance in seconds (default: half the median GT spacing)")
    p.add_argument("--voxel", type=float, default=None,
                   help="voxel size (reference units) to downsample both point clouds before scoring")
    p.add_argument("--threshold", type=float, default=None,
                   help="also report point precision / recall / F-score at this distance (reference units)")
    return "eval"


def run(args: argparse.Namespace) -> int:
    # Imported here so that `stream4d --help` does not pay for the evaluation stack.
    from stream4d.evaluation import evaluate_output, print_report, write_report

    try:
        report = evaluate_output(args.out_dir, args.gt, gt_points=args.gt_points, match=args.match,
                                 max_dt=args.max_dt, voxel_size=args.voxel, threshold=args.threshold)
    except (OSError, ValueError) as exc:  # ValueError includes EvaluationError
        print(f"stream4d eval: error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json_path:
        try:
            path = write_report(report, args.json_path)
        except OSError as exc:
            print(f"stream4d eval: error: cannot write report {args.json_path}: {exc}", file=sys.stderr)
            return 2
        print(f"report written to {path}")
    return 0
