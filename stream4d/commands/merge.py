"""``stream4d merge A B --out C``: two saved maps of overlapping places as one map."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> str:
    p = subparsers.add_parser(
        "merge", help="merge two saved maps (reconstruct --save-map) of overlapping places into one",
        description="Find the similarity between map B and map A by matching B's keyframes against A's "
                    "(3D-3D RANSAC, as a re-attachment), move B into A's world and write the union of "
                    "keyframes, trajectories and Gaussians as map C. Exit code 2 on bad input, 1 when the "
                    "maps do not overlap.")
    p.add_argument("a", type=Path, help="map folder whose world the merged map keeps")
    p.add_argument("b", type=Path, help="map folder moved into A's world")
    p.add_argument("--out", required=True, type=Path, help="folder of the merged map")
    return "merge"


def run(args: argparse.Namespace) -> int:
    from stream4d.pipeline.maps import MapError, merge_maps, read_map, write_map

    try:
        a, b = read_map(args.a), read_map(args.b)
    except MapError as exc:
        print(f"stream4d merge: {exc}", file=sys.stderr)
        return 2
    try:
        result = merge_maps(a, b)
    except MapError as exc:
        print(f"stream4d merge: {exc}", file=sys.stderr)
        return 1
    write_map(args.out, result.merged)
    link, merged = result.link, result.merged
    print(f"merged {args.b} into {args.a}'s world (B frame {link.frame_index} matched A keyframe "
          f"{link.keyframe_index}, {link.inliers} inliers, scale {link.sim3.s:.4g}) -> {args.out}: "
          f"{len(merged.keyframes)} keyframes, {len(merged.frames)} frames, {len(merged.runs)} runs")
    return 0
