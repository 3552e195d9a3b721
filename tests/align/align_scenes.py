"""Exact geometry for alignment tests: a camera sliding past a box face in front of a wall.

Analytic ray casting keeps these tests independent of the full synthetic
renderer: two planar layers (a tilted wall 8 m away, a 1.8 x 1.6 m panel 4 m
away) are the smallest scene with the foreground/background structure that
layer-wise alignment is about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT, FOCAL = 96, 72, 80.0


@dataclass
class PlaneScene:
    depth: np.ndarray  # float64 [N, H, W], world units
    layers: np.ndarray  # int64 [N, H, W], 0 = wall, 1 = panel
    c2w: np.ndarray  # [N, 4, 4]
    K: np.ndarray  # [3, 3]
    images: np.ndarray  # uint8 [N, H, W, 3]


def yaw(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def ray_cast_planes(c2w: np.ndarray, K: np.ndarray, planes: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """z-depth [H, W] and index of the nearest plane hit; plane = (origin, axis1, axis2, half extents or None)."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=float), np.arange(HEIGHT, dtype=float))
    rays_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # z = 1: ray parameter is z-depth
    rays = rays_cam @ c2w[:3, :3].T
    centre = c2w[:3, 3]
    depth = np.full((HEIGHT, WIDTH), np.inf)
    layer = np.zeros((HEIGHT, WIDTH), np.int64)
    for k, (origin, e1, e2, half) in enumerate(planes):
        e1, e2 = np.asarray(e1, float) / np.linalg.norm(e1), np.asarray(e2, float) / np.linalg.norm(e2)
        normal = np.cross(e1, e2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.asarray(origin) - centre) @ normal / (rays @ normal)
        hit = centre + rays * t[..., None] - origin
        inside = (t > 0) & np.isfinite(t)
        if half is not None:
            inside &= (np.abs(hit @ e1) <= half[0]) & (np.abs(hit @ e2) <= half[1])
        nearer = inside & (t < depth)
        depth[nearer] = t[nearer]
        layer[nearer] = k
    depth[~np.isfinite(depth)] = 0.0
    return depth, layer


def make_plane_scene(num_frames: int) -> PlaneScene:
    K = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]])
    planes = [
        (np.array([0.0, 0.0, 8.0]), [1.0, 0.0, 0.15], [0.0, 1.0, 0.0], None),  # wall, tilted
        (np.array([0.0, 0.2, 4.0]), [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], (0.9, 0.8)),  # panel
    ]
    c2w = np.repeat(np.eye(4)[None], num_frames, axis=0)
    depth = np.zeros((num_frames, HEIGHT, WIDTH))
    layers = np.zeros((num_frames, HEIGHT, WIDTH), np.int64)
    for i, a in enumerate(np.linspace(0.0, 1.0, num_frames)):
        c2w[i, :3, :3] = yaw(-3.0 + 6.0 * a)
        c2w[i, :3, 3] = [-0.6 + 1.2 * a, 0.05 * np.sin(3 * a), 0.4 * a]
        depth[i], layers[i] = ray_cast_planes(c2w[i], K, planes)
    shade = (60 + 120 * layers + 40 * (depth / depth.max())).astype(np.uint8)
    return PlaneScene(depth, layers, c2w, K, np.repeat(shade[..., None], 3, axis=-1))


def plane_windows(scene: PlaneScene, window: int, overlap: int, seed: int) -> list:
    """``WindowPrediction``s of ``scene`` cut as the pipeline cuts a live stream, each in its own
    random frame and scale (``seed``)."""
    from align.synthetic import random_sim3, window_from_geometry, window_spans

    rng = np.random.default_rng(seed)
    return [window_from_geometry(span, scene.images[span], scene.depth[span], scene.c2w[span], scene.K,
                                 random_sim3(rng))
            for span in window_spans(len(scene.depth), window, overlap)]


def room_window(room, span, to_window):
    """The ideal prediction for the room's views ``span`` in the frame ``to_window`` (geometry.Sim3)."""
    from align.synthetic import window_from_geometry

    span = np.asarray(span)
    return window_from_geometry(span, room.images[span], room.depth[span], room.c2w[span], room.K, to_window)
