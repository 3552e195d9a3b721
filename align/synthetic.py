"""Window predictions made from exact geometry, for tests and benchmarks of alignment.

A window model reports each window in its own frame and scale, and its depth
layers can be off by different factors. These helpers reproduce exactly that
from ground truth (rendered depth, poses, intrinsics) so the aligner's output
can be scored against the truth. Rendering uses ``stream4d.synthetic``,
imported only when a scene is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from align.windows import sliding_windows
from stream4d.contracts import WindowPrediction
from stream4d.geometry import Sim3, pixel_grid


def window_spans(num_frames: int, window: int, overlap: int, tail_merge: int = 0) -> list[np.ndarray]:
    """Frame positions of the windows the pipeline cuts from ``num_frames`` frames
    (``align.windows.sliding_windows``): by default as from a live input; a file's last frames
    join its last full window with ``tail_merge=align.windows.default_tail_merge(window, overlap)``."""
    return [np.array(w, np.int64) for w in sliding_windows(range(num_frames), window, overlap, tail_merge)]


def random_sim3(rng: np.random.Generator, scale_range: tuple[float, float] = (0.3, 3.0),
                max_translation: float = 5.0) -> Sim3:
    """A random similarity: log-uniform scale, uniform rotation, uniform translation in a cube."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    return Sim3(s, R, rng.uniform(-max_translation, max_translation, 3))


def distort_layers(
    depth: np.ndarray,  # [S, H, W]
    layer_ids: np.ndarray,  # int [S, H, W], 0..L-1
    factors: np.ndarray,  # [L], depth multiplier of each layer
) -> np.ndarray:  # float32 [S, H, W]
    """Depth with every layer scaled by its own factor (what a feed-forward model gets wrong)."""
    factors = np.asarray(factors, np.float64)
    if layer_ids.shape != depth.shape:
        raise ValueError(f"layer_ids {layer_ids.shape} must match depth {depth.shape}")
    if layer_ids.min() < 0 or layer_ids.max() >= len(factors):
        raise ValueError(f"layer_ids span {layer_ids.min()}..{layer_ids.max()} but {len(factors)} factors were given")
    return (depth * factors[layer_ids]).astype(np.float32)


def window_from_geometry(
    frame_indices: np.ndarray,  # int [S]
    images: np.ndarray,  # uint8 [S, H, W, 3]
    depth: np.ndarray,  # [S, H, W], z-depth in world units, 0 = no surface
    c2w: np.ndarray,  # [S, 4, 4], world
    K: np.ndarray,  # [S, 3, 3] or [3, 3]
    to_window: Sim3,  # world -> the window's own frame and scale
    conf: np.ndarray | None = None,  # [S, H, W], 1 on every surface pixel when None
    backend: str = "synthetic",
) -> WindowPrediction:
    """The prediction an ideal model would make for these views in the frame ``to_window``.

    Poses and points go through ``to_window``; depth is multiplied by its scale.
    """
    S, H, W = depth.shape
    K = np.broadcast_to(np.asarray(K, np.float64), (S, 3, 3)).copy()
    win_c2w = to_window.apply_c2w(np.asarray(c2w, np.float64))
    win_depth = (np.asarray(depth, np.float64) * to_window.s)
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # [H, W, 3]
    rays = pix[None] @ np.swapaxes(np.linalg.inv(K), 1, 2)[:, None]  # [S, H, W, 3], camera frame, z = 1
    cam = rays * win_depth[..., None]
    points = cam @ np.swapaxes(win_c2w[:, :3, :3], 1, 2)[:, None] + win_c2w[:, None, None, :3, 3]
    valid = depth > 0
    points[~valid] = 0.0
    conf = valid.astype(np.float32) if conf is None else np.asarray(conf, np.float32) * valid
    idx = np.asarray(frame_indices, np.int64)
    return WindowPrediction(
        frame_indices=idx,
        timestamps=idx.astype(np.float64),
        sources=tuple(f"synthetic#{i}" for i in idx),
        images=np.asarray(images, np.uint8),
        depth=win_depth.astype(np.float32),
        depth_conf=conf,
        c2w=win_c2w,
        K=K,
        points=points.astype(np.float32),
        points_conf=conf.copy(),
        pixel_maps=np.repeat(np.eye(3)[None], S, axis=0),
        input_sizes=np.repeat(np.array([[W, H]], np.int64), S, axis=0),
        backend=backend,
    )


@dataclass
class RenderedSequence:
    """Views with exact geometry and which layer each pixel belongs to."""

    depth: np.ndarray  # float32 [N, H, W]
    layers: np.ndarray  # int64 [N, H, W], 0 = room, 1 = floating objects
    c2w: np.ndarray  # [N, 4, 4]
    K: np.ndarray  # [3, 3]
    images: np.ndarray  # uint8 [N, H, W, 3]


def layered_room(seed: int):  # -> (stream4d.synthetic.Scene, number of background surfaces)
    """The built-in room's shell (floor, ceiling, walls) with boxes and balls floating around its centre.

    Floating objects are separated in depth from everything behind them, the
    situation layer-wise alignment is for; objects standing on the floor would
    meet it without a depth step and a per-object distortion would invent one.
    """
    from stream4d.synthetic import STAGES, Box, Material, Scene, Sphere, make_scene

    rng = np.random.default_rng(seed)
    shell = make_scene("room", seed=seed).rects[:6]  # layouts.py lists floor, ceiling and the 4 walls first

    def material() -> Material:
        return Material(tuple(rng.uniform(0.3, 1.0, 3)), float(rng.uniform(0.7, 1.0)), 128.0, 0.5)

    boxes, balls = [], []
    for k in range(8):  # within 1.4 m of the centre: the camera ring (radius 2.4) stays free
        angle, radius = 2 * np.pi * (k + rng.uniform(0, 0.6)) / 8, rng.uniform(0.3, 1.3)
        centre = (radius * np.cos(angle), rng.uniform(-2.0, -0.6), radius * np.sin(angle))
        if k % 2:
            balls.append(Sphere(centre, float(rng.uniform(0.15, 0.3)), material()))
        else:
            boxes.append(Box(centre, rng.uniform(0.25, 0.6, 3), float(rng.uniform(0, 90)), material()))
    return Scene(shell, balls, boxes=boxes, kind="layered-room", seed=seed, stage=STAGES["room"]), len(shell)


def render_layered_room(trajectory: str, frames: int, width: int, height: int, seed: int) -> RenderedSequence:
    """Render ``frames`` views of :func:`layered_room` along a ``stream4d.synthetic`` trajectory kind."""
    from stream4d.synthetic import intrinsics_for, make_trajectory, render_view

    scene, background_surfaces = layered_room(seed)
    c2w = make_trajectory(trajectory, frames, seed=seed, scene=scene)
    K = intrinsics_for(width, height, fov_deg=60)
    rays_cam = pixel_grid(width, height).reshape(-1, 3) @ np.linalg.inv(K).T  # camera z = 1, as the renderer
    views, layers = [], []
    for i in tqdm(range(frames), desc=f"render layered room/{trajectory}", leave=False):
        views.append(render_view(scene, c2w[i], K, width, height, index=i))
        surface = scene.intersect(c2w[i, :3, 3], rays_cam @ c2w[i, :3, :3].T).surface.reshape(height, width)
        layers.append((surface >= background_surfaces).astype(np.int64))
    return RenderedSequence(depth=np.stack([v.depth for v in views]), layers=np.stack(layers), c2w=c2w, K=K,
                            images=np.stack([v.rgb for v in views]))
