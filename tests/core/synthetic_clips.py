"""Rendered clips for degeneracy tests: a camera walking along a room, and one turning on the spot."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

W, H = 256, 192


def write_images(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return folder


def sideways_room(n: int) -> list[np.ndarray]:
    scene = make_scene("room", seed=0)
    K = intrinsics_for(W, H)
    return [render_view(scene, c, K, W, H).rgb for c in make_trajectory("sideways", n, seed=0, scene=scene)]


def panning_room(n: int, step_deg: float = 0.6) -> list[np.ndarray]:
    """A camera turning on the spot (pure rotation about its centre): no parallax at all."""
    scene = make_scene("room", seed=0)
    start = make_trajectory("sideways", 1, seed=0, scene=scene)[0]
    K = intrinsics_for(W, H)
    views = []
    for i in range(n):
        c2w = start.copy()
        c2w[:3, :3] = start[:3, :3] @ Rotation.from_euler("y", step_deg * i, degrees=True).as_matrix()
        views.append(render_view(scene, c2w, K, W, H).rgb)
    return views
