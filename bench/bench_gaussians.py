"""Benchmark of memory/gaussians: the Gaussian-splat cache on a long stream and on real photos.

stream
    An endless synthetic stream (``stream4d.synthetic``): the room with a rolling
    ball, a camera circling it 3 degrees per frame, exact depth and poses fed
    view by view through ``GaussianCache.add_view``. Every ``--every`` frames:
    static / dynamic Gaussian counts, the cache's column bytes, the process RSS
    and its peak, and the median ``add_view`` time. The count and the memory
    must plateau: revisited places merge, the dynamic layer keeps a bounded
    number of timestamps, and the cap evicts when reached.

synthetic
    Held-out renders on exact synthetic views: 40 frames of the room at 128x96
    along each trajectory kind, every 5th (offset 2) held out, the rest fed to
    the cache. PSNR and depth AbsRel of the renders at the held-out poses, and
    the Gaussian count against the raw pixel count.

fern
    /work/shared/data/llff_fern (images_8, 504x378): every 5th frame (offset 2)
    is held out. The weight-free default backend (``recon.default``) predicts
    depth for the other frames in one window; a Umeyama Sim(3) of its camera
    centres onto the dataset's places that depth in the dataset's world, and
    the views go into the cache with the dataset's poses and K. PSNR of the
    cache rendered at the held-out poses (and, as a ceiling, at the training
    poses) against the photos.

    python bench/bench_gaussians.py stream --frames 5000 --write-docs
    python bench/bench_gaussians.py synthetic --write-docs
    python bench/bench_gaussians.py fern --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    DATA_ROOT,
    fmt,
    load_note,
    machine_info,
    markdown_table,
    measure,
    write_docs_section,
)
from memory.gaussians import GaussianCache, GaussianCacheConfig  # noqa: E402
from stream4d.contracts import Frame  # noqa: E402
from stream4d.geometry import Sim3, camera_centres, rotation_angle_deg  # noqa: E402

SECTION = "bench_gaussians"
PARTS = ("synthetic", "stream", "fern")  # sub-blocks of the docs section, in this order


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


# ---- stream ------------------------------------------------------------------------------

def run_stream(args) -> dict:
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

    W, H = (int(x) for x in args.size.split("x"))
    scene = make_scene("room", seed=args.seed, moving_object=True)
    c2w = make_trajectory("orbit", args.frames, seed=args.seed, scene=scene, step_deg=3.0)
    K = intrinsics_for(W, H, 60)
    config = GaussianCacheConfig(max_gaussians=args.max_gaussians)
    cache = GaussianCache(config)
    proc = psutil.Process()
    rows, times, loads = [], [], []
    raw_pixels, peak_rss = 0, 0.0
    cpu0 = proc.cpu_times()
    t_start = time.perf_counter()
    for i in tqdm(range(args.frames), desc="stream", unit="frame"):
        v = render_view(scene, c2w[i], K, W, H, time=i / args.fps, index=i)
        raw_pixels += int((v.depth > 0).sum())
        t = time.perf_counter()
        counts = cache.add_view(v.rgb, v.depth, None, None, v.c2w, v.K, v.timestamp)
        times.append(time.perf_counter() - t)
        rss = proc.memory_info().rss / 2**20
        peak_rss = max(peak_rss, rss)
        if (i + 1) % args.every == 0 or i + 1 == args.frames:
            loads.append(os.getloadavg()[0])
            rows.append({
                "frames": i + 1, "static": cache.num_static, "dynamic": cache.num_dynamic,
                "dynamic_frames": len(cache.dynamic_timestamps), "cache_mb": cache.nbytes() / 2**20,
                "rss_mb": rss, "peak_rss_mb": peak_rss, "ms_per_frame": 1000 * float(np.median(times[-args.every:])),
                "raw_pixels": raw_pixels, "evicted": counts["evicted"],
            })
            tqdm.write(json.dumps(rows[-1]))
    cpu1 = proc.cpu_times()
    return {
        "size": (W, H), "frames": args.frames, "rows": rows, "loads": loads,
        "seconds": time.perf_counter() - t_start, "cache_cpu_s": float(np.sum(times)),
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), "max_gaussians": args.max_gaussians,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def stream_section(res: dict, argv: list[str]) -> str:
    W, H = res["size"]
    rows = res["rows"]
    table = markdown_table(
        ["frames", "static", "dynamic (timestamps)", "cache MB", "RSS MB", "peak RSS MB", "add_view ms/frame",
         "Gaussians / raw pixels"],
        [[r["frames"], r["static"], f"{r['dynamic']} ({r['dynamic_frames']})", fmt(r["cache_mb"]),
          fmt(r["rss_mb"], 4), fmt(r["peak_rss_mb"], 4), fmt(r["ms_per_frame"]),
          f"{100 * (r['static'] + r['dynamic']) / r['raw_pixels']:.2f} %"] for r in rows])
    half = [r for r in rows if r["frames"] >= res["frames"] // 2]
    lines = [
        "### Long stream: count and memory plateau",
        "",
        f"Command: `python bench/bench_gaussians.py {' '.join(argv)}` ({res['seconds'] / 60:.1f} min wall, "
        f"{res['cpu_s'] / 60:.1f} min CPU of which `add_view` {res['cache_cpu_s'] / 60:.1f} min).",
        "",
        f"Synthetic room with a rolling ball, {res['frames']} frames at {W}x{H}, camera orbiting 3 deg/frame "
        f"(~{res['frames'] * 3 / 360:.0f} laps), exact depth and poses through `add_view`, default "
        f"`GaussianCacheConfig` (max_gaussians={res['max_gaussians']:,}). RSS is the whole process (renderer "
        "included); cache MB is the Gaussian columns (static capacity + dynamic layer).",
        "",
        table,
        "",
        f"Second half of the run (frames {half[0]['frames']} -> {half[-1]['frames']}): static "
        f"{half[0]['static']} -> {half[-1]['static']}, cache {fmt(half[0]['cache_mb'])} -> "
        f"{fmt(half[-1]['cache_mb'])} MB, RSS {fmt(half[0]['rss_mb'], 4)} -> {fmt(half[-1]['rss_mb'], 4)} MB, "
        f"peak RSS {fmt(half[0]['peak_rss_mb'], 4)} -> {fmt(half[-1]['peak_rss_mb'], 4)} MB.",
    ]
    note = load_note(res["loads"], machine_info()["nproc"])
    if note:
        lines += ["", f"Note: {note}."]
    return "\n".join(lines)


# ---- synthetic held-out renders ---------------------------------------------------------

def run_synthetic(args) -> dict:
    from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

    W, H = (int(x) for x in args.size.split("x"))
    scene = make_scene("room", seed=args.seed)
    K = intrinsics_for(W, H, 60)
    rows = []
    for kind in args.trajectories.split(","):
        views = list(render_sequence(scene, make_trajectory(kind, args.frames, seed=args.seed, scene=scene), K, W, H))
        train = [v for i, v in enumerate(views) if i % 5 != 2]
        held = [v for i, v in enumerate(views) if i % 5 == 2]
        cache = GaussianCache()
        with measure() as m_add:
            for v in train:
                cache.add_view(v.rgb, v.depth, None, None, v.c2w, v.K, v.timestamp)
        psnrs, rels, cover = [], [], []
        with measure() as m_render:
            for v in held:
                rgb, depth, alpha = cache.render(v.c2w, v.K, W, H)
                psnrs.append(psnr(rgb, v.rgb / 255.0))
                scored = (v.depth > 0) & (alpha > 0.5)
                rels.append(float(np.mean(np.abs(depth[scored] - v.depth[scored]) / v.depth[scored])))
                cover.append(float(scored.sum() / max((v.depth > 0).sum(), 1)))
        raw = sum(int((v.depth > 0).sum()) for v in train)
        rows.append({"trajectory": kind, "psnr": psnrs, "abs_rel": rels, "coverage": cover,
                     "gaussians": len(cache), "raw_pixels": raw, "add_ms": 1000 * m_add.seconds / len(train),
                     "render_ms": 1000 * m_render.seconds / len(held)})
        tqdm.write(json.dumps({k: v for k, v in rows[-1].items() if k in ("trajectory", "gaussians")}))
    return {"size": (W, H), "frames": args.frames, "rows": rows, "loads": [os.getloadavg()[0]]}


def synthetic_section(res: dict, argv: list[str]) -> str:
    W, H = res["size"]
    table = markdown_table(
        ["trajectory", "held-out PSNR mean (min) dB", "depth AbsRel mean (max)", "coverage", "Gaussians / raw pixels",
         "add_view ms", "render ms"],
        [[r["trajectory"], f"{np.mean(r['psnr']):.2f} ({np.min(r['psnr']):.2f})",
          f"{np.mean(r['abs_rel']):.4f} ({np.max(r['abs_rel']):.4f})", f"{100 * np.mean(r['coverage']):.1f} %",
          f"{r['gaussians']:,} / {r['raw_pixels']:,} = {100 * r['gaussians'] / r['raw_pixels']:.1f} %",
          fmt(r["add_ms"]), fmt(r["render_ms"])] for r in res["rows"]])
    lines = [
        "### Synthetic: held-out renders",
        "",
        f"Command: `python bench/bench_gaussians.py {' '.join(argv)}`.",
        "",
        f"Synthetic room, {res['frames']} frames at {W}x{H} per trajectory, exact depth and poses; every 5th "
        "frame (offset 2) held out and rendered from the cache of the others (default config, torch renderer, "
        "black background). AbsRel over pixels with ground-truth depth and rendered alpha > 0.5 (coverage = "
        "their share). The targets (>= 25 dB, AbsRel <= 0.05, <= 30 % of raw pixels) are for the slow "
        "sideways sweep; the others show where held-out views see surfaces no training view saw "
        "(disocclusions render black).",
        "",
        table,
    ]
    return "\n".join(lines)


# ---- fern ------------------------------------------------------------------------------

def load_fern(cameras: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    doc = json.loads(cameras.read_text())
    images, Ks, c2ws = [], [], []
    for f in doc["frames"]:
        img = cv2.imread(str(cameras.parent / f["image"]), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read {cameras.parent / f['image']}")
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        Ks.append(np.array(f["K"], np.float64))
        c2ws.append(np.array(f["c2w"], np.float64))
    return images, np.stack(Ks), np.stack(c2ws)


def pose_sim3(pred_c2w: np.ndarray, ref_c2w: np.ndarray) -> Sim3:
    """Similarity taking predicted cameras ``[N, 4, 4]`` onto reference ones: the rotation from all
    orientations (a short handheld path leaves it ill-posed from centres alone), then scale and
    translation from the centres."""
    M = np.einsum("nij,nkj->ik", ref_c2w[:, :3, :3], pred_c2w[:, :3, :3])  # sum R_ref R_pred^T
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    src = camera_centres(pred_c2w) @ R.T
    dst = camera_centres(ref_c2w)
    a, b = src - src.mean(0), dst - dst.mean(0)
    scale = float(np.sum(a * b) / np.sum(a * a))
    return Sim3(scale, R, dst.mean(0) - scale * src.mean(0))


def run_fern(args) -> dict:
    from recon.default.model import DefaultWindowModel

    images, Ks, c2ws = load_fern(DATA_ROOT / "llff_fern" / "cameras_images_8.json")
    n = len(images)
    held = [i for i in range(n) if i % 5 == 2]
    train = [i for i in range(n) if i % 5 != 2]
    frames = [Frame(index=i, timestamp=i / 10.0, image=images[i], source=f"llff_fern#{i}", K=Ks[i]) for i in train]
    with measure() as m_pred:
        pred = DefaultWindowModel().predict(frames)
    # The window's frame and scale are arbitrary: place it on the dataset's cameras.
    sim = pose_sim3(pred.c2w, c2ws[train])
    rot_err = rotation_angle_deg(sim.apply_c2w(pred.c2w)[:, :3, :3] @ np.swapaxes(c2ws[train][:, :3, :3], 1, 2))
    H, W = images[0].shape[:2]
    by_stride = {}
    # Stride 1: a Gaussian per pixel (add_view); stride 2: every other pixel each way, which is what
    # add_window does at this size with the default window_max_side (256).
    for stride in (1, 2):
        every = (slice(None, None, stride), slice(None, None, stride))
        to_stride = np.diag([1.0 / stride, 1.0 / stride, 1.0])
        cache = GaussianCache(GaussianCacheConfig())
        with measure() as m_add:
            for k, i in enumerate(train):
                pts = sim.apply(pred.points[k].astype(np.float64))
                conf = pred.points_conf[k] if np.any(pred.points_conf[k] > 0) else pred.depth_conf[k]
                cache.add_view(pred.images[k][every], (pred.depth[k] * sim.s)[every], conf[every], pts[every],
                               c2ws[i], to_stride @ Ks[i], i / 10.0)
        scores = {}
        with measure() as m_render:
            for name, ids in (("held-out", held), ("training", train)):
                vals, drawn, cover = [], [], []
                for i in ids:
                    rgb, _, alpha = cache.render(c2ws[i], Ks[i], W, H)
                    vals.append(psnr(rgb, images[i] / 255.0))
                    m = alpha > 0.5
                    drawn.append(psnr(rgb[m], images[i][m] / 255.0))
                    cover.append(float(m.mean()))
                scores[name] = {"psnr": vals, "psnr_covered": drawn, "coverage": cover}
        by_stride[stride] = {"scores": scores, "gaussians": len(cache), "add_s": m_add.seconds,
                             "render_s": m_render.seconds}
    ate = float(np.sqrt(np.mean(np.sum((sim.apply(camera_centres(pred.c2w)) - camera_centres(c2ws[train])) ** 2,
                                       axis=1))))
    full = by_stride[1]
    return {"size": (W, H), "held": held, "train": train, "scores": full["scores"], "gaussians": full["gaussians"],
            "by_stride": by_stride,
            "predict_s": m_pred.seconds, "add_s": full["add_s"], "render_s": full["render_s"],
            "ate": ate, "rot_err_deg": float(np.median(rot_err)), "valid_depth": float(np.mean(pred.depth > 0)),
            "raw_pixels": int(np.sum(pred.depth > 0)), "loads": [os.getloadavg()[0]]}


def stride_label(k) -> str:
    return "pixel" if int(k) == 1 else f"{int(k)}nd pixel" if int(k) == 2 else f"{int(k)}th pixel"


def fern_section(res: dict, argv: list[str]) -> str:
    W, H = res["size"]
    rows = [[f"{name}, every {stride_label(k)}", ", ".join(str(i) for i in res[key]), f"{r['gaussians']:,}",
             fmt(1000 * r["add_s"] / len(res["train"])), fmt(np.mean(r["scores"][name]["psnr"])),
             ", ".join(f"{p:.2f}" for p in r["scores"][name]["psnr"]), fmt(np.mean(r["scores"][name]["psnr_covered"])),
             f"{100 * np.mean(r['scores'][name]['coverage']):.1f} %"]
            for name, key in (("held-out", "held"), ("training", "train"))
            for k, r in sorted(res["by_stride"].items(), key=lambda kv: int(kv[0]))]
    lines = [
        "### Real photos: llff_fern renders",
        "",
        f"Command: `python bench/bench_gaussians.py {' '.join(argv)}`.",
        "",
        f"llff_fern images_8 ({W}x{H}), dataset poses and K; depth from the default backend on the "
        f"{len(res['train'])} training frames in one window ({fmt(res['predict_s'])} s; valid depth on "
        f"{100 * res['valid_depth']:.0f} % of pixels; after a Sim(3) onto the dataset's cameras its centres sit "
        f"{fmt(res['ate'])} units RMSE away and its orientations {fmt(res['rot_err_deg'])} deg (median)), "
        f"{res['raw_pixels']:,} depth pixels, no photometric refinement (CPU). "
        "Coverage = pixels with rendered alpha > 0.5; uncovered pixels (no depth from the backend) render "
        "black and count in the PSNR; the covered-pixels PSNR leaves them out.",
        "",
        "Rows \"every pixel\" give each depth pixel a Gaussian (`add_view`); \"every 2nd pixel\" takes every "
        "other pixel each way, as `add_window` does by default at this size (`window_max_side=256`).",
        "",
        markdown_table(["views", "frames", "Gaussians", "add ms/view", "mean PSNR (dB)", "per frame",
                        "covered-pixels PSNR (dB)", "coverage"], rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    st = sub.add_parser("stream", help="long synthetic stream: count and memory plateau")
    st.add_argument("--frames", type=int, default=5000)
    st.add_argument("--size", default="128x96", help="WxH of the rendered views")
    st.add_argument("--fps", type=float, default=10.0)
    st.add_argument("--every", type=int, default=250, help="report every N frames")
    st.add_argument("--max-gaussians", type=int, default=GaussianCacheConfig.max_gaussians)
    st.add_argument("--seed", type=int, default=0)
    sy = sub.add_parser("synthetic", help="held-out renders of synthetic sequences")
    sy.add_argument("--frames", type=int, default=40)
    sy.add_argument("--size", default="128x96", help="WxH of the rendered views")
    sy.add_argument("--trajectories", default="sideways,handheld,orbit,forward")
    sy.add_argument("--seed", type=int, default=0)
    fe = sub.add_parser("fern", help="PSNR of held-out llff_fern views")
    for p in (st, sy, fe):
        p.add_argument("--json", type=Path, help="also write the results here")
        p.add_argument("--write-docs", action="store_true", help=f"update the {SECTION} part of docs/benchmarks.md")
    args = parser.parse_args(argv)
    run, section = {"stream": (run_stream, stream_section), "synthetic": (run_synthetic, synthetic_section),
                    "fern": (run_fern, fern_section)}[args.part]
    res = run(args)
    body = section(res, argv)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
    if args.write_docs:
        write_part(args.part, body)
    return 0


def write_part(part: str, body: str) -> None:
    """Keep both parts in one docs section: each between its own sub-markers."""
    from bench.common import DOCS_BENCHMARKS

    text = DOCS_BENCHMARKS.read_text() if DOCS_BENCHMARKS.exists() else ""
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    current = text[text.find(start) + len(start):text.find(end)] if start in text and end in text else ""
    parts = {}
    for name in PARTS:
        a, b = f"<!-- {name} -->", f"<!-- /{name} -->"
        if a in current and b in current:
            parts[name] = current[current.find(a) + len(a):current.find(b)].strip()
    parts[part] = body.strip()
    info = machine_info()
    header = (f"## Gaussian-splat cache (`bench/bench_gaussians.py`)\n\nMachine: {info['cpu']}, {info['nproc']} cores, "
              f"{info['memory_gb']} GB RAM, Python {info['python']}; CPU only (torch renderer, no refinement).")
    blocks = [f"<!-- {name} -->\n{parts[name]}\n<!-- /{name} -->" for name in PARTS if name in parts]
    write_docs_section(SECTION, "\n\n".join([header, *blocks]))


if __name__ == "__main__":
    sys.exit(main())
