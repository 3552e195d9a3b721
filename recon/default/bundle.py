"""Bundle adjustment of one window: Levenberg-Marquardt on the Schur complement.

A window has few cameras (tens) and many points (thousands), so the normal
equations are reduced to the camera block (points eliminated through their
3x3 blocks) and solved exactly each iteration. Exact steps matter: orbiting
and forward-moving cameras leave a flat rotation/translation valley where
inexact (iterative) solvers crawl. A Huber loss (by reweighting) tames
mismatches. Poses are world-to-camera; rotations are updated on the left,
R <- exp(d) R. One view is held fixed for the gauge; LM damping absorbs the
free scale. An optional shared focal factor self-calibrates the intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
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
    iterations: int = 0


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices [..., 3, 3] of vectors [..., 3]."""
    z = np.zeros(v.shape[:-1])
    return np.stack([
        np.stack([z, -v[..., 2], v[..., 1]], -1),
        np.stack([v[..., 2], z, -v[..., 0]], -1),
        np.stack([-v[..., 1], v[..., 0], z], -1),
    ], -2)


def project(rvecs, tvecs, points, K, obs_view, obs_point) -> np.ndarray:
    """Pixel projections [O, 2] of each observation's point in its view."""
    R = Rotation.from_rotvec(rvecs).as_matrix()
    return _project(R, tvecs, points, K, obs_view, obs_point)[0]


def _project(R, tvecs, points, K, obs_view, obs_point):
    RX = np.einsum("oij,oj->oi", R[obs_view], points[obs_point])
    pc = RX + tvecs[obs_view]
    z = np.where(np.abs(pc[:, 2]) < 1e-9, 1e-9, pc[:, 2])
    uv = np.stack([K[0, 0] * pc[:, 0] / z + K[0, 2], K[1, 1] * pc[:, 1] / z + K[1, 2]], axis=1)
    return uv, RX, pc, z


def _scatter(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Sum ``values`` into a flat array of ``size`` at ``index`` (same shapes); bincount is fast."""
    return np.bincount(index.ravel(), weights=values.ravel(), minlength=size)


def _huber_weights(err: np.ndarray, delta: float) -> np.ndarray:
    return np.where(err <= delta, 1.0, delta / np.maximum(err, 1e-12))


def _huber_cost(err: np.ndarray, delta: float) -> float:
    return float(np.where(err <= delta, 0.5 * err ** 2, delta * (err - 0.5 * delta)).sum())


def bundle_adjust(p: BundleProblem, loss_scale_px: float = 1.5, max_iterations: int = 40,
                  rel_tol: float = 1e-7) -> BundleResult:
    V, P, O = len(p.rvecs), len(p.points), len(p.obs_uv)
    free = np.array([v for v in range(V) if v != p.fixed_view], np.int64)
    slot = np.full(V, -1, np.int64)
    slot[free] = np.arange(len(free))
    n_f = 1 if p.refine_focal else 0
    nC = 6 * len(free) + n_f  # camera-side unknowns (+ focal), the reduced system's size
    dummy = nC  # column index for "no camera-side unknown" (the fixed view)

    R = Rotation.from_rotvec(p.rvecs).as_matrix()
    t = p.tvecs.astype(np.float64).copy()
    X = p.points.astype(np.float64).copy()
    log_f = 0.0

    cam_cols = np.full((O, 7), dummy, np.int64)
    s = slot[p.obs_view]
    has = s >= 0
    cam_cols[has, :6] = 6 * s[has, None] + np.arange(6)[None]
    if n_f:
        cam_cols[:, 6] = nC - 1

    def K_of(lf):
        K = p.K.astype(np.float64).copy()
        K[0, 0] *= np.exp(lf)
        K[1, 1] *= np.exp(lf)
        return K

    def evaluate(R, t, X, lf):
        uv, RX, pc, z = _project(R, t, X, K_of(lf), p.obs_view, p.obs_point)
        r = uv - p.obs_uv
        return r, RX, pc, z

    r, RX, pc, z = evaluate(R, t, X, log_f)
    err = np.linalg.norm(r, axis=1)
    cost = _huber_cost(err, loss_scale_px)
    lam = 1e-3
    it = 0
    for it in range(1, max_iterations + 1):
        K = K_of(log_f)
        fx, fy = K[0, 0], K[1, 1]
        w = _huber_weights(err, loss_scale_px)  # [O]
        dproj = np.zeros((O, 2, 3))
        dproj[:, 0, 0] = fx / z
        dproj[:, 0, 2] = -fx * pc[:, 0] / z ** 2
        dproj[:, 1, 1] = fy / z
        dproj[:, 1, 2] = -fy * pc[:, 1] / z ** 2
        Jc = np.zeros((O, 2, 7))
        Jc[:, :, :3] = dproj @ -_skew(RX)  # left rotation perturbation
        Jc[:, :, 3:6] = dproj  # translation
        if n_f:
            Jc[:, 0, 6] = fx * pc[:, 0] / z
            Jc[:, 1, 6] = fy * pc[:, 1] / z
        Jp = dproj @ R[p.obs_view]  # [O, 2, 3]
        wJc = Jc * w[:, None, None]
        wJp = Jp * w[:, None, None]

        # Camera block U [nC+1, nC+1] (last row/col is the dummy sink), point blocks V [P, 3, 3].
        n1 = nC + 1
        U = _scatter(cam_cols[:, :, None] * n1 + cam_cols[:, None, :], wJc.transpose(0, 2, 1) @ Jc, n1 * n1)
        U = U.reshape(n1, n1)
        Vb = _scatter(p.obs_point[:, None] * 9 + np.arange(9)[None], wJp.transpose(0, 2, 1) @ Jp, P * 9)
        Vb = Vb.reshape(P, 3, 3)
        # Camera-point blocks, camera-major [n1, P, 3] so the Schur product needs no transposes.
        Wb = _scatter((cam_cols[:, :, None] * P + p.obs_point[:, None, None]) * 3 + np.arange(3)[None, None],
                      wJc.transpose(0, 2, 1) @ Jp, n1 * P * 3).reshape(n1, P, 3)
        gc = _scatter(cam_cols, (wJc.transpose(0, 2, 1) @ r[:, :, None])[:, :, 0], n1)
        gp = _scatter(p.obs_point[:, None] * 3 + np.arange(3)[None], (wJp.transpose(0, 2, 1) @ r[:, :, None])[:, :, 0], P * 3)
        gp = gp.reshape(P, 3)
        U, Wb, gc = U[:nC, :nC], Wb[:nC], gc[:nC]

        improved = False
        for _ in range(10):
            Ud = U + lam * np.diag(np.diag(U) + 1e-9)
            Vd = Vb + lam * (np.eye(3)[None] * (np.diagonal(Vb, axis1=1, axis2=2)[:, :, None] + 1e-9))
            # The linear algebra runs in torch alone: mixing torch's and numpy's BLAS thread pools
            # on a small machine makes each wait on the other's spinning threads.
            Vinv_t = torch.linalg.inv(torch.from_numpy(Vd))
            Vinv = Vinv_t.numpy()
            Wt = torch.from_numpy(Wb)
            WV = torch.bmm(Wt.transpose(0, 1), Vinv_t).transpose(0, 1).reshape(nC, -1)  # [nC, P*3]
            S = torch.from_numpy(Ud) - WV @ Wt.reshape(nC, -1).T
            rhs = -(torch.from_numpy(gc) - WV @ torch.from_numpy(gp.ravel()))
            if nC:
                dc_t, info = torch.linalg.solve_ex(S, rhs)
                if int(info) != 0 or not torch.isfinite(dc_t).all():
                    lam *= 10
                    continue
                dc = dc_t.numpy()
            else:
                dc = np.zeros(0)
            dp = -(Vinv @ (gp + np.einsum("cpj,c->pj", Wb, dc))[:, :, None])[:, :, 0]
            R_new, t_new = R.copy(), t.copy()
            if len(free):
                d6 = dc[:6 * len(free)].reshape(-1, 6)
                R_new[free] = Rotation.from_rotvec(d6[:, :3]).as_matrix() @ R[free]
                t_new[free] = t[free] + d6[:, 3:]
            X_new = X + dp
            lf_new = log_f + (dc[-1] if n_f else 0.0)
            r_new, RX_new, pc_new, z_new = evaluate(R_new, t_new, X_new, lf_new)
            err_new = np.linalg.norm(r_new, axis=1)
            cost_new = _huber_cost(err_new, loss_scale_px)
            if cost_new < cost:
                rel = (cost - cost_new) / max(cost, 1e-12)
                R, t, X, log_f = R_new, t_new, X_new, lf_new
                r, RX, pc, z, err, cost = r_new, RX_new, pc_new, z_new, err_new, cost_new
                lam = max(lam / 3, 1e-9)
                improved = True
                break
            lam *= 4
        if not improved or rel < rel_tol:
            break

    return BundleResult(Rotation.from_matrix(R).as_rotvec(), t, X, K_of(log_f), err, cost, it)
