"""One long video on many nodes: overlapping chunks as Ray tasks, then one join.

``reconstruct_chunked`` cuts the video into ``chunks`` chunks sharing ``overlap`` frames
(``stream4d.pipeline.chunks``), runs each as a Ray task asking for ``num_cpus`` / ``num_gpus``
(Ray spreads them over the nodes with room; a task whose node dies is retried elsewhere),
each into ``<out_dir>/chunks/<k>`` on the shared storage, together with a sparse anchor run
over the whole video, and joins them into ``out_dir`` (trajectory.json / .tum, points.ply,
run.json with the join). Ray must be initialised. Not wired into ``serve`` yet: the joined
output has no splats.ply, recording.rrd, depth or sparse tracks, so an upload's result files
would change.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChunkedRun:
    """What a chunked run took: wall seconds of the tasks and of the join, per task seconds
    and node (the anchor run first when there is one) and the join report."""

    chunks_s: float
    join_s: float
    per_chunk_s: list[float]
    per_chunk_cpu_s: list[float]  # CPU seconds of each task's process (all its threads)
    nodes: list[str]
    report: dict[str, Any]


def run_chunk(path: str, chunk: Any, out_dir: str, config: dict[str, Any], num_threads: int) -> dict[str, Any]:
    """The Ray task: one chunk into ``out_dir``; returns its seconds and node."""
    import ray
    import torch

    from stream4d.pipeline import ReconstructConfig
    from stream4d.pipeline.chunks import reconstruct_chunk

    torch.set_num_threads(num_threads)
    started, cpu = time.perf_counter(), time.process_time()
    reconstruct_chunk(path, chunk, out_dir, ReconstructConfig.from_dict(config))
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "node": ray.get_runtime_context().get_node_id()}


def run_anchor(path: str, out_dir: str, config: dict[str, Any], stride: int, num_threads: int) -> dict[str, Any]:
    """The Ray task of the anchor run: every ``stride``-th frame of the whole video into ``out_dir``."""
    import ray
    import torch

    from stream4d.pipeline import ReconstructConfig, reconstruct
    from stream4d.pipeline.chunks import anchor_config

    torch.set_num_threads(num_threads)
    started, cpu = time.perf_counter(), time.process_time()
    reconstruct(path, out_dir, anchor_config(ReconstructConfig.from_dict(config), stride), progress=False)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "node": ray.get_runtime_context().get_node_id()}


def reconstruct_chunked(path: str | Path, out_dir: str | Path, config: Any, frame_count: int, chunks: int,
                        overlap: int, anchor_stride: int | None = 10, num_cpus: float = 1.0, num_gpus: float = 0.0,
                        max_retries: int = 3) -> ChunkedRun:
    """Reconstruct the video at ``path`` (``frame_count`` frames) in ``chunks`` Ray tasks and join them.

    With ``anchor_stride``, one more task reconstructs every ``anchor_stride``-th frame of the whole
    video at the same time (submitted first: it is the shortest and every join needs it), and each
    chunk is joined onto it (``join_chunks``); None chains the chunks by their overlaps only.
    """
    import ray

    from stream4d.pipeline.chunks import check_chunkable, join_chunks, plan_chunks

    check_chunkable(config.ingest)
    plan = plan_chunks(frame_count, chunks, overlap)
    out = Path(out_dir)
    dirs = [out / "chunks" / f"{k:03d}" for k in range(len(plan))]
    anchor_dir = out / "chunks" / "anchor" if anchor_stride else None
    threads = max(1, int(num_cpus))
    options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries}
    started = time.perf_counter()
    refs = []
    if anchor_dir is not None:
        refs.append(ray.remote(run_anchor).options(**options).remote(
            str(path), str(anchor_dir), config.to_dict(), anchor_stride, threads))
    task = ray.remote(run_chunk).options(**options)
    refs += [task.remote(str(path), c, str(d), config.to_dict(), threads) for c, d in zip(plan, dirs)]
    results = ray.get(refs)
    chunks_s = time.perf_counter() - started
    started = time.perf_counter()
    report = join_chunks(dirs, plan, out, anchor_dir)
    return ChunkedRun(chunks_s, time.perf_counter() - started, [r["seconds"] for r in results],
                      [r["cpu_seconds"] for r in results], [r["node"] for r in results], asdict(report))
