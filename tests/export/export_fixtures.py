"""A hand-made output folder with exact geometry: known points seen exactly by known cameras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream4d.contracts import SparseTracks
from stream4d.geometry import Sim3
from stream4d.outputs import OutputWriter, PosedFrame

WIDTH, HEIGHT = 160, 120


def exact_run(out: Path, with_sparse: bool = True, pixel_scale: float = 0.5) -> dict:
    """Four cameras on an arc looking at a cloud of 200 points, projected exactly (no noise).

    Frames are 'input' images of 2x the written size (pixel_map halves them, so K in
    trajectory.json is in input pixels and the export must map it); K has fx != fy.
    Returns the ground truth: c2w [4, 4, 4], K_model [3, 3], points [P, 3].
    """
    rng = np.random.default_rng(3)
    points = rng.uniform([-1, -1, 4], [1, 1, 6], (200, 3))
    K_model = np.array([[150.0, 0, 79.25], [0, 140.0, 59.5], [0, 0, 1]])
    pixel_map = np.diag([pixel_scale, pixel_scale, 1.0])
    c2w = []
    for k in range(4):
        a = np.radians(-6 + 4 * k)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = [0.3 * k, 0.05 * k, 0.1 * k]
        c2w.append(T)
    c2w = np.stack(c2w)
    obs_point, obs_view, obs_xy = [], [], []
    for v in range(4):
        w2c = np.linalg.inv(c2w[v])
        pc = points @ w2c[:3, :3].T + w2c[:3, 3]
        uv = pc @ K_model.T
        uv = uv[:, :2] / uv[:, 2:]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < WIDTH - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT - 1)
        idx = np.nonzero(inside)[0]
        obs_point.append(idx)
        obs_view.append(np.full(len(idx), v))
        obs_xy.append(uv[idx])
    sparse = SparseTracks(points, rng.integers(0, 255, (len(points), 3), dtype=np.uint8),
                          np.concatenate(obs_point), np.concatenate(obs_view), np.concatenate(obs_xy),
                          np.repeat(K_model[None], 4, axis=0))
    with OutputWriter(out) as w:
        for v in range(4):
            K_input = np.linalg.inv(pixel_map) @ K_model
            w.add_frame(PosedFrame(v, 0.1 * v, f"input_{v}.png", c2w[v], K_input, int(WIDTH / pixel_scale),
                                   int(HEIGHT / pixel_scale)))
            image = np.full((HEIGHT, WIDTH, 3), 40 * v, np.uint8)
            w.write_frame_image(v, image, pixel_map)
        if with_sparse:
            w.write_sparse(0, 0, np.arange(4), sparse.transformed(Sim3.identity()))
        w.write_run({"stats": {"segment": 0}})
    return {"c2w": c2w, "K": K_model, "points": points, "sparse": sparse}
