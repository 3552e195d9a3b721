"""Test data for viz: aligned windows and Gaussian snapshots from real frames, and an .rrd reader.

Windows come from real frames (LLFF fern, reference poses).

The geometry is hand-made: each frame's depth is a slanted plane inside the
scene's near/far bounds, unprojected with the reference camera into a world
point map, so shapes, poses and intrinsics are those the pipeline emits.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from stream4d.contracts import AlignedWindow, GaussianSnapshot, WindowPrediction
from stream4d.geometry import unproject_depth
from stream4d.testdata import SHARED_DATA

FERN = SHARED_DATA / "llff_fern"


def _fern_frames(n: int):
    meta = json.loads((FERN / "cameras_images_8.json").read_text())["frames"][:n]
    bounds = np.load(FERN / "poses_bounds.npy")[:n, 15:17]
    images = [cv2.cvtColor(cv2.imread(str(FERN / f["image"])), cv2.COLOR_BGR2RGB) for f in meta]
    K = np.array([f["K"] for f in meta], dtype=np.float64)
    c2w = np.array([f["c2w"] for f in meta], dtype=np.float64)
    return np.stack(images), K, c2w, bounds


def _plane_depth(H: int, W: int, near: float, far: float) -> np.ndarray:
    v = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None]
    u = np.linspace(0.0, 1.0, W, dtype=np.float32)[None, :]
    return (near * 1.5 + (far - near) * 0.3 * (0.6 * v + 0.4 * u)).astype(np.float32)


def make_windows(n_frames: int = 10, window: int = 5, overlap: int = 2) -> list[AlignedWindow]:
    """Sliding windows over the first ``n_frames`` fern frames; overlap views have is_new False."""
    images, K, c2w, bounds = _fern_frames(n_frames)
    S, H, W = images.shape[:3]
    depth = np.stack([_plane_depth(H, W, *bounds[i]) for i in range(S)])
    points = np.stack([unproject_depth(depth[i], K[i], c2w[i]) for i in range(S)]).astype(np.float32)
    grey = images.mean(axis=3).astype(np.float32) / 255.0
    conf = (1.0 + grey).astype(np.float32)  # varied, positive: exercises the quantile mask
    conf[:, :4] = 0.0  # an invalid border, as backends produce
    out, start, w_idx = [], 0, 0
    emitted = -1
    while start < S:
        views = np.arange(start, min(start + window, S))
        if len(views) < 2 and w_idx > 0:
            break
        pred = WindowPrediction(
            frame_indices=views.astype(np.int64), timestamps=views / 10.0,
            sources=tuple(f"fern#{i}" for i in views), images=images[views], depth=depth[views],
            depth_conf=conf[views], c2w=c2w[views], K=K[views], points=points[views],
            points_conf=conf[views], pixel_maps=np.tile(np.eye(3), (len(views), 1, 1)),
            input_sizes=np.tile([W, H], (len(views), 1)).astype(np.int64), backend="fern-plane",
        )
        out.append(AlignedWindow(prediction=pred, sim3_scale=1.0 + 0.01 * w_idx, sim3_R=np.eye(3),
                                 sim3_t=np.zeros(3), is_new=views > emitted, window_index=w_idx))
        emitted = int(views[-1])
        if views[-1] == S - 1:
            break
        start += window - overlap
        w_idx += 1
    return out


def make_snapshot(windows: list[AlignedWindow], n_static: int, dynamic_per_frame: int = 0,
                  seed: int = 0) -> GaussianSnapshot:
    """Static Gaussians sampled from the windows' point maps, plus dynamic ones per new frame."""
    rng = np.random.default_rng(seed)
    pts = np.concatenate([w.prediction.points[w.is_new].reshape(-1, 3) for w in windows])
    cols = np.concatenate([w.prediction.images[w.is_new].reshape(-1, 3) for w in windows])
    pick = rng.choice(len(pts), size=n_static, replace=False)
    means, colors, times = [pts[pick]], [cols[pick] / 255.0], [np.full(n_static, np.nan)]
    for w in windows:
        for v in np.flatnonzero(w.is_new):
            if dynamic_per_frame:
                p = w.prediction.points[v].reshape(-1, 3)
                k = rng.choice(len(p), size=dynamic_per_frame, replace=False)
                means.append(p[k])
                colors.append(np.tile([1.0, 0.0, 0.0], (dynamic_per_frame, 1)))
                times.append(np.full(dynamic_per_frame, w.prediction.timestamps[v]))
    m = np.concatenate(means).astype(np.float32)
    n = len(m)
    return GaussianSnapshot(
        means=m, colors=np.concatenate(colors).astype(np.float32),
        opacities=np.full(n, 0.8, np.float32), scales=np.full((n, 3), 0.05, np.float32),
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)), timestamps=np.concatenate(times),
    )


class Recording:
    """An ``.rrd`` read back with rerun's own reader: rows per entity, ordered by frame."""

    def __init__(self, path: Path) -> None:
        import rerun as rr

        reader = rr.chunk.RrdReader(path)
        self.recordings = reader.recordings()
        self.blueprints = reader.blueprints()
        self.rows: dict[str, list[dict]] = {}
        self.static: dict[str, dict] = {}
        for chunk in reader.stream():
            batch = chunk.to_record_batch()
            names = [n for n in batch.schema.names if n not in ("rerun.controls.RowId", "log_time")]
            cols = {n: batch.column(n) for n in names}
            for i in range(batch.num_rows):
                row = {}
                for n, col in cols.items():
                    value = col[i]
                    row[n] = value.value / 1e9 if n == "time" else value.as_py()
                if chunk.is_static:
                    self.static.setdefault(chunk.entity_path, {}).update(row)
                else:
                    self.rows.setdefault(chunk.entity_path, []).append(row)
        for rows in self.rows.values():
            rows.sort(key=lambda r: r.get("frame", 0))

    def entities(self) -> set[str]:
        return set(self.rows) | set(self.static)

    def frames(self, entity: str) -> list[int]:
        return [r["frame"] for r in self.rows.get(entity, [])]

    def values(self, entity: str, component: str) -> list:
        return [r[component] for r in self.rows.get(entity, []) if r.get(component) is not None]


def rrd(path: Path) -> Recording:
    return Recording(path)
