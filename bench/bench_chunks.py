"""One long video on one node vs in overlapping chunks on two (Ray tasks, ``server.ray_chunks``).

For each clip, on a local Ray cluster (a head with 0 CPUs plus worker nodes of 1 CPU each,
``ray start`` processes on this machine):

- ``sequential, 1 node``: the whole video as one Ray task (the upload job as it runs today);
- ``chunks + anchor, 1 node``: the anchor task (every n-th frame of the whole video) and the
  chunk tasks on a cluster of one node (they run one after the other), then the join;
- ``chunks + anchor, 2 nodes``: the same tasks on two nodes, then the join.

Printed per run: wall seconds (task submission to the joined output), the CPU seconds of the
busiest node (its tasks' processes, plus the join: the wall time on idle 1-CPU nodes, which a
shared machine's wall time is not), posed frames and the ATE against the clip's ground truth
(after a Sim(3), % of the reference extent) of the pose-graph join, the ATE of the same chunks
joined onto the anchor alone (one Sim(3) each) and chained by their overlaps alone (no anchor),
and of the anchor run alone, and the load average before-after each run. Clips: the demo clip (48 frames) and a
synthetic 360-degree orbit (``stream4d synth``, rendered into the temp dir).

    PYTHONPATH=. python bench/bench_chunks.py [--frames 600] [--chunks 2] [--overlap 16]
        [--anchor-stride 10] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "server"))  # the real cluster helper of the tests
from conftest import free_port  # noqa: E402
from ray_cluster import RayCluster  # noqa: E402

from bench.common import machine_info, markdown_table, write_docs_section  # noqa: E402
from stream4d.evaluation.trajectory import evaluate_trajectory  # noqa: E402
from stream4d.outputs import read_cameras_json, read_trajectory_json  # noqa: E402
from stream4d.pipeline import ReconstructConfig  # noqa: E402

DEMO = REPO / "data" / "demo"


def run_whole(path: str, out_dir: str, config: dict) -> float:
    """The sequential baseline as a Ray task: the whole video in one run (CPU seconds of its process)."""
    import torch

    from stream4d.pipeline import reconstruct

    torch.set_num_threads(1)
    cpu = time.process_time()
    reconstruct(path, out_dir, ReconstructConfig.from_dict(config), progress=False)
    return time.process_time() - cpu


def critical_cpu(cpu_s: list[float], nodes: list[str]) -> float:
    """CPU seconds of the busiest node: the wall time the tasks would take on idle nodes of 1 CPU."""
    per_node: dict[str, float] = {}
    for s, n in zip(cpu_s, nodes):
        per_node[n] = per_node.get(n, 0.0) + s
    return max(per_node.values())


def ate(out_dir: Path, gt: Path) -> tuple[int, float]:
    result = evaluate_trajectory(read_trajectory_json(out_dir / "trajectory.json"), read_cameras_json(gt))
    return result.num_matched, 100 * result.ate_rmse_rel_extent


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def bench_clip(video: Path, gt: Path, frames: int, config: ReconstructConfig, chunks: int, overlap: int,
               anchor_stride: int, root: Path) -> list[list[str]]:
    import ray

    from server.ray_chunks import reconstruct_chunked
    from stream4d.pipeline.chunks import join_chunks, part_dir, plan_parts

    rows = []
    for nodes in (1, 2):
        cluster = RayCluster(free_port(), nodes=nodes, cpus_per_node=1).start()
        try:
            ray.init(address=cluster.address, namespace="stream4d-bench", log_to_driver=False)
            if nodes == 1:
                out = root / f"{video.stem}-seq"
                load = _load()
                started = time.perf_counter()
                cpu = ray.get(ray.remote(run_whole).options(num_cpus=1).remote(str(video), str(out), config.to_dict()))
                wall = time.perf_counter() - started
                rows.append([video.name, "sequential, 1 node", f"{wall:.1f}", f"{cpu:.1f}", *_quality(out, gt),
                             "-", "-", "-", f"{load}-{_load()}"])
                print(rows[-1], flush=True)
            out = root / f"{video.stem}-chunks{nodes}"
            load = _load()
            run = reconstruct_chunked(video, out, config, frames, chunks, overlap, anchor_stride=anchor_stride)
            # the same part outputs joined the older ways: each chunk onto the anchor alone, and chained
            # by the overlaps alone (no anchor)
            parts = plan_parts(frames, chunks, overlap, anchor_stride)
            chunk_dirs = [part_dir(out / "chunks", p) for p in parts if not p.is_anchor]
            plan = [p.chunk for p in parts if not p.is_anchor]
            anchor_dir = part_dir(out / "chunks", parts[0])
            onto_anchor, chained = root / f"{video.stem}-anchor{nodes}", root / f"{video.stem}-chained{nodes}"
            join_chunks(chunk_dirs, plan, onto_anchor, anchor_dir, method="anchor")
            join_chunks(chunk_dirs, plan, chained)
            rows.append([video.name, f"{chunks} chunks + anchor, {nodes} node{'s' * (nodes > 1)}",
                         f"{run.chunks_s + run.join_s:.1f}",
                         f"{critical_cpu(run.per_chunk_cpu_s, run.nodes) + run.join_s:.1f}",
                         *_quality(out, gt), _quality(onto_anchor, gt)[1], _quality(chained, gt)[1],
                         _quality(anchor_dir, gt)[1], f"{load}-{_load()}"])
            graph = run.report["pose_graph"] or {}
            print(rows[-1], f"task s {[round(s, 1) for s in run.per_chunk_s]}, CPU s "
                  f"{[round(s, 1) for s in run.per_chunk_cpu_s]} (anchor first), join {run.join_s:.2f} s, "
                  f"pose graph dropped {graph.get('dropped')}", flush=True)
        finally:
            ray.shutdown()
            cluster.stop()
    return rows


def _quality(out: Path, gt: Path) -> list[str]:
    matched, err = ate(out, gt)
    return [str(matched), f"{err:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600, help="frames of the synthetic orbit (default 600)")
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--overlap", type=int, default=16, help="frames shared by consecutive chunks")
    parser.add_argument("--anchor-stride", type=int, default=10, help="the anchor run takes every n-th frame")
    parser.add_argument("--resolution", type=int, default=256, help="model input, longest side (default 256)")
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the clips and every run's outputs here (default: a temp dir, removed)")
    args = parser.parse_args()
    config = ReconstructConfig().override({"ingest.resize": args.resolution, "align.window": 8,
                                           "align.overlap": 2, "rrd": False})
    rows = []
    with tempfile.TemporaryDirectory(prefix="s4chunks") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        synth = root / "orbit"
        subprocess.run([sys.executable, "-m", "stream4d.cli", "synth", "--scene", "room", "--trajectory", "orbit",
                        "--frames", str(args.frames), "--traj-kw", "arc_deg=360", "--size", "256x192",
                        "--out", str(synth), "--video", f"orbit{args.frames}.mp4"], check=True,
                       capture_output=True, cwd=REPO)
        # (video, reference, frames, overlap, anchor stride): the demo is short, so its overlap and
        # anchor stride are too
        clips = [(DEMO / "demo.mp4", DEMO / "cameras.json", 48, 8, 4),
                 (synth / f"orbit{args.frames}.mp4", synth / "cameras.json", args.frames, args.overlap,
                  args.anchor_stride)]
        for video, gt, frames, overlap, stride in clips:
            rows += bench_clip(video, gt, frames, config, args.chunks, overlap, stride, root)
    info = machine_info()
    table = markdown_table(["clip", "run", "wall s", "busiest node CPU s", "posed", "ATE % of extent",
                            "ATE %, onto the anchor alone", "ATE %, chunks chained", "ATE %, anchor run alone",
                            "load avg"], rows)
    print(table)
    if args.write_docs:
        body = (
            "## One long video in chunks on two nodes (`bench/bench_chunks.py`)\n\n"
            f"The video cut into {args.chunks} chunks sharing {args.overlap} frames (the demo: 8), each chunk "
            f"a Ray task (`server/ray_chunks.py`), with one more task, the anchor run, on every "
            f"{args.anchor_stride}th frame of the whole video (the demo: every 4th); the chunks are joined by a "
            f"Sim(3) pose graph whose edges are the anchor frames inside each chunk and the overlaps of "
            f"consecutive chunks, each with its measured noise (`stream4d/pipeline/chunk_join.py`). "
            f"`onto the anchor alone` maps each chunk onto the anchor's poses of the anchor frames it holds "
            f"(the join before the pose graph), `chunks chained` joins the same chunks by a Sim(3) on their "
            f"overlaps alone; `anchor run alone` "
            f"is the anchor's own trajectory (its frames only). The sequential "
            f"run is the whole video as one task (the upload job today). "
            f"{args.resolution} px model input, windows of 8 overlapping by 2; Ray nodes are `ray start` "
            f"processes of 1 CPU each on this machine (a head with 0 CPUs plus the nodes). "
            f"{info['nproc']} cores, {info['cpu']}, load average {info['loadavg'][0]:.1f} at the end "
            f"(other work shared the cores, so wall times mostly measure the contention: the "
            f"busiest node's CPU seconds are the wall time on idle 1-CPU nodes).\n\n{table}\n\n"
            f"    PYTHONPATH=. python bench/bench_chunks.py --frames {args.frames} --chunks {args.chunks} "
            f"--overlap {args.overlap} --anchor-stride {args.anchor_stride} --write-docs\n"
        )
        write_docs_section("bench_chunks", body)


if __name__ == "__main__":
    main()
