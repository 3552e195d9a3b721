"""One long uploaded video on many nodes: overlapping chunks as Ray tasks, then one join.

``reconstruct_chunked`` cuts the video into ``chunks`` chunks sharing ``overlap`` frames
(``stream4d.pipeline.chunks``), runs each as a Ray task asking for ``num_cpus`` / ``num_gpus``
(Ray spreads them over the nodes with room; a task whose node dies is retried elsewhere),
each into ``<out_dir>/chunks/<k>`` on the shared storage, and joins them into ``out_dir``
(trajectory.json / .tum, points.ply, run.json with the join). Ray must be initialised.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChunkedRun:
    """What a chunked run took: wall seconds of the chunk tasks and of the join, per chunk
    seconds (on its node) and the join report."""

    chunks_s: float
    join_s: float
    per_chunk_s: list[float]
    nodes: list[str]
    report: dict[str, Any]


def run_chunk(path: str, chunk: Any, out_dir: str, config: dict[str, Any], num_threads: int) -> dict[str, Any]:
    """The Ray task: one chunk into ``out_dir``; returns its seconds and node."""
    import ray
    import torch

    from stream4d.pipeline import ReconstructConfig
    from stream4d.pipeline.chunks import reconstruct_chunk

    torch.set_num_threads(num_threads)
    started = time.perf_counter()
    reconstruct_chunk(path, chunk, out_dir, ReconstructConfig.from_dict(config))
    return {"seconds": time.perf_counter() - started, "node": ray.get_runtime_context().get_node_id()}


def reconstruct_chunked(path: str | Path, out_dir: str | Path, config: Any, frame_count: int, chunks: int,
                        overlap: int, num_cpus: float = 1.0, num_gpus: float = 0.0, max_retries: int = 3) -> ChunkedRun:
    """Reconstruct the video at ``path`` (``frame_count`` frames) in ``chunks`` Ray tasks and join them."""
    import ray

    from stream4d.pipeline.chunks import check_chunkable, join_chunks, plan_chunks

    check_chunkable(config.ingest)
    plan = plan_chunks(frame_count, chunks, overlap)
    out = Path(out_dir)
    dirs = [out / "chunks" / f"{k:03d}" for k in range(len(plan))]
    task = ray.remote(run_chunk).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    started = time.perf_counter()
    refs = [task.remote(str(path), c, str(d), config.to_dict(), max(1, int(num_cpus))) for c, d in zip(plan, dirs)]
    results = ray.get(refs)
    chunks_s = time.perf_counter() - started
    started = time.perf_counter()
    report = join_chunks(dirs, plan, out)
    return ChunkedRun(chunks_s, time.perf_counter() - started, [r["seconds"] for r in results],
                      [r["node"] for r in results], asdict(report))
