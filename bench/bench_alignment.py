"""Benchmark of align/: LASER layer-wise scale alignment against Sim(3)-only alignment.

Two parts, each comparing ``AlignConfig(layerwise=True)`` with ``layerwise=False``
on the very same window predictions:

synthetic
    Rendered sequences of a room with objects floating in it
    (``stream4d.synthetic``) cut into windows. Each window is reported in a
    random frame and scale, and its depth layers are distorted like a
    feed-forward model's: the objects 10-20 % too near or too far, the room
    within 3 % (its poses agree with the room). The first window is left exact, so the world
    it defines is the truth and the error measures how far later windows
    stray from it. Scores: mean distance of every emitted point to the truth,
    ATE, and depth disagreement of the two windows' copies of shared frames.

real
    Every set in /work/shared/data through a WindowModel (default: the
    weight-free ``recon.default.model:DefaultWindowModel``). Scores: ATE of
    the emitted cameras after a Umeyama Sim(3) onto the reference, and depth
    disagreement of shared frames (there is no ground-truth depth).

    python bench/bench_alignment.py synthetic
    python bench/bench_alignment.py real --sets all --window 10 --overlap 3
"""

from __future__ import annotations

import argparse
import importlib
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from align.aligner import AlignConfig, StreamAligner
from align.synthetic import distort_layers, random_sim3, render_layered_room, window_from_geometry, window_spans
from stream4d.contracts import AlignedWindow, WindowPrediction
from stream4d.geometry import umeyama, unproject_depth

DATA = Path("/work/shared/data")
# Aligner settings compared on the same predictions: Sim(3) only, layer-wise (default), and layer-wise
# with LASER's registration of each window on the previous window's layer-scaled depth.
VARIANTS = {
    "sim3": dict(layerwise=False),
    "layerwise": dict(layerwise=True),
    "laser_registration": dict(layerwise=True, register_on_layer_depth=True),
}
REAL_SETS = {
    "kitti_seq1": "kitti_seq1/cameras.json",
    "llff_fern": "llff_fern/cameras.json",
    "dtu_scan24": "dtu_scan24/cameras.json",
    "strecha_fountain_p11": "strecha_fountain_p11/cameras.json",
}


# ----------------------------------------------------------------------------- scores
def ate_rmse(aligned: list[AlignedWindow], gt_c2w: dict[int, np.ndarray]) -> tuple[float, float]:
    """RMSE of emitted camera centres after Umeyama onto the reference, and the same over the path length."""
    pred, gt = [], []
    for window in aligned:
        for i in np.nonzero(window.is_new)[0]:
            index = int(window.prediction.frame_indices[i])
            if index in gt_c2w:
                pred.append(window.prediction.c2w[i, :3, 3])
                gt.append(gt_c2w[index][:3, 3])
    pred, gt = np.array(pred), np.array(gt)
    sim3 = umeyama(pred, gt)
    rmse = float(np.sqrt(np.mean(np.sum((sim3.apply(pred) - gt) ** 2, axis=1))))
    length = float(np.linalg.norm(np.diff(gt, axis=0), axis=1).sum())
    return rmse, rmse / max(length, 1e-12)


def overlap_depth_disagreement(aligned: list[AlignedWindow], conf_quantile: float = 0.5) -> float:
    """Mean |d_later - d_earlier| / d_earlier over trusted pixels of shared frames, averaged over those frames.

    Both copies are the aligner's world-scale output, so this is how well
    consecutive windows agree where they overlap.
    """
    values = []
    for earlier, later in zip(aligned, aligned[1:]):
        a, b = earlier.prediction, later.prediction
        _, ia, ib = np.intersect1d(a.frame_indices, b.frame_indices, return_indices=True)
        for i, j in zip(ia, ib):
            da, db = a.depth[i], b.depth[j]
            ok = (da > 0) & (db > 0)
            ok &= a.depth_conf[i] >= np.quantile(a.depth_conf[i][ok], conf_quantile) if ok.any() else ok
            ok &= b.depth_conf[j] >= np.quantile(b.depth_conf[j][ok], conf_quantile) if ok.any() else ok
            if ok.sum() >= 10:
                values.append(float(np.mean(np.abs(db[ok] - da[ok]) / da[ok])))
    return float(np.mean(values)) if values else float("nan")


def align_all(preds: list[WindowPrediction], config: AlignConfig) -> tuple[list[AlignedWindow], float]:
    aligner = StreamAligner(config)
    start = time.perf_counter()
    desc = f"align layerwise={config.layerwise} laser_registration={config.register_on_layer_depth}"
    out = [aligner.add(p) for p in tqdm(preds, desc=desc, leave=False)]
    return out, (time.perf_counter() - start) / len(preds)


# ----------------------------------------------------------------------------- synthetic
def layer_factors(rng: np.random.Generator) -> list[float]:
    """Depth factors [room, objects] of one window.

    The objects are 10-20 % too near or too far; the room, which dominates
    what a model matches to find its cameras and so agrees with its poses,
    is within 3 %.
    """
    return [float(rng.uniform(0.97, 1.03)), float(1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.2))]


def synthetic_case(trajectory: str, frames: int, width: int, height: int, window: int, overlap: int,
                   seed: int) -> dict:
    seq = render_layered_room(trajectory, frames, width, height, seed)
    rng = np.random.default_rng(seed)
    preds, to_window = [], []
    for k, span in enumerate(window_spans(frames, window, overlap)):
        factors = layer_factors(rng) if k > 0 else [1.0, 1.0]
        depth = distort_layers(seq.depth[span], seq.layers[span], factors)
        to_window.append(random_sim3(rng))
        preds.append(window_from_geometry(span, seq.images[span], depth, seq.c2w[span], seq.K, to_window[-1]))
    truth = np.stack([to_window[0].apply(unproject_depth(d.astype(np.float64), seq.K, c))
                      for d, c in zip(seq.depth, seq.c2w)])  # [N, H, W, 3] in the first window's world
    gt_c2w = dict(enumerate(seq.c2w))
    row = {"case": f"room/{trajectory}", "frames": frames, "size": f"{width}x{height}", "windows": len(preds),
           "object_fraction": float(seq.layers.mean())}
    for key, variant in VARIANTS.items():
        aligned, per_window = align_all(preds, AlignConfig(window=window, overlap=overlap, **variant))
        errors = []
        for w in aligned:
            new = w.prediction.frame_indices[w.is_new]
            valid = seq.depth[new] > 0
            errors.append(np.linalg.norm(w.prediction.points[w.is_new] - truth[new], axis=-1)[valid])
        errors = np.concatenate(errors)
        ate, _ = ate_rmse(aligned, gt_c2w)
        row[key] = {"point_error_mean": float(errors.mean()), "point_error_median": float(np.median(errors)),
                    "ate_rmse": ate, "overlap_depth_disagreement": overlap_depth_disagreement(aligned),
                    "seconds_per_window": per_window}
    row["point_error_reduction"] = 1.0 - row["layerwise"]["point_error_mean"] / row["sim3"]["point_error_mean"]
    return row


# ----------------------------------------------------------------------------- real data
def load_model(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)()


def real_case(name: str, model_spec: str, window: int, overlap: int, resize: int | None,
              max_frames: int | None, hide_intrinsics: bool = False, cache_dir: Path | None = None) -> dict:
    from recon.ingest.dataset import dataset_source
    from recon.ingest.options import IngestOptions

    cameras = DATA / REAL_SETS[name]
    listed = json.loads(cameras.read_text())["frames"]
    gt_c2w = {i: np.array(f["c2w"], np.float64) for i, f in enumerate(listed)}
    with dataset_source(cameras, IngestOptions(resize=resize, max_frames=max_frames)) as source:
        frames = list(source)
    if hide_intrinsics:  # as from a video: the model self-calibrates, the aligner fixes K
        frames = [replace(f, K=None) for f in frames]
    spans = window_spans(len(frames), window, overlap)
    cached = None
    if cache_dir is not None:
        model_tag = model_spec.replace(":", ".")
        tag = f"{name}_{model_tag}_w{window}_o{overlap}_r{resize}_n{len(frames)}_k{int(hide_intrinsics)}"
        cached = cache_dir / f"{tag}.pkl"
    if cached is not None and cached.exists():
        preds, model_name, model_seconds = pickle.loads(cached.read_bytes())
    else:
        model = load_model(model_spec)
        model.reset()
        start = time.perf_counter()
        preds = [model.predict([frames[i] for i in span]) for span in tqdm(spans, desc=f"{name}: {model.name}")]
        model_name, model_seconds = model.name, (time.perf_counter() - start) / len(spans)
        if cached is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps((preds, model_name, model_seconds)))
    row = {"case": name + (" (K hidden)" if hide_intrinsics else ""), "frames": len(frames),
           "size": "x".join(map(str, frames[0].size)), "windows": len(preds), "model": model_name,
           "model_seconds_per_window": model_seconds}
    for key, variant in VARIANTS.items():
        aligned, per_window = align_all(preds, AlignConfig(window=window, overlap=overlap, **variant))
        ate, ate_rel = ate_rmse(aligned, gt_c2w)
        row[key] = {
            "ate_rmse": ate, "ate_over_path": ate_rel,
            "overlap_depth_disagreement": overlap_depth_disagreement(aligned),
            "seconds_per_window": per_window,
            "degenerate_overlaps": int(sum(bool(w.info.get("degenerate_overlap")) for w in aligned)),
            "sim3_scales": [w.sim3_scale for w in aligned],
            "layer_scale_ranges": [[w.info["layers"]["scale_min"], w.info["layers"]["scale_max"]]
                                   for w in aligned if "layers" in w.info],
        }
    return row


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def print_table(rows: list[dict]) -> None:
    """Markdown table: each cell lists Sim(3)-only / layer-wise / layer-wise with LASER's registration."""
    keys = list(VARIANTS)
    triple = lambda r, field, fmt: " / ".join(fmt(r[k][field]) for k in keys)  # noqa: E731
    if "point_error_reduction" in rows[0]:
        print("| case | windows | point error (m) | reduction by layer-wise | ATE (m) | overlap depth disagreement "
              "| align s/window |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} {r['size']} | {r['windows']} | {triple(r, 'point_error_mean', '{:.4f}'.format)} | "
                  f"{100 * r['point_error_reduction']:.0f} % | {triple(r, 'ate_rmse', '{:.4f}'.format)} | "
                  f"{triple(r, 'overlap_depth_disagreement', _pct)} | "
                  f"{triple(r, 'seconds_per_window', '{:.2f}'.format)} |")
    else:
        print("| set | frames | windows | ATE | ATE / path | overlap depth disagreement | align s/window |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} {r['size']} | {r['frames']} | {r['windows']} | "
                  f"{triple(r, 'ate_rmse', '{:.4f}'.format)} | "
                  f"{triple(r, 'ate_over_path', _pct)} | {triple(r, 'overlap_depth_disagreement', _pct)} | "
                  f"{triple(r, 'seconds_per_window', '{:.2f}'.format)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    syn = sub.add_parser("synthetic", help="rendered room with injected per-layer depth distortions")
    syn.add_argument("--trajectories", default="orbit,handheld,sideways")
    syn.add_argument("--frames", type=int, default=40)
    syn.add_argument("--size", default="256x192", help="WxH of the rendered views")
    syn.add_argument("--window", type=int, default=10)
    syn.add_argument("--overlap", type=int, default=3)
    syn.add_argument("--seed", type=int, default=0)
    real = sub.add_parser("real", help="the sets in /work/shared/data through a WindowModel")
    real.add_argument("--sets", default="all", help=f"comma list of {sorted(REAL_SETS)} or 'all'")
    real.add_argument("--model", default="recon.default.model:DefaultWindowModel", help="module:Class")
    real.add_argument("--window", type=int, default=10)
    real.add_argument("--overlap", type=int, default=3)
    real.add_argument("--resize", type=int, default=512, help="longest side fed to the model (0: as is)")
    real.add_argument("--max-frames", type=int, default=None)
    real.add_argument("--hide-intrinsics", action="store_true", help="drop the sets' K (like a video input)")
    real.add_argument("--cache-dir", type=Path, help="keep the model's window predictions here and reuse them "
                      "(to compare aligner settings without rerunning the model)")
    for p in (syn, real):
        p.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    rows = []
    if args.part == "synthetic":
        width, height = (int(v) for v in args.size.lower().split("x"))
        for trajectory in args.trajectories.split(","):
            rows.append(synthetic_case(trajectory, args.frames, width, height, args.window, args.overlap, args.seed))
    else:
        names = sorted(REAL_SETS) if args.sets == "all" else args.sets.split(",")
        unknown = set(names) - set(REAL_SETS)
        if unknown:
            parser.error(f"unknown set(s) {sorted(unknown)}; known: {sorted(REAL_SETS)}")
        for name in names:
            rows.append(real_case(name, args.model, args.window, args.overlap, args.resize or None, args.max_frames,
                                  args.hide_intrinsics, args.cache_dir))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
