"""How clearly the no-parallax decision separates degenerate windows from real ones.

For each input it cuts windows of consecutive frames at 512 px, as the
pipeline does, matches them with the default backend, and reports per window
the best pair's ratio of rotation-unexplained motion to matching noise
(``recon.default.parallax``; the threshold is ``ParallaxConfig.min_ratio``)
and the triangulation angle of the essential-matrix initial pair (the old,
RANSAC-dependent test). Synthetic inputs are exact: a static camera with
intensity noise, pure pans, and 30 fps motion.

    python bench/bench_parallax.py [--write-docs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, markdown_table, write_docs_section  # noqa: E402

from recon.default.model import DefaultWindowModel, prior_intrinsics  # noqa: E402
from recon.default.parallax import ParallaxConfig, judge_parallax  # noqa: E402
from recon.ingest import IngestOptions, open_source  # noqa: E402
from stream4d.contracts import Frame  # noqa: E402
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view  # noqa: E402

W, H = 512, 384
ALL_PAIRS = ParallaxConfig(min_ratio=float("inf"), max_pairs=10_000)  # judge every pair: the best ratio


def window_evidence(model: DefaultWindowModel, frames: list[Frame], hide_K: bool) -> tuple[float, float | None]:
    """(best pair's ratio, E-matrix initial-pair angle or None) of one window."""
    if hide_K:
        frames = [Frame(index=f.index, timestamp=f.timestamp, image=f.image, source=f.source) for f in frames]
    known = all(f.K is not None for f in frames)
    Wf, Hf = frames[0].size
    K = np.asarray(frames[0].K, np.float64) if known else prior_intrinsics(Wf, Hf, 1.0)
    sfm, feats, matches, _, _ = model._structure(frames, K, known, 1.0, {})
    pairs = [(m.i, m.j, feats[m.i].keypoints[m.idx_i], feats[m.j].keypoints[m.idx_j]) for m in matches]
    ratio = judge_parallax(pairs, K, not known, ALL_PAIRS).ratio
    angle = None
    if sfm is not None:
        angle = sfm.info.get("init_median_angle_deg")
    return ratio, angle


def synthetic_inputs() -> dict[str, list[Frame]]:
    scene = make_scene("room", seed=0)
    K = intrinsics_for(W, H)
    base = make_trajectory("orbit", 1, seed=0, scene=scene)[0]
    rng = np.random.default_rng(0)
    img0 = render_view(scene, base, K, W, H).rgb
    out = {"static camera": [Frame(index=i, timestamp=i / 30, source=f"still/{i}", K=K,
                                   image=np.clip(img0.astype(np.int16) + rng.integers(-2, 3, img0.shape), 0, 255)
                                   .astype(np.uint8)) for i in range(6)]}
    for deg in (0.5, 4.0):
        frames = []
        for i in range(6):
            yaw = np.radians(deg * i)
            R = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
            c2w = base.copy()
            c2w[:3, :3] = base[:3, :3] @ R
            frames.append(Frame(index=i, timestamp=i / 30, image=render_view(scene, c2w, K, W, H).rgb,
                                source=f"pan/{i}", K=K))
        out[f"pan {deg:g} deg/frame"] = frames
    for kind in ("orbit", "sideways", "forward", "handheld"):
        traj = make_trajectory(kind, 60, seed=0, scene=scene)
        out[f"{kind}, 10 frames at 30 fps"] = [
            Frame(index=i, timestamp=i / 30, image=render_view(scene, traj[i], K, W, H).rgb, source=f"{kind}/{i}", K=K)
            for i in range(10)]
    return out


def real_windows(path: Path, window: int, every: int, max_frames: int | None) -> list[list[Frame]]:
    frames = list(open_source(path, IngestOptions(resize=512, max_frames=max_frames)))
    starts = range(0, max(1, len(frames) - window + 1), every)
    return [frames[s:s + window] for s in starts]


REAL = [("great_wall.mp4 (24 fps)", "videos/great_wall.mp4", 60, 200), ("room.mp4", "videos/room.mp4", 20, None),
        ("kitti_seq1", "kitti_seq1", 30, None), ("llff_fern", "llff_fern", 20, None),
        ("dtu_scan24", "dtu_scan24", 20, None), ("strecha_fountain_p11", "strecha_fountain_p11", 20, None),
        ("strecha_castle_p30", "strecha_castle_p30", 15, None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    rows = []

    def add(name: str, windows: list[list[Frame]], hide_K: bool) -> None:
        model = DefaultWindowModel()  # its feature cache is keyed by frame index: one per input
        found = [window_evidence(model, w, hide_K) for w in windows]
        ratios = [r for r, _ in found]
        angles = [a for _, a in found if a is not None]
        row = [name + (", K hidden" if hide_K else ""), str(len(windows)), f"{min(ratios):.1f}–{max(ratios):.1f}",
               f"{sum(r >= ParallaxConfig().min_ratio for r in ratios)}/{len(ratios)}",
               f"{min(angles):.2f}–{max(angles):.2f}°" if angles else "none"]
        rows.append(row)
        print(" | ".join(row), flush=True)

    for name, frames in synthetic_inputs().items():
        for hide in (False, True):
            add(name, [frames], hide)
    for name, rel, every, max_frames in REAL:
        windows = real_windows(DATA_ROOT / rel, 20, every, max_frames)
        add(name, windows, False)
        if name.startswith(("kitti", "strecha_castle")):
            add(name, windows, True)
    table = markdown_table(["input", "windows", "best-pair ratio", "judged with parallax", "E-matrix angle"], rows)
    if args.write_docs:
        body = ("Windows of 20 consecutive frames at 512 px (synthetic: one window); ratio = the best pair's "
                "rotation-unexplained motion over its matching noise, threshold "
                f"{ParallaxConfig().min_ratio:g}; the E-matrix angle is the old test's (below 0.4° = degenerate).\n\n"
                "    python bench/bench_parallax.py --write-docs\n\n" + table)
        write_docs_section("parallax_decision", body)
    print(table)


if __name__ == "__main__":
    main()
