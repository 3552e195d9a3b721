"""CPU renderer: RGB, exact z-depth and a moving-object mask of a Scene from a pinhole camera.

One ray per pixel centre gives depth, mask and colour; pixels on a silhouette
(a neighbour sees another surface) are re-shaded from a 2x2 grid of sub-pixel
rays and averaged, and textures are mip-mapped by each sample's footprint, so
images are anti-aliased at a fraction of full supersampling's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from stream4d.contracts import Frame
from stream4d.geometry import centred_intrinsics, pixel_grid, radial_undistorted
from stream4d.synthetic.scene import Scene

_SUBPIXEL = np.array([[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]])  # 2x2 grid offsets


@dataclass
class SyntheticView:
    """One rendered frame with exact geometry."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W], z-depth in metres, 0 where the ray hit nothing
    c2w: np.ndarray  # float64 [4, 4], OpenCV axes
    K: np.ndarray  # float64 [3, 3], pixels of rgb
    timestamp: float  # seconds (scene time the view was rendered at)
    dynamic_mask: np.ndarray  # bool [H, W], pixels that see the moving object
    index: int = 0  # position in its sequence
    radial_k1: float = 0.0  # the lens: K's pixels as ``geometry.radial_distorted`` bends them; 0: a pinhole

    @property
    def valid(self) -> np.ndarray:
        """bool [H, W]: pixels whose ray hit geometry."""
        return self.depth > 0

    @property
    def size(self) -> tuple[int, int]:
        """(W, H)."""
        return self.rgb.shape[1], self.rgb.shape[0]

    def to_frame(self, source: str | None = None, with_K: bool = True) -> Frame:
        """The view as a pipeline ``Frame`` (index, timestamp, image and, unless ``with_K=False``, K)."""
        return Frame(index=self.index, timestamp=self.timestamp, image=self.rgb,
                     source=source or f"synthetic#{self.index}", K=self.K.copy() if with_K else None)


def intrinsics_for(width: int, height: int, fov_deg: float = 60.0) -> np.ndarray:
    """Pinhole K [3, 3] with horizontal field of view ``fov_deg``, square pixels, centred principal point."""
    _check_size(width, height)
    if not 1.0 <= fov_deg <= 170.0:
        raise ValueError(f"fov_deg must be in [1, 170] degrees, got {fov_deg}")
    return centred_intrinsics(width, height, (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0))


def _check_size(width: int, height: int) -> None:
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"image size must be positive integers, got {width} x {height}")


def _check_camera(c2w, K) -> tuple[np.ndarray, np.ndarray]:
    c2w = np.asarray(c2w, np.float64)
    K = np.asarray(K, np.float64)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise ValueError(f"c2w must be a finite [4, 4] matrix, got shape {c2w.shape}")
    R = c2w[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-6 or np.linalg.det(R) < 0:
        raise ValueError("c2w rotation must be orthonormal with det +1")
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must be [3, 3] with positive focal lengths, got {K.tolist()}")
    return c2w, K


def _world_rays(K: np.ndarray, c2w: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """World directions [M, 3] through pixel coordinates ``uv [M, 2]``, scaled so camera z = 1."""
    A = c2w[:3, :3] @ np.linalg.inv(K)  # [3, 3]; d = A @ (u, v, 1)
    # Broadcasting, not a tall [M, 3] @ [3, 3] matmul: BLAS threads only slow that shape down.
    return uv[:, :1] * A[:, 0] + uv[:, 1:] * A[:, 1] + A[:, 2]


def _silhouette_pixels(surface: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels with a 4-neighbour that sees a different surface (or nothing)."""
    edge = np.zeros(surface.shape, bool)
    dx = surface[:, 1:] != surface[:, :-1]
    dy = surface[1:, :] != surface[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def render_view(scene: Scene, c2w, K, width: int, height: int, time: float = 0.0, noise_std: float = 0.0,
                seed: int | Sequence[int] = 0, index: int = 0, radial_k1: float = 0.0) -> SyntheticView:
    """Render one view: RGB, exact z-depth, moving-object mask at scene time ``time``.

    ``noise_std`` adds gaussian pixel noise (in 0..255 units), drawn from ``seed``. ``radial_k1``: the
    lens bends the pinhole ``K``'s image as ``geometry.radial_distorted`` does (negative: barrel, as
    wide-angle lenses; positive: pincushion); each pixel's ray goes through its undistorted position.
    """
    _check_size(width, height)
    c2w, K = _check_camera(c2w, K)
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    _check_lens(K, width, height, radial_k1)
    origin = c2w[:3, 3]
    uv = pixel_grid(width, height)[..., :2].reshape(-1, 2)  # [H*W, 2]

    def rays(pixels: np.ndarray) -> np.ndarray:
        return _world_rays(K, c2w, radial_undistorted(pixels, K, radial_k1))

    dirs = rays(uv)
    hits = scene.intersect(origin, dirs, time)
    focal = float(np.sqrt(K[0, 0] * K[1, 1]))
    rgb = scene.shade(hits, dirs, focal)  # [H*W, 3]
    surface = hits.surface.reshape(height, width)
    edge = np.nonzero(_silhouette_pixels(surface).reshape(-1))[0]
    if edge.size:
        sub_uv = (uv[edge, None, :] + _SUBPIXEL[None]).reshape(-1, 2)  # [E*4, 2]
        sub_dirs = rays(sub_uv)
        sub_rgb = scene.shade(scene.intersect(origin, sub_dirs, time), sub_dirs, 2.0 * focal)
        rgb[edge] = sub_rgb.reshape(-1, 4, 3).mean(axis=1)
    image = rgb.reshape(height, width, 3) * 255.0
    if noise_std > 0:
        image = image + np.random.default_rng(seed).normal(0.0, noise_std, image.shape)
    depth = np.where(hits.hit, hits.t, 0.0).reshape(height, width).astype(np.float32)
    dynamic = np.isin(surface, scene.moving_surface_ids)
    return SyntheticView(
        rgb=np.clip(np.round(image), 0, 255).astype(np.uint8), depth=depth, c2w=c2w.copy(), K=K.copy(),
        timestamp=float(time), dynamic_mask=dynamic, index=int(index), radial_k1=float(radial_k1),
    )


def _check_lens(K: np.ndarray, width: int, height: int, radial_k1: float) -> None:
    """A lens whose image folds back on itself before the corners (1 + 3 k1 r^2 <= 0) is refused."""
    corner = np.hypot(max(K[0, 2], width - 1 - K[0, 2]) / K[0, 0], max(K[1, 2], height - 1 - K[1, 2]) / K[1, 1])
    if not np.isfinite(radial_k1) or 1.0 + 3.0 * radial_k1 * corner ** 2 <= 0.1:
        raise ValueError(f"radial_k1 {radial_k1} folds the image before its corners (at most "
                         f"{-0.3 / corner ** 2:.3f} for this field of view)")


def render_sequence(scene: Scene, c2w: np.ndarray, K: np.ndarray, width: int, height: int, fps: float = 10.0,
                    noise_std: float = 0.0, seed: int = 0, start_time: float = 0.0,
                    progress: bool = False, radial_k1: float = 0.0) -> Iterator[SyntheticView]:
    """Lazily render views along ``c2w [N, 4, 4]``; frame i is at time ``start_time + i / fps``.

    ``K`` is [3, 3] (all frames) or [N, 3, 3]; ``radial_k1`` the lens (``render_view``). One view is in
    memory at a time.
    """
    c2w = np.asarray(c2w, np.float64)
    K = np.asarray(K, np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"c2w must be [N, 4, 4], got {c2w.shape}")
    if K.shape != (3, 3) and K.shape != (len(c2w), 3, 3):
        raise ValueError(f"K must be [3, 3] or [{len(c2w)}, 3, 3], got {K.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    _check_size(width, height)
    for Ki in K.reshape(-1, 3, 3):
        _check_lens(Ki, width, height, radial_k1)
    return _views(scene, c2w, K, width, height, fps, noise_std, seed, start_time, progress, radial_k1)


def _views(scene, c2w, K, width, height, fps, noise_std, seed, start_time, progress,
           radial_k1) -> Iterator[SyntheticView]:
    # A separate generator so that render_sequence validates its arguments when called, not when iterated.
    for i in tqdm(range(len(c2w)), desc="render", unit="frame", disable=not progress):
        Ki = K if K.ndim == 2 else K[i]
        yield render_view(scene, c2w[i], Ki, width, height, time=start_time + i / fps, noise_std=noise_std,
                          seed=(int(seed), i), index=i, radial_k1=radial_k1)


__all__ = ["SyntheticView", "intrinsics_for", "render_view", "render_sequence"]
