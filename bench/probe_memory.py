"""Where a reconstruction's memory goes: one sample per aligned window, in the reconstructing process.

Runs ``stream4d.pipeline.run.reconstruct`` on DATASET in this process and, after every window the
sink receives, records the frames posed, the resident size (/proc), glibc's ``mallinfo2`` (bytes the
arenas took from the system, in use, free in them, mmapped), tracemalloc's traced total with
``--trace`` (Python objects and numpy arrays, which report to it), and the sizes of the containers
that could grow: the splat cache (static / dynamic Gaussians, column and voxel-index bytes), the
global map (database keyframes and bytes, pose-graph nodes and edges, loops kept, solves) and the
sink (frame -> window map, the output writer's records). Written to ``OUT/samples.json`` as it goes;
with ``--trace``, tracemalloc snapshots ``OUT/snap_<frames>.tm`` once ``--snaps`` frames are posed
(compare them with ``tracemalloc.Snapshot.load(a).compare_to(load(b), "lineno")``). The resident-size
medians per quarter of the stream are printed at the end.

    python bench/probe_memory.py /tmp/mf/o400 /tmp/mf/p_on [--no-loop-closure] [--no-trim]
    python bench/probe_memory.py /tmp/mf/o400 /tmp/mf/p_trace --trace --snaps 200,300,400

``--no-trim``: the sink does not hand freed heap pages back after each window (as before
``stream4d.pipeline.heap``), to compare.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> dict:
    """glibc's arena totals (bytes): taken from the system, mmapped, in use, free inside the arenas."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except AttributeError:  # not glibc >= 2.33
        return {}
    fn.restype = _MallInfo2
    m = fn()
    return {"malloc_arena": m.arena, "malloc_mmap": m.hblkhd, "malloc_used": m.uordblks, "malloc_free": m.fordblks}


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _array_bytes(obj) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


def quarter_medians(samples: list[dict], key: str = "rss") -> list[int | None]:
    """Median of ``key`` (MB) over the samples of each quarter of the frames posed."""
    n = max(s["frames"] for s in samples)
    out = []
    for q in range(4):
        v = [s[key] / 1e6 for s in samples if n * q // 4 < s["frames"] <= n * (q + 1) // 4 and key in s]
        out.append(round(statistics.median(v)) if v else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-loop-closure", action="store_true")
    parser.add_argument("--no-trim", action="store_true", help="no malloc_trim after each window (as before)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc on (slower)")
    parser.add_argument("--snaps", default="", help="frames posed at which to dump tracemalloc snapshots")
    args = parser.parse_args()

    import stream4d.pipeline.sink as sink_module
    from align.aligner import StreamAligner
    from stream4d.pipeline import ReconstructConfig
    from stream4d.pipeline.run import reconstruct

    if args.no_trim:
        sink_module.release_free_heap = lambda: False  # this process only runs this one reconstruction
    aligners = []
    init = StreamAligner.__init__

    def recording_init(self, *a, **k):
        init(self, *a, **k)
        aligners.append(self)

    StreamAligner.__init__ = recording_init
    snaps = sorted(int(x) for x in args.snaps.split(",") if x)
    args.out.mkdir(parents=True, exist_ok=True)
    samples: list[dict] = []
    call = sink_module.Sink.__call__
    start = time.perf_counter()

    def sampled_call(sink, window):
        call(sink, window)
        s = {"s": round(time.perf_counter() - start, 1), "window": int(window.window_index),
             "frames": int(sink.stats.frames_posed), "rss": _rss(), "windows_moved": len(window.moved or {}),
             **_mallinfo(), "frame_window": len(sink.frame_window), "writer_records": sink.writer._records.nbytes}
        if args.trace:
            s["traced"] = tracemalloc.get_traced_memory()[0]
        cache = sink.cache
        if cache is not None:
            s.update(gaussians_static=cache.num_static, gaussians_dynamic=cache.num_dynamic,
                     gaussian_bytes=cache.nbytes(), voxel_index_bytes=_array_bytes(cache._index) if cache._index else 0)
        gm = aligners[-1].global_map if aligners else None
        if gm is not None:
            s.update(database_keyframes=len(gm.database), database_bytes=gm.database.nbytes,
                     graph_nodes=len(gm.graph.poses), graph_edges=len(gm.graph.edges), loops=len(gm.loops),
                     solves=len(gm.optimisations))
        samples.append(s)
        while snaps and s["frames"] >= snaps[0]:
            snaps.pop(0)
            if args.trace:
                tracemalloc.take_snapshot().dump(str(args.out / f"snap_{s['frames']:04d}.tm"))
        (args.out / "samples.json").write_text(json.dumps(samples))

    sink_module.Sink.__call__ = sampled_call
    if args.trace:
        tracemalloc.start(1)
    config = ReconstructConfig(rrd=False)
    if args.no_loop_closure:
        config = config.override({"align.loop_closure.enabled": False})
    reconstruct(str(args.dataset), str(args.out / "run"), config, observers=[], progress=False)
    keys = ["rss", "malloc_used", "malloc_free"] + (["traced"] if args.trace else [])
    for key in keys:
        if key in samples[0]:
            print(f"{key} MB, median per quarter: {quarter_medians(samples, key)}")
    print(f"wall {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
