"""Bounded streaming memory of the VGGT backend: InfiniteVGGT-pruned KV cache vs the unpruned one.

A small VGGT network (random weights, same code as VGGT-1B) streams the frames
of ../shared/data/videos/great_wall.mp4 (played back and forth to reach
``--frames``) through the real backend path: a checkpoint file,
``stream4d.pipeline.vggt_stream.load_vggt_backend`` (pruned, ``--budget-frames`` frames per
layer) or ``recon.vggt.backend.build_vggt_backend`` (unbounded cache), and
``predict`` on windows of two frames overlapping by one, so every call streams
exactly one new frame. Each variant runs in its own process, so its peak RSS
is its own. Per frame it records the wall time of ``predict``, the cache's
tokens and bytes and the process RSS. The unpruned run stops after
``--unpruned-frames`` frames or ``--unpruned-max-seconds``, whichever first.

    python bench/bench_kv_cache.py
    python bench/bench_kv_cache.py --frames 1000 --unpruned-frames 1000 --write-docs --json /tmp/kv.json
    python bench/bench_kv_cache.py --report-from /tmp/kv.json --write-docs   # re-render a saved run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import psutil
import torch

from stream4d.testdata import SHARED_DATA

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script: bench/common.py

from common import fmt, load_note, machine_info, markdown_table, write_docs_section  # noqa: E402

from recon.vggt import VGGT, VGGTConfig  # noqa: E402
from recon.vggt.backend import build_vggt_backend  # noqa: E402
from stream4d.contracts import Frame  # noqa: E402
from stream4d.pipeline.vggt_stream import load_vggt_backend  # noqa: E402

SECTION = "bench_kv_cache"
VIDEO = SHARED_DATA / "videos/great_wall.mp4"
REPORT_AT = (50, 100, 200, 300, 500, 750, 1000)
RUN_SETTINGS = ("frames", "unpruned_frames", "unpruned_max_seconds", "budget_frames", "width", "threads")


def bench_config() -> VGGTConfig:
    """VGGT-1B's structure at width 128 and depth 4, a 2x2 camera trunk; no point/track heads
    (depth gives the points). Per-frame cost is kept small so 1000 frames fit the time budget."""
    return VGGTConfig.small(embed_dim=128, depth=4, num_heads=4, dino_depth=2, dino_num_heads=4,
                            camera_num_heads=4, camera_trunk_depth=2, camera_iterations=2,
                            enable_point=False, enable_track=False)


def video_frames(count: int, width: int) -> list[np.ndarray]:
    """``count`` RGB frames of the video at ``width`` px wide (as ingest would resize them), played
    forwards then backwards as often as needed; only the clip is held, not ``count`` copies."""
    with av.open(str(VIDEO)) as container:
        clip = []
        for f in container.decode(video=0):
            image = f.to_ndarray(format="rgb24")
            height = round(image.shape[0] * width / image.shape[1])
            clip.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    if len(clip) < 2:
        raise RuntimeError(f"{VIDEO} decoded to {len(clip)} frames")
    cycle = clip + clip[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(count)]


def cache_state(backend) -> tuple[int, int]:
    """(tokens over all layers, bytes of keys + values) of the aggregator's KV cache."""
    cache = backend.state.kv_cache
    layers = backend.model.config.depth
    return sum(cache.num_tokens(i) for i in range(layers)), cache.nbytes


def run_variant(args) -> dict:
    torch.set_num_threads(args.threads)
    pruned = args.variant == "pruned"
    config = bench_config()
    frames_needed = args.frames if pruned else args.unpruned_frames
    images = video_frames(frames_needed, 2 * args.width)
    model_h = round(images[0].shape[0] * (args.width / images[0].shape[1]) / 14) * 14
    tokens_per_frame = 1 + config.num_register_tokens + (args.width // 14) * (model_h // 14)
    budget = config.depth * args.budget_frames * tokens_per_frame
    options = dict(model_config=config, image_width=args.width, points_source="depth")
    if pruned:
        backend = load_vggt_backend(args.checkpoint, "cpu", total_budget_tokens=budget,
                                    camera_budget_frames=args.budget_frames, **options)
    else:
        backend = build_vggt_backend(args.checkpoint, "cpu", **options)
    proc = psutil.Process()
    rows, peak_rss, previous = [], 0.0, None
    start = time.perf_counter()
    for i, image in enumerate(images):
        frame = Frame(index=i, timestamp=i / 24.0, image=image, source=f"great_wall.mp4@{i}")
        window = [frame] if previous is None else [previous, frame]
        t0 = time.perf_counter()
        backend.predict(window)
        seconds = time.perf_counter() - t0
        previous = frame
        tokens, nbytes = cache_state(backend)
        rss = proc.memory_info().rss / 2 ** 20
        peak_rss = max(peak_rss, rss)
        rows.append({"frame": i + 1, "seconds": seconds, "tokens": tokens, "cache_mb": nbytes / 2 ** 20,
                     "rss_mb": rss, "peak_rss_mb": peak_rss})
        if not pruned and time.perf_counter() - start > args.unpruned_max_seconds:
            break
        if (i + 1) % 100 == 0:
            print(f"  {args.variant}: {i + 1} frames, {seconds * 1e3:.0f} ms/frame, cache {nbytes / 2 ** 20:.1f} MB, "
                  f"RSS {rss:.0f} MB", file=sys.stderr, flush=True)
        gc.collect(0)
    return {"variant": args.variant, "budget_tokens": budget if pruned else None,
            "tokens_per_frame": tokens_per_frame, "rows": rows, "load": os.getloadavg()}


def window_median_ms(rows: list[dict], end: int, span: int = 50) -> float | None:
    picked = [r["seconds"] for r in rows if end - span < r["frame"] <= end]
    return float(np.median(picked)) * 1e3 if len(picked) == span else None


def at(rows: list[dict], frame: int, key: str) -> float | None:
    return rows[frame - 1][key] if len(rows) >= frame else None


def summary(results: dict[str, dict], span: int = 100) -> str:
    """Per variant: how cache, RSS and the median latency of ``span``-frame stretches moved from
    frame 2*span (the pruned cache is full by then) to the last frame."""
    parts = []
    for name in ("pruned", "unpruned"):
        rows = results[name]["rows"]
        first, last = 2 * span, len(rows) - len(rows) % span
        if last <= first:
            continue
        a, b = rows[first - 1], rows[last - 1]
        parts.append(f"{name}, frames {first} -> {last}: cache {b['cache_mb'] - a['cache_mb']:+.1f} MB, "
                     f"RSS {b['rss_mb'] - a['rss_mb']:+.0f} MB, median ms/frame of the {span} frames up to "
                     f"each: {fmt(window_median_ms(rows, first, span))} -> {fmt(window_median_ms(rows, last, span))}")
    return "; ".join(parts) + "."


def report(results: dict[str, dict], args, seconds: float, loads: list[float]) -> str:
    pruned, unpruned = results["pruned"], results["unpruned"]
    headers = ["frames", "pruned: cache MB", "unpruned: cache MB", "pruned: tokens", "unpruned: tokens",
               "pruned: peak RSS MB", "unpruned: peak RSS MB", "pruned: ms/frame", "unpruned: ms/frame"]
    table = []
    for n in REPORT_AT:
        if n > args.frames:
            continue
        table.append([str(n)] + [fmt(at(r["rows"], n, key), 4) for key in ("cache_mb",) for r in (pruned, unpruned)]
                     + [fmt(at(r["rows"], n, "tokens")) for r in (pruned, unpruned)]
                     + [fmt(at(r["rows"], n, "peak_rss_mb"), 4) for r in (pruned, unpruned)]
                     + [fmt(window_median_ms(r["rows"], n), 3) for r in (pruned, unpruned)])
    info = machine_info()
    cfg = bench_config()
    n_unpruned = len(unpruned["rows"])
    note = load_note(loads, info["nproc"])
    lines = [
        "## KV cache: bounded streaming memory (VGGT backend)",
        "",
        f"Command: `python bench/bench_kv_cache.py --frames {args.frames} --unpruned-frames {args.unpruned_frames} "
        f"--budget-frames {args.budget_frames} --width {args.width} --threads {args.threads}"
        f"{' --write-docs' if args.write_docs else ''}` ({seconds / 60:.1f} min in all).",
        "",
        f"Small VGGT (random weights; embed {cfg.embed_dim}, {cfg.depth} frame + {cfg.depth} global blocks, DINOv2 "
        f"encoder of {cfg.dino_depth} blocks, depth head, camera head with {cfg.camera_iterations} iterations of a "
        f"{cfg.camera_trunk_depth}-block trunk), CPU fp32, {args.threads} thread(s); "
        f"great_wall.mp4 frames (640x360, resized to {2 * args.width} px wide as ingest would) cropped to "
        f"{args.width} px wide ({pruned['tokens_per_frame']} tokens per frame and "
        f"layer); the backend's `predict` on 2-frame windows overlapping by one (one new frame per call). "
        f"Pruned: `load_vggt_backend(total_budget_tokens={pruned['budget_tokens']})` = {args.budget_frames} frames "
        f"per global layer, adaptive layer budgets, camera trunk {args.budget_frames} frames per layer. "
        f"Unpruned: `build_vggt_backend` with the default unbounded cache"
        + (f", stopped after {n_unpruned} frames (`--unpruned-max-seconds {args.unpruned_max_seconds:g}`)."
           if n_unpruned < args.unpruned_frames else f", {n_unpruned} frames."),
        "ms/frame is the median `predict` time of the 50 frames up to that row; RSS is the whole process "
        "(Python, torch, decoded video frames included).",
        "",
        markdown_table(headers, table),
        "",
        f"Over the run: {summary(results)}",
        "",
        f"Machine: {info['cpu']}, {info['nproc']} cores, {info['memory_gb']} GB RAM, Python {info['python']}."
        + (f" Note: {note}." if note else ""),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000, help="frames streamed with the pruned cache")
    parser.add_argument("--unpruned-frames", type=int, default=1000, help="frames streamed with the unpruned cache")
    parser.add_argument("--unpruned-max-seconds", type=float, default=180.0, help="stop the unpruned run earlier")
    parser.add_argument("--budget-frames", type=int, default=48, help="pruned budget in frames per global layer")
    parser.add_argument("--width", type=int, default=140, help="model image width (multiple of 14)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the {SECTION} section of docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write every per-frame figure here")
    parser.add_argument("--report-from", type=Path, help="re-render the report from a --json file of an earlier run")
    parser.add_argument("--variant", choices=["pruned", "unpruned"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.width % 14:
        parser.error(f"--width {args.width} is not a multiple of 14")
    if args.variant:  # a child process: one run, figures to --out
        args.out.write_text(json.dumps(run_variant(args)))
        return 0

    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        for name, value in saved["args"].items():
            setattr(args, name, value)
        return finish(saved["results"], args, saved["seconds"], saved["loads"])

    start = time.perf_counter()
    results, loads = {}, [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        checkpoint = Path(tmp) / "model.pt"
        torch.save(VGGT(config=bench_config()).state_dict(), checkpoint)
        for variant in ("pruned", "unpruned"):
            out = Path(tmp) / f"{variant}.json"
            cmd = [sys.executable, __file__, "--variant", variant, "--checkpoint", str(checkpoint), "--out", str(out)]
            for name in RUN_SETTINGS:
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            print(f"running {variant} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
            results[variant] = json.loads(out.read_text())
            loads.append(results[variant]["load"][0])
    seconds = time.perf_counter() - start
    if args.json:
        settings = {name: getattr(args, name) for name in RUN_SETTINGS}
        args.json.write_text(json.dumps({"results": results, "seconds": seconds, "loads": loads, "args": settings}))
    return finish(results, args, seconds, loads)


def finish(results: dict, args, seconds: float, loads: list[float]) -> int:
    text = report(results, args, seconds, loads)
    print(text)
    if args.write_docs:
        print(f"wrote {write_docs_section(SECTION, text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
