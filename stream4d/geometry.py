"""Small geometry helpers shared by every stage (numpy, float64 unless noted)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sim3:
    """x_world = s * R @ x + t."""

    s: float
    R: np.ndarray  # [3, 3]
    t: np.ndarray  # [3]

    @staticmethod
    def identity() -> "Sim3":
        return Sim3(1.0, np.eye(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points ``[..., 3]``."""
        return self.s * points @ self.R.T + self.t

    def apply_c2w(self, c2w: np.ndarray) -> np.ndarray:
        """Transform camera-to-world poses ``[..., 4, 4]``; rotation stays orthonormal."""
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.R @ c2w[..., :3, :3]
        out[..., :3, 3] = self.s * c2w[..., :3, 3] @ self.R.T + self.t
        return out

    def compose(self, other: "Sim3") -> "Sim3":
        """self ∘ other."""
        return Sim3(self.s * other.s, self.R @ other.R, self.s * self.R @ other.t + self.t)

    def inverse(self) -> "Sim3":
        Rt = self.R.T
        return Sim3(1.0 / self.s, Rt, -(Rt @ self.t) / self.s)

    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.s * self.R
        m[:3, 3] = self.t
        return m


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True,
            weights: np.ndarray | None = None) -> Sim3:
    """Least-squares similarity taking ``src [N, 3]`` onto ``dst [N, 3]`` (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama needs two [N, 3] arrays, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    if n < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = float(w @ (xs ** 2).sum(axis=1))
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return Sim3(s, R, t)


def similarity_from_poses(src: np.ndarray, dst: np.ndarray) -> Sim3 | None:
    """The similarity taking cameras ``src`` (c2w [N, 4, 4]) onto the same cameras ``dst`` in another
    world: rotation the chordal mean of ``R_dst R_src^T``, then scale and shift by least squares on
    the centres with that rotation. None with fewer than two cameras, source centres that do not
    spread, or a scale that is not positive."""
    A, B = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if len(A) < 2 or len(A) != len(B):
        return None
    U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", B[:, :3, :3], A[:, :3, :3]))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    a, b = A[:, :3, 3] @ R.T, B[:, :3, 3]
    ac, bc = a - a.mean(0), b - b.mean(0)
    if not (ac ** 2).sum() > 1e-24:
        return None
    s = float((ac * bc).sum() / (ac ** 2).sum())
    if not np.isfinite(s) or s <= 0:
        return None
    return Sim3(s, R, b.mean(0) - s * a.mean(0))


def invert_se3(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms ``[..., 4, 4]``."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T, dtype=np.float64)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def rigid_motion(to: np.ndarray, frm: np.ndarray) -> Sim3:
    """The rigid world-frame motion (``Sim3`` with scale 1) taking the pose ``frm`` to ``to`` (c2w [4, 4]),
    its rotation put back on SO(3) (the inverse product's round-off)."""
    T = to @ np.linalg.inv(frm)
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    return Sim3(1.0, R, T[:3, 3].copy())


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle of rotation matrices ``[..., 3, 3]`` in degrees."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` (w, x, y, z; w >= 0, since q and -q are one rotation) of
    rotation matrices ``[..., 3, 3]``: the order COLMAP and 3DGS files use."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, np.float64)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()[:, [3, 0, 1, 2]]  # scipy is scalar-last
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(R.shape[:-2] + (4,))


def rotation_from_quat_wxyz(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``[..., 4]`` (w, x, y, z; normalised here)."""
    from scipy.spatial.transform import Rotation

    q = np.asarray(q, np.float64)
    return Rotation.from_quat(q.reshape(-1, 4)[:, [1, 2, 3, 0]]).as_matrix().reshape(q.shape[:-1] + (3, 3))


def centred_intrinsics(width: int, height: int, focal: float) -> np.ndarray:
    """Pinhole K [3, 3] float64 of a ``width`` x ``height`` image: ``focal`` px, square pixels, the
    principal point at the image centre (pixel centres at integers)."""
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def pixel_grid(width: int, height: int) -> np.ndarray:
    """Homogeneous pixel centres ``[H, W, 3]`` (u, v, 1), float64."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u, v, np.ones_like(u)], axis=-1)


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray | None = None) -> np.ndarray:
    """Points ``[H, W, 3]`` from z-depth ``[H, W]``; camera frame unless ``c2w`` is given."""
    H, W = depth.shape
    rays = pixel_grid(W, H) @ np.linalg.inv(K).T
    pts = rays * depth[..., None]
    if c2w is not None:
        pts = pts @ c2w[:3, :3].T + c2w[:3, 3]
    return pts


def transform_point_maps(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per-frame transforms ``T [S, 4, 4]`` (rigid or similarity) applied to ``points [S, H, W, 3]``,
    in the points' dtype. torch's batched matmul is ~2x numpy's for this shape (millions of
    [3] x [3, 3] products), and these run on every pixel of every window."""
    import torch

    S = points.shape[0]
    dtype = points.dtype
    R_t = torch.from_numpy(np.ascontiguousarray(np.swapaxes(T[:, :3, :3], 1, 2), dtype=dtype))
    t = torch.from_numpy(np.ascontiguousarray(T[:, None, :3, 3], dtype=dtype))
    flat = torch.baddbmm(t, torch.from_numpy(np.ascontiguousarray(points).reshape(S, -1, 3)), R_t)
    return flat.numpy().reshape(points.shape)


def unproject_depth_maps(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points ``float32 [S, H, W, 3]`` of z-depth maps ``[S, H, W]`` seen with one ``K [3, 3]``
    from ``c2w [S, 4, 4]``."""
    S, H, W = depth.shape
    rays = (pixel_grid(W, H) @ np.linalg.inv(K).T).astype(np.float32)  # [H, W, 3], z = 1
    return transform_point_maps(np.asarray(c2w), rays[None] * depth.astype(np.float32)[..., None])


def project_points(points_world: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``[..., 2]`` and z-depth ``[...]`` of world points in a camera."""
    w2c = invert_se3(c2w)
    pc = points_world @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[..., 2]
    uvw = pc @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = uvw[..., :2] / uvw[..., 2:3]
    return uv, z


def _focal_centre(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    K = np.asarray(K, np.float64)
    return np.stack([K[..., 0, 0], K[..., 1, 1]], -1), np.stack([K[..., 0, 2], K[..., 1, 2]], -1)


def radial_distorted(xy: np.ndarray, K: np.ndarray, k1) -> np.ndarray:
    """Pixels ``xy`` [..., 2] of a pinhole camera ``K`` ([3, 3], or [..., 3, 3] one per pixel) as a lens
    with one radial coefficient ``k1`` (a number, or [...]) shows them: normalised coordinates n go to
    n (1 + k1 |n|^2) (COLMAP's SIMPLE_RADIAL, OpenCV's k1). No lens (every k1 0): ``xy`` as given."""
    if _pinhole(k1):
        return xy
    f, c = _focal_centre(K)
    n = (np.asarray(xy, np.float64) - c) / f
    return c + f * n * (1.0 + np.asarray(k1, np.float64)[..., None] * (n * n).sum(axis=-1, keepdims=True))


def _pinhole(k1) -> bool:
    """Whether the radial coefficient(s) ``k1`` describe no lens at all."""
    return not np.any(np.asarray(k1))


def radial_corner_shift_px(k1: float, focal: float, centre) -> float:
    """How far (px) a lens of radial coefficient ``k1`` (``radial_distorted``) moves the image corner of a
    camera of focal length ``focal`` (px) whose image centre is ``centre`` (x, y) px from its corner."""
    corner = float(np.hypot(centre[0], centre[1])) / focal  # normalised radius of the image corner
    return abs(float(k1)) * corner ** 3 * focal


def radial_undistorted(xy: np.ndarray, K: np.ndarray, k1, iterations: int = 20) -> np.ndarray:
    """The inverse of ``radial_distorted``: where the pinhole camera ``K`` would see the pixels ``xy``
    [..., 2] that a lens with radial coefficient ``k1`` showed (fixed-point iteration; a coefficient
    of a few hundredths converges in a few steps). No lens (every k1 0): ``xy`` as given."""
    if _pinhole(k1):
        return xy
    f, c = _focal_centre(K)
    seen = (np.asarray(xy, np.float64) - c) / f
    k1 = np.asarray(k1, np.float64)[..., None]
    n = seen.copy()
    for _ in range(iterations):
        n = seen / (1.0 + k1 * (n * n).sum(axis=-1, keepdims=True))
    return c + f * n


def camera_centres(c2w: np.ndarray) -> np.ndarray:
    return np.asarray(c2w)[..., :3, 3]


def path_length(c2w: np.ndarray) -> float:
    c = camera_centres(c2w)
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum()) if len(c) > 1 else 0.0
