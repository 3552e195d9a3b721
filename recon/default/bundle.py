"""Bundle adjustment of one window with scipy's sparse trust-region least squares.

Poses are world-to-camera (rotation vector, translation). One view is held
fixed to pin the gauge. An optional shared focal-length factor self-calibrates
the intrinsics (principal point stays at the prior).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import csr_matrix
from scipy.spatial.transform import Rotation


@dataclass
class BundleProblem:
    rvecs: np.ndarray  # [V, 3] world-to-camera rotation vectors
    tvecs: np.ndarray  # [V, 3] world-to-camera translations
    points: np.ndarray  # [P, 3]
    obs_view: np.ndarray  # int64 [O]
    obs_point: np.ndarray  # int64 [O]
    obs_uv: np.ndarray  # [O, 2]
    K: np.ndarray  # [3, 3]
    fixed_view: int = 0
    refine_focal: bool = False


@dataclass
class BundleResult:
    rvecs: np.ndarray
    tvecs: np.ndarray
    points: np.ndarray
    K: np.ndarray
    residuals_px: np.ndarray  # [O] reprojection error per observation after adjustment
    cost: float


def project(rvecs, tvecs, points, K, obs_view, obs_point) -> np.ndarray:
    """Pixel projections [O, 2] of each observation's point in its view."""
    R = Rotation.from_rotvec(rvecs).as_matrix()  # [V, 3, 3]
    pc = np.einsum("oij,oj->oi", R[obs_view], points[obs_point]) + tvecs[obs_view]
    z = np.where(np.abs(pc[:, 2]) < 1e-9, 1e-9, pc[:, 2])
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    return np.stack([u, v], axis=1)


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices [..., 3, 3] of vectors [..., 3]."""
    z = np.zeros(v.shape[:-1])
    return np.stack([
        np.stack([z, -v[..., 2], v[..., 1]], -1),
        np.stack([v[..., 2], z, -v[..., 0]], -1),
        np.stack([-v[..., 1], v[..., 0], z], -1),
    ], -2)


def _left_jacobian(rvecs: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobians [V, 3, 3]: d(exp(w) X)/dw = -[exp(w) X]x J_l(w)."""
    theta = np.linalg.norm(rvecs, axis=1)[:, None, None]
    W = _skew(rvecs)
    small = theta < 1e-8
    th = np.where(small, 1.0, theta)
    a = np.where(small, 0.5, (1 - np.cos(th)) / th ** 2)
    b = np.where(small, 1.0 / 6.0, (th - np.sin(th)) / th ** 3)
    return np.eye(3)[None] + a * W + b * (W @ W)


def bundle_adjust(p: BundleProblem, loss_scale_px: float = 1.5, max_nfev: int = 30) -> BundleResult:
    V, P, O = len(p.rvecs), len(p.points), len(p.obs_uv)
    free = np.array([v for v in range(V) if v != p.fixed_view], np.int64)
    slot = np.full(V, -1, np.int64)
    slot[free] = np.arange(len(free))
    n_cam = 6 * len(free)
    n_f = 1 if p.refine_focal else 0
    n_par = n_cam + 3 * P + n_f

    def unpack(x):
        rv = p.rvecs.copy()
        tv = p.tvecs.copy()
        rv[free] = x[:n_cam].reshape(-1, 6)[:, :3]
        tv[free] = x[:n_cam].reshape(-1, 6)[:, 3:]
        pts = x[n_cam:n_cam + 3 * P].reshape(P, 3)
        K = p.K.copy()
        if n_f:
            K[0, 0] *= np.exp(x[-1])
            K[1, 1] *= np.exp(x[-1])
        return rv, tv, pts, K

    def residuals(x):
        rv, tv, pts, K = unpack(x)
        return (project(rv, tv, pts, K, p.obs_view, p.obs_point) - p.obs_uv).ravel()

    rows2 = np.arange(2 * O)
    cam_slot = slot[p.obs_view]
    has_cam = cam_slot >= 0

    def jacobian(x):
        rv, tv, pts, K = unpack(x)
        R = Rotation.from_rotvec(rv).as_matrix()
        RX = np.einsum("oij,oj->oi", R[p.obs_view], pts[p.obs_point])
        pc = RX + tv[p.obs_view]
        z = np.where(np.abs(pc[:, 2]) < 1e-9, 1e-9, pc[:, 2])
        fx, fy = K[0, 0], K[1, 1]
        # d(u, v)/d(camera point) [O, 2, 3]
        dproj = np.zeros((O, 2, 3))
        dproj[:, 0, 0] = fx / z
        dproj[:, 0, 2] = -fx * pc[:, 0] / z ** 2
        dproj[:, 1, 1] = fy / z
        dproj[:, 1, 2] = -fy * pc[:, 1] / z ** 2
        d_rot = -_skew(RX) @ _left_jacobian(rv)[p.obs_view]  # [O, 3, 3]
        blocks_r = dproj @ d_rot  # [O, 2, 3]
        blocks_X = dproj @ R[p.obs_view]  # [O, 2, 3]
        r_idx, c_idx, vals = [], [], []
        # camera blocks: rotation then translation
        cam_cols = n_cam and (6 * cam_slot[has_cam])[:, None] + np.arange(6)[None]
        for comp in (0, 1):
            rr = 2 * np.nonzero(has_cam)[0] + comp
            if len(rr):
                cam_vals = np.concatenate([blocks_r[has_cam, comp], dproj[has_cam, comp]], axis=1)
                r_idx.append(np.repeat(rr, 6)); c_idx.append(cam_cols.ravel()); vals.append(cam_vals.ravel())
            rr_all = 2 * np.arange(O) + comp
            pt_cols = (n_cam + 3 * p.obs_point)[:, None] + np.arange(3)[None]
            r_idx.append(np.repeat(rr_all, 3)); c_idx.append(pt_cols.ravel()); vals.append(blocks_X[:, comp].ravel())
        if n_f:
            r_idx.append(rows2); c_idx.append(np.full(2 * O, n_par - 1))
            vals.append(np.stack([fx * pc[:, 0] / z, fy * pc[:, 1] / z], 1).ravel())
        return csr_matrix((np.concatenate(vals), (np.concatenate(r_idx), np.concatenate(c_idx))), shape=(2 * O, n_par))

    x0 = np.concatenate([
        np.concatenate([p.rvecs[free], p.tvecs[free]], axis=1).ravel(),
        p.points.ravel(),
        np.zeros(n_f),
    ])
    sol = least_squares(residuals, x0, jac=jacobian, loss="huber", f_scale=loss_scale_px,
                        x_scale="jac", method="trf", tr_solver="lsmr", max_nfev=max_nfev,
                        xtol=1e-10, ftol=1e-6)
    rv, tv, pts, K = unpack(sol.x)
    err = np.linalg.norm(sol.fun.reshape(-1, 2), axis=1)
    return BundleResult(rv, tv, pts, K, err, float(sol.cost))
