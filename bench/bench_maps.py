"""Resume and merge of saved maps, scored against ground truth (issue 16: persistent maps).

For each set the input is cut into two halves A and B (overlapping, or adjacent with
``--adjacent``): KITTI as dataset folders of symlinks with the matching cameras.json
subset, the demo clip as two video files (PyAV, frame-exact re-encode).

single   the whole input in one run: the reference ATE.
resume   A with --save-map, then B with --map A --save-map AB: the ATE of AB's trajectory
         (both runs' frames together, the overlap frames counted twice) against ground truth.
merge    B alone with --save-map, then ``merge A B``: the ATE of the merged trajectory.

The ATE is ``stream4d.evaluation.evaluate_trajectory`` (one Umeyama Sim(3) over all frames).

    python bench/bench_maps.py                       # kitti_seq1 and the demo clip, overlapping halves
    python bench/bench_maps.py --sets kitti_seq1 --adjacent
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream4d.evaluation import evaluate_trajectory  # noqa: E402
from stream4d.outputs import PosedFrame, read_cameras_json, read_trajectory  # noqa: E402
from stream4d.pipeline import ReconstructConfig, reconstruct  # noqa: E402
from stream4d.pipeline.maps import merge_maps, read_map, write_map  # noqa: E402

KITTI = Path(os.environ.get("STREAM4D_DATA", ROOT.parent / "shared" / "data")) / "kitti_seq1"
DEMO = ROOT / "data" / "demo"


def split_dataset(src: Path, dst: Path, ranges: list[tuple[int, int]]) -> list[Path]:
    """Dataset folders of symlinks holding frames [lo, hi) of ``src`` with their cameras.json subset."""
    cams = json.loads((src / "cameras.json").read_text())
    out = []
    for k, (lo, hi) in enumerate(ranges):
        folder = dst / f"half{k}"
        frames = cams["frames"][lo:hi]
        for f in frames:
            link = folder / f["image"]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src / f["image"])
        (folder / "cameras.json").write_text(json.dumps({**cams, "frames": frames}))
        out.append(folder)
    return out


def split_video(src: Path, dst: Path, ranges: list[tuple[int, int]]) -> list[Path]:
    """Video files holding frames [lo, hi) of ``src`` (decoded and re-encoded, near-lossless)."""
    import av

    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out = []
    for k, (lo, hi) in enumerate(ranges):
        path = dst / f"half{k}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "12"}
            for img in frames[lo:hi]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        out.append(path)
    return out


def union_ate(map_dir: Path, gt: list[PosedFrame], gt_index) -> tuple[float, int, int]:
    """ATE RMSE of every frame of a map (all runs) against ``gt``; ``gt_index(run, frame) -> position
    in gt or None``. Also the frames scored and the segments the map's frames came in."""
    frames = read_map(map_dir).frames
    pred, ref = [], []
    for f in frames:
        g = gt_index(int(f["run"]), f)
        if g is None:
            continue
        n = len(pred)
        pred.append(PosedFrame(n, n, "", np.asarray(f["c2w"]), np.full((3, 3), np.nan), 0, 0))
        ref.append(PosedFrame(n, n, "", gt[g].c2w, np.full((3, 3), np.nan), 0, 0))
    return evaluate_trajectory(pred, ref, match="index").ate_rmse, len(pred), len({f.get("segment", 0) for f in frames})


def run(source: Path, out: Path, **values) -> None:
    config = ReconstructConfig().override({"rrd": False, **values})
    reconstruct(str(source), out, config, progress=False)


def bench_set(name: str, work: Path, adjacent: bool) -> dict:
    if name == "kitti_seq1":
        n = 51
        ranges = [(0, 26), (26, 51)] if adjacent else [(0, 31), (20, 51)]
        halves = split_dataset(KITTI, work, ranges)
        full, gt_path = KITTI, KITTI / "cameras.json"
        gt = read_cameras_json(gt_path)
        by_name = {Path(f.image).name: k for k, f in enumerate(gt)}
        gt_index = lambda r, f: by_name.get(Path(f["image"]).name)  # noqa: E731
    else:
        n = 48
        ranges = [(0, 24), (24, 48)] if adjacent else [(0, 28), (20, 48)]
        halves = split_video(DEMO / "demo.mp4", work, ranges)
        full, gt_path = DEMO / "demo.mp4", DEMO / "cameras.json"
        gt = read_cameras_json(gt_path)
        gt_index = lambda r, f: ranges[r][0] + int(f["index"])  # noqa: E731 (run r is half r)
    run(full, work / "single")
    single = evaluate_trajectory(read_trajectory(work / "single" / "trajectory.json"), gt).ate_rmse
    run(halves[0], work / "out_a", save_map=str(work / "map_a"))
    run(halves[1], work / "out_b", map_from=str(work / "map_a"), save_map=str(work / "map_ab"))
    record = json.loads((work / "out_b" / "run.json").read_text())["map"]
    resume, scored, segments = union_ate(work / "map_ab", gt, gt_index)
    run(halves[1], work / "out_b_alone", save_map=str(work / "map_b"))
    merged = merge_maps(read_map(work / "map_a"), read_map(work / "map_b"))
    write_map(work / "map_merged", merged.merged)
    merge, merge_scored, _ = union_ate(work / "map_merged", gt, gt_index)
    meta = json.loads((work / "map_ab" / "map.json").read_text())["sections"]["keyframes"]
    return {"set": name, "frames": n, "halves": ranges, "single_ate": single,
            "resume_ate": resume, "resume_ratio": resume / single, "resume_frames": scored,
            "resume_segments": segments, "relocalised": record["loaded"]["relocalised"],
            "merge_ate": merge, "merge_ratio": merge / single, "merge_frames": merge_scored,
            "merge_inliers": merged.link.inliers,
            "keyframes": meta["count"], "bytes_per_keyframe": meta["bytes_uncompressed"] / max(meta["count"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="kitti_seq1,demo")
    ap.add_argument("--adjacent", action="store_true", help="halves that share no frame")
    args = ap.parse_args()
    for name in args.sets.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_set(name, Path(tmp), args.adjacent)
        print(json.dumps(r))
        print(f"{name}: single ATE {r['single_ate']:.4g}; resume {r['resume_ate']:.4g} ({r['resume_ratio']:.2f}x, "
              f"relocalised {r['relocalised']}, {r['resume_segments']} segment(s)); merge {r['merge_ate']:.4g} "
              f"({r['merge_ratio']:.2f}x); {r['keyframes']} keyframes, {r['bytes_per_keyframe'] / 1e3:.0f} kB each")


if __name__ == "__main__":
    main()
