"""Bundle adjustment of one window: Levenberg-Marquardt on the Schur complement.

A window has few cameras (tens) and many points (thousands), so the normal
equations are reduced to the camera block (points eliminated through their
3x3 blocks) and solved exactly each iteration. Exact steps matter: orbiting
and forward-moving cameras leave a flat rotation/translation valley where
inexact (iterative) solvers crawl. A Huber loss (by reweighting) tames
mismatches. Poses are world-to-camera; rotations are updated on the left,
R <- exp(d) R. One view is held fixed for the gauge; LM damping absorbs the
free scale. An optional shared focal factor self-calibrates the intrinsics, and
an optional shared radial coefficient models a lens: a camera-frame point
(x, y, z) projects to f * (x/z, y/z) * (1 + k1 * r^2) + c, r^2 = (x/z)^2 + (y/z)^2
(COLMAP's SIMPLE_RADIAL convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

# A real camera's principal point lies within about this fraction of the longest image side of the
# centre (one sigma); the focal's sigma allows for it (_focal_evidence).
PRINCIPAL_POINT_SIGMA = 0.02
# Tracks carry errors the reprojection noise cannot see because they do not average out over a
# window (compression, unmodelled distortion, detector bias): about this many pixels, the same
# for every observation. A focal length that moves the reprojections by less than that is not
# known from them, however many there are (_focal_evidence).
FOCAL_SYSTEMATIC_PX = 0.01


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
    # Prior on the focal length when it is refined: (focal px, weight). The cost gains
    # 0.5 * weight * (log f - log focal)^2, weight in px^2 per log-unit^2 (see recon/default/calibration.py).
    focal_prior: tuple[float, float] | None = None
    # (W, H) of the image the observations are in: the principal point's prior is centred on it.
    # None: the image is taken to be centred on K's principal point.
    image_size: tuple[int, int] | None = None
    focal_systematic_px: float = FOCAL_SYSTEMATIC_PX  # see the constant; 0: white noise alone
    radial_k1: float = 0.0  # the lens's radial coefficient (normalised image coordinates; 0: a pinhole)
    refine_radial: bool = False  # adjust ``radial_k1`` too (one coefficient shared by every view)


@dataclass
class BundleResult:
    rvecs: np.ndarray
    tvecs: np.ndarray
    points: np.ndarray
    K: np.ndarray
    residuals_px: np.ndarray  # [O] reprojection error per observation after adjustment
    cost: float
    iterations: int = 0
    # With a refined focal length: what the observations alone say about it at the solution (the
    # prior, if any, taken out), from the Gauss-Newton curvature of the cost in log f with every
    # pose and point re-optimised. None when the focal was fixed or the curvature is not positive.
    focal_evidence: FocalEvidence | None = None
    radial_k1: float = 0.0  # the lens's radial coefficient at the solution (the problem's when not refined)


@dataclass
class FocalEvidence:
    log_focal: float  # log of the focal (px) the observations alone point to
    sigma_log: float  # its standard deviation (log units: relative error of the focal)
    # The noise sigma_log assumes, px^2: the weighted squared reprojection error per coordinate plus
    # the systematic errors' share (see _focal_evidence), so that noise_px2 / sigma_log^2 is the
    # information the adjustment's cost holds on log f: a prior of that weight counts as much.
    noise_px2: float
    # The principal point (held where the problem's K puts it) as the observations and the prior of
    # PRINCIPAL_POINT_SIGMA around the image centre would have it: the Gauss-Newton step (cx, cy) in
    # px with every pose, point and the focal re-optimised, and its sigma (px) after that step.
    principal_step_px: np.ndarray | None = None
    principal_sigma_px: np.ndarray | None = None
    # With a refined radial coefficient: its sigma (normalised units) from the same information and
    # noise, every other unknown eliminated (the principal point held).
    radial_sigma: float | None = None


def project(rvecs, tvecs, points, K, obs_view, obs_point, radial_k1: float = 0.0) -> np.ndarray:
    """Pixel projections [O, 2] of each observation's point in its view (through the lens ``radial_k1``)."""
    R = Rotation.from_rotvec(rvecs).as_matrix()
    return _project(R, tvecs, points, K, obs_view, obs_point, radial_k1)[0]


def _project(R, tvecs, points, K, obs_view, obs_point, radial_k1: float = 0.0):
    RX = np.einsum("oij,oj->oi", R[obs_view], points[obs_point])
    pc = RX + tvecs[obs_view]
    z = np.where(np.abs(pc[:, 2]) < 1e-9, 1e-9, pc[:, 2])
    u, v = K[0, 0] * pc[:, 0] / z, K[1, 1] * pc[:, 1] / z
    if radial_k1:
        xn, yn = pc[:, 0] / z, pc[:, 1] / z
        bend = 1.0 + radial_k1 * (xn * xn + yn * yn)
        u, v = u * bend, v * bend
    uv = np.stack([u + K[0, 2], v + K[1, 2]], axis=1)
    return uv, RX, pc, z


def _huber_weights(err: np.ndarray, delta: float) -> np.ndarray:
    return np.where(err <= delta, 1.0, delta / np.maximum(err, 1e-12))


def _huber_cost(err: np.ndarray, delta: float) -> float:
    return float(np.where(err <= delta, 0.5 * err ** 2, delta * (err - 0.5 * delta)).sum())


class _Layout:
    """Index arrays of one problem, built once and reused by every iteration.

    Observations are sorted by view, so per-view sums are contiguous reductions.
    Each (view, point) pair is observed at most once (a track has one keypoint
    per view), so camera-point blocks are written, not summed.
    """

    def __init__(self, p: BundleProblem):
        V, P = len(p.rvecs), len(p.points)
        self.order = np.argsort(p.obs_view, kind="stable")
        self.view = p.obs_view[self.order]
        self.point = p.obs_point[self.order]
        self.uv = p.obs_uv[self.order]
        if len(np.unique(self.view * P + self.point)) != len(self.view):
            raise ValueError("bundle_adjust: a point is observed twice in one view")
        free = np.array([v for v in range(V) if v != p.fixed_view], np.int64)
        slot = np.full(V, -1, np.int64)
        slot[free] = np.arange(len(free))
        self.free = free
        self.n_f = 1 if p.refine_focal else 0
        self.n_k = 1 if p.refine_radial else 0
        self.n_s = self.n_f + self.n_k  # unknowns every view shares: log focal, then the radial coefficient
        self.nC = 6 * len(free) + self.n_s  # camera-side unknowns, the reduced system's size
        self.P = P
        self.seen, self.starts = np.unique(self.view, return_index=True)
        self.ends = np.r_[self.starts[1:], len(self.view)]
        seen_slot = slot[self.seen]
        self.seen_free = np.nonzero(seen_slot >= 0)[0]  # rows of per-view sums that have unknowns
        self.seen_cols = 6 * seen_slot[self.seen_free, None] + np.arange(6)  # [Vs, 6]
        obs_slot = slot[self.view]
        self.obs_free = np.nonzero(obs_slot >= 0)[0]
        obs_cols = 6 * obs_slot[self.obs_free, None] + np.arange(6)  # [Of, 6] columns of W
        # Flat positions of each free observation's [3, 6] block in W [P, 3, nC]; the pattern
        # never changes, so W is allocated once and only these entries are rewritten.
        self.obs_flat = ((self.point[self.obs_free, None, None] * 3 + np.arange(3)[:, None]) * self.nC
                         + obs_cols[:, None, :]).ravel()
        self._W = np.zeros((P, 3, self.nC))
        self.point3 = (self.point[:, None] * 3 + np.arange(3)).ravel()
        self.point9 = (self.point[:, None] * 9 + np.arange(9)).ravel()

    def per_point(self, values: np.ndarray, width: int) -> np.ndarray:
        """Sums ``[P, width]`` of per-observation ``values [O, width]`` (width 3 or 9)."""
        index = self.point3 if width == 3 else self.point9
        return np.bincount(index, weights=values.ravel(), minlength=self.P * width).reshape(self.P, width)

    def camera_system(self, wJc: np.ndarray, Jc: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera block ``U [nC, nC]`` and gradient ``g [nC]`` from the weighted and plain camera
        Jacobians ``[O, 2, 6 + n_s]`` (pose columns, then the shared ones) and residuals ``r [O, 2]``:
        one small matrix product per view over its contiguous observations."""
        nC, n_s = self.nC, self.n_s
        width = wJc.shape[2]
        Uv = np.empty((len(self.seen), width, width))
        gv = np.empty((len(self.seen), width))
        for k, (s, e) in enumerate(zip(self.starts, self.ends)):
            A = wJc[s:e].reshape(-1, width)
            Uv[k] = A.T @ Jc[s:e].reshape(-1, width)
            gv[k] = A.T @ r[s:e].ravel()
        U = np.zeros((nC, nC))
        g = np.zeros(nC)
        cols, rows = self.seen_cols, self.seen_free
        U[cols[:, :, None], cols[:, None, :]] = Uv[rows, :6, :6]
        g[cols] = gv[rows, :6]
        if n_s:
            shared = np.arange(nC - n_s, nC)
            own = slice(6, 6 + n_s)
            U[cols[:, :, None], shared[None, None, :]] = Uv[rows, :6, own]
            U[shared[None, :, None], cols[:, None, :]] = Uv[rows, own, :6]
            for a in range(n_s):  # one column at a time: the same sums, in the same order, as the pinhole's
                for b in range(n_s):
                    U[nC - n_s + a, nC - n_s + b] = Uv[:, 6 + a, 6 + b].sum()
                g[nC - n_s + a] = gv[:, 6 + a].sum()
        return U, g

    def camera_point_blocks(self, JpJc: np.ndarray) -> np.ndarray:
        """Camera-point blocks, point-major ``[P, 3, nC]``, from per-observation ``JpJc [O, 3, 6 + n_s]``
        (point-major so that the Schur products below are plain matrix products, no transposes)."""
        W = self._W
        W.ravel()[self.obs_flat] = JpJc[self.obs_free, :, :6].ravel()
        for s in range(self.n_s):
            W[:, :, self.nC - self.n_s + s] = self.per_point(JpJc[:, :, 6 + s], 3)
        return W


def _jacobians(R_obs: np.ndarray, RX: np.ndarray, pc: np.ndarray, z: np.ndarray, fx: float, fy: float,
               refine_focal: bool, radial_k1: float = 0.0, refine_radial: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-observation Jacobians of the pixel residual: cameras ``[O, 2, 6 + max(n_s, 1)]`` (left
    rotation perturbation, translation, then log focal and the radial coefficient when refined; a
    zero column when neither is) and points ``[O, 2, 3]``, written out term by term. Without a lens
    every term reduces, operation for operation, to the pinhole's."""
    iz = 1.0 / z
    xn, yn = pc[:, 0] * iz, pc[:, 1] * iz
    r2 = xn * xn + yn * yn
    bend = 1.0 + radial_k1 * r2
    # d (u, v) / d (xn, yn) = diag(fx, fy) @ [[bend + 2 k1 xn^2, 2 k1 xn yn], [2 k1 xn yn, bend + 2 k1 yn^2]]
    uxx, uxy = fx * (bend + 2 * radial_k1 * xn * xn), fx * 2 * radial_k1 * xn * yn
    vyx, vyy = fy * 2 * radial_k1 * xn * yn, fy * (bend + 2 * radial_k1 * yn * yn)
    # d (xn, yn) / d pc = [[iz, 0, -pc0 iz^2], [0, iz, -pc1 iz^2]]
    J = np.empty((len(z), 2, 3))  # d (u, v) / d pc
    J[:, 0, 0], J[:, 0, 1] = uxx * iz, uxy * iz
    J[:, 0, 2] = -uxx * pc[:, 0] * iz * iz - uxy * pc[:, 1] * iz * iz
    J[:, 1, 0], J[:, 1, 1] = vyx * iz, vyy * iz
    J[:, 1, 2] = -vyy * pc[:, 1] * iz * iz - vyx * pc[:, 0] * iz * iz
    x0, x1, x2 = RX[:, 0], RX[:, 1], RX[:, 2]
    Jc = np.zeros((len(z), 2, 6 + max(int(refine_focal) + int(refine_radial), 1)))
    # d pc / d rotation = -[RX]x, whose columns are (0, -x2, x1), (x2, 0, -x0), (-x1, x0, 0)
    Jc[:, :, 0] = J[:, :, 2] * x1[:, None] - J[:, :, 1] * x2[:, None]
    Jc[:, :, 1] = J[:, :, 0] * x2[:, None] - J[:, :, 2] * x0[:, None]
    Jc[:, :, 2] = J[:, :, 1] * x0[:, None] - J[:, :, 0] * x1[:, None]
    Jc[:, :, 3:6] = J
    col = 6
    if refine_focal:
        Jc[:, 0, col] = fx * pc[:, 0] * iz * bend
        Jc[:, 1, col] = fy * pc[:, 1] * iz * bend
        col += 1
    if refine_radial:
        Jc[:, 0, col] = fx * xn * r2
        Jc[:, 1, col] = fy * yn * r2
    Jp = np.empty((len(z), 2, 3))
    for row in (0, 1):
        Jp[:, row] = J[:, row, 0, None] * R_obs[:, 0] + J[:, row, 1, None] * R_obs[:, 1] + J[:, row, 2, None] * R_obs[:, 2]
    return Jc, Jp


def _step_size(dc: np.ndarray, t: np.ndarray, n_free: int, n_s: int) -> float:
    """Largest camera update of a step: rotation (rad), translation relative to the cameras' typical
    distance term ``|t|``, the shared unknowns (log focal, radial coefficient)."""
    d6 = dc[:6 * n_free].reshape(-1, 6)
    scale = max(float(np.median(np.linalg.norm(t, axis=1))), 1e-9)
    parts = [np.abs(d6[:, :3]).max(initial=0.0), np.abs(d6[:, 3:]).max(initial=0.0) / scale]
    parts.extend(np.abs(dc[len(dc) - n_s:]).tolist())
    return float(max(parts))


def bundle_adjust(p: BundleProblem, loss_scale_px: float = 1.5, max_iterations: int = 40,
                  rel_tol: float = 1e-5, step_tol: float = 1e-4) -> BundleResult:
    """Levenberg-Marquardt until a step gains less than ``rel_tol`` of the cost while moving no camera
    by more than ``step_tol`` (see :func:`_step_size`): in the flat valleys of self-calibration a step
    can gain little and still move the focal length by percent."""
    import torch  # here: building a config tree imports this module, and must not load torch

    lay = _Layout(p)
    free, n_f, n_k, nC, P = lay.free, lay.n_f, lay.n_k, lay.nC, lay.P
    i_f = nC - lay.n_s  # the focal's column, when refined; the radial coefficient's is the last
    view, point = lay.view, lay.point

    R = Rotation.from_rotvec(p.rvecs).as_matrix()
    t = p.tvecs.astype(np.float64).copy()
    X = p.points.astype(np.float64).copy()
    log_f = 0.0
    k1 = float(p.radial_k1)

    def K_of(lf):
        K = p.K.astype(np.float64).copy()
        K[0, 0] *= np.exp(lf)
        K[1, 1] *= np.exp(lf)
        return K

    def evaluate(R, t, X, lf, k1):
        uv, RX, pc, z = _project(R, t, X, K_of(lf), view, point, k1)
        r = uv - lay.uv
        return r, RX, pc, z

    prior_w, prior_mu = 0.0, 0.0
    if n_f and p.focal_prior is not None:
        prior_w, prior_mu = float(p.focal_prior[1]), float(np.log(p.focal_prior[0] / p.K[0, 0]))

    def total_cost(err, lf):
        return _huber_cost(err, loss_scale_px) + 0.5 * prior_w * (lf - prior_mu) ** 2

    r, RX, pc, z = evaluate(R, t, X, log_f, k1)
    err = np.linalg.norm(r, axis=1)
    cost = total_cost(err, log_f)
    lam = 1e-3
    it = 0
    for it in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        K = K_of(log_f)
        w = _huber_weights(err, loss_scale_px)[:, None, None]  # [O, 1, 1]
        Jc, Jp = _jacobians(R[view], RX, pc, z, K[0, 0], K[1, 1], bool(n_f), k1, bool(n_k))
        wJc = Jc * w
        wJpT = (Jp * w).transpose(0, 2, 1)  # [O, 3, 2]
        U, gc = lay.camera_system(wJc, Jc, r)
        if prior_w:
            U[i_f, i_f] += prior_w
            gc[i_f] += prior_w * (log_f - prior_mu)
        Vb = lay.per_point(wJpT @ Jp, 9).reshape(P, 3, 3)
        gp = lay.per_point((wJpT @ r[:, :, None])[:, :, 0], 3)
        Wt = torch.from_numpy(lay.camera_point_blocks(wJpT @ Jc)).reshape(3 * P, nC)  # [P*3, nC]
        gp_t = torch.from_numpy(gp.ravel())

        improved = False
        for _ in range(10):
            Ud = U + lam * np.diag(np.diag(U) + 1e-9)
            Vd = Vb + lam * (np.eye(3)[None] * (np.diagonal(Vb, axis1=1, axis2=2)[:, :, None] + 1e-9))
            # The linear algebra runs in torch alone: mixing torch's and numpy's BLAS thread pools
            # on a small machine makes each wait on the other's spinning threads.
            Vinv_t = torch.linalg.inv(torch.from_numpy(Vd))
            Vinv = Vinv_t.numpy()
            VW = torch.bmm(Vinv_t, Wt.view(P, 3, nC)).view(3 * P, nC)  # V^-1 W, point by point
            S = torch.from_numpy(Ud) - VW.T @ Wt
            rhs = -(torch.from_numpy(gc) - VW.T @ gp_t)
            if nC:
                dc_t, info = torch.linalg.solve_ex(S, rhs)
                if int(info) != 0 or not torch.isfinite(dc_t).all():
                    lam *= 10
                    continue
                dc = dc_t.numpy()
            else:
                dc = np.zeros(0)
            Wt_dc = (Wt @ torch.from_numpy(dc)).numpy().reshape(P, 3)
            dp = -(Vinv @ (gp + Wt_dc)[:, :, None])[:, :, 0]
            R_new, t_new = R.copy(), t.copy()
            if len(free):
                d6 = dc[:6 * len(free)].reshape(-1, 6)
                R_new[free] = Rotation.from_rotvec(d6[:, :3]).as_matrix() @ R[free]
                t_new[free] = t[free] + d6[:, 3:]
            X_new = X + dp
            lf_new = log_f + (dc[i_f] if n_f else 0.0)
            k1_new = k1 + (dc[-1] if n_k else 0.0)
            r_new, RX_new, pc_new, z_new = evaluate(R_new, t_new, X_new, lf_new, k1_new)
            err_new = np.linalg.norm(r_new, axis=1)
            cost_new = total_cost(err_new, lf_new)
            if cost_new < cost:
                rel = (cost - cost_new) / max(cost, 1e-12)
                step = _step_size(dc, t, len(free), lay.n_s)
                R, t, X, log_f, k1 = R_new, t_new, X_new, lf_new, k1_new
                r, RX, pc, z, err, cost = r_new, RX_new, pc_new, z_new, err_new, cost_new
                lam = max(lam / 3, 1e-9)
                improved = True
                break
            lam *= 4
        if not improved or (rel < rel_tol and step < step_tol):
            break

    residuals = np.empty_like(err)
    residuals[lay.order] = err  # back to the caller's observation order
    evidence = None
    if n_f:
        evidence = _focal_evidence(lay, R, RX, pc, z, r, err, K_of(log_f), loss_scale_px, prior_w, prior_mu,
                                   log_f, p.image_size, systematic_px=p.focal_systematic_px, radial_k1=k1)
        if evidence is not None:
            evidence.log_focal += float(np.log(p.K[0, 0]))
    return BundleResult(Rotation.from_matrix(R).as_rotvec(), t, X, K_of(log_f), residuals, cost, it, evidence, k1)


def _focal_evidence(lay: _Layout, R, RX, pc, z, r, err, K, loss_scale_px: float, prior_w: float, prior_mu: float,
                    log_f: float, image_size: tuple[int, int] | None = None, *,
                    systematic_px: float, radial_k1: float = 0.0) -> FocalEvidence | None:
    """The observations' information on log f at the solution: the focal entry of the Schur
    complement (points eliminated) with the poses eliminated too, from the undamped weighted normal
    equations without the prior. With it the prior's pull is taken out again: at a MAP solution
    ``I (lf - lf_data) + w (lf - mu) = 0``, so ``lf_data = lf + w (lf - mu) / I``. (A full Newton
    step on the profile from where Levenberg-Marquardt stopped overshoots on forward motion, whose
    cost is far from quadratic in log f.)

    The sigma also eliminates the principal point, which the adjustment holds at the image centre:
    a real camera's lies within ``PRINCIPAL_POINT_SIGMA`` of the longest side of it (a Gaussian
    prior), and on forward motion the focal trades against it.

    The white-noise sigma shrinks with every observation; errors common to the window's tracks
    (``systematic_px`` per coordinate) do not. A focal error ``d`` moves the re-optimised
    reprojections by ``g * d`` px (RMS over the ``n`` weighted coordinates, ``g^2 = info / n``), so
    such errors leave the focal uncertain by ``systematic_px / g`` too, added in quadrature through
    the noise the sigma assumes (``systematic_px^2 * n`` on top of the residuals'). A window that
    only translates, where any focal fits save for what the residuals happen to prefer, is then not
    believed to know it. Returned relative to the problem's starting K (the caller adds its log
    focal)."""
    view, P, nC = lay.view, lay.P, lay.nC
    w = _huber_weights(err, loss_scale_px)
    dof = 2 * len(err) - nC - 3 * P
    if dof <= 0:
        return None
    noise = max(float((w * err ** 2).sum()) / dof, 1e-12)
    Jc, Jp = _jacobians(R[view], RX, pc, z, K[0, 0], K[1, 1], True, radial_k1, bool(lay.n_k))
    wJc = Jc * w[:, None, None]
    wJpT = (Jp * w[:, None, None]).transpose(0, 2, 1)
    U, gc = lay.camera_system(wJc, Jc, r)
    # The principal point's columns: d(u, v) / d(cx, cy) is the identity, so its blocks are sums of
    # the weighted camera and point Jacobians' rows.
    A = nC + 2
    Ua = np.zeros((A, A))
    Ua[:nC, :nC] = U
    size = np.asarray(image_size, np.float64) if image_size is not None else 2.0 * K[:2, 2] + 1.0
    centre = (size - 1.0) / 2.0
    side = float(size.max())
    pp_weight = noise / (PRINCIPAL_POINT_SIGMA * side) ** 2
    Ua[nC, nC] = Ua[nC + 1, nC + 1] = w.sum() + pp_weight
    ga = np.concatenate([gc, (w[:, None] * r).sum(0) + pp_weight * (K[:2, 2] - centre)])
    per_view = [np.add.reduceat(wJc[:, k, :], lay.starts, axis=0) for k in (0, 1)]  # [Vseen, 6 + n_s]
    for k in (0, 1):
        Ua[nC + k, lay.seen_cols] = per_view[k][lay.seen_free, :6]
        for s in range(lay.n_s):
            Ua[nC + k, nC - lay.n_s + s] = per_view[k][:, 6 + s].sum()
    Ua[:nC, nC:] = Ua[nC:, :nC].T
    Vb = lay.per_point(wJpT @ Jp, 9).reshape(P, 3, 3)
    Wb = np.concatenate([lay.camera_point_blocks(wJpT @ Jc),
                         np.stack([lay.per_point(wJpT[:, :, k], 3) for k in (0, 1)], axis=2)], axis=2)
    # A point seen along one ray has a singular block, and a far point of forward motion a nearly
    # singular one, whose inverse in full precision makes S indefinite: its weakest direction goes.
    Vinv = np.linalg.pinv(Vb, rcond=1e-8, hermitian=True)
    VW = np.einsum("pij,pjc->pic", Vinv, Wb).reshape(3 * P, A)
    S = Ua - Wb.reshape(3 * P, A).T @ VW
    S = 0.5 * (S + S.T)
    f = nC - lay.n_s  # the focal's column (a refined radial coefficient's follows it)
    gp = lay.per_point((wJpT @ r[:, :, None])[:, :, 0], 3).ravel()
    S_map, g_map = S.copy(), ga - VW.T @ gp  # with the focal's prior: the step is from the MAP solution
    S_map[f, f] += prior_w
    g_map[f] += prior_w * (log_f - prior_mu)
    step, pp_sigma = _principal_point_step(S_map, g_map, noise)
    info_fixed_pp = _marginal_information(S[:nC, :nC], f)
    info = _marginal_information(S, f)
    if not (np.isfinite(info) and np.isfinite(info_fixed_pp)) or info <= 0 or info_fixed_pp <= 0:
        return None
    lf_data = log_f + prior_w * (log_f - prior_mu) / info_fixed_pp
    assumed = noise + systematic_px ** 2 * 2.0 * float(w.sum())  # over the weighted coordinates
    radial_sigma = None
    if lay.n_k:
        info_k = _marginal_information(S[:nC, :nC], nC - 1)
        radial_sigma = float(np.sqrt(assumed / info_k)) if info_k > 0 else float("inf")
    return FocalEvidence(lf_data, float(np.sqrt(assumed / info)), assumed, step, pp_sigma, radial_sigma)


def _principal_point_step(S: np.ndarray, g: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton step ``[2]`` (px) of the principal point, the last two unknowns of the reduced
    system ``S`` with gradient ``g`` (points eliminated; cameras, focal, then cx, cy; its prior around
    the image centre included), every other unknown eliminated, and the principal point's sigma
    ``[2]`` (px) after it. The others are scaled to unit diagonal before their pseudo-inverse, which
    then drops only the window's free scale (a null direction the principal point does not couple
    to): unscaled, rotations and translations differ by orders of magnitude and a pseudo-inverse
    drops real directions too, making the principal point look known."""
    o = len(S) - 2
    d = 1.0 / np.sqrt(np.maximum(np.diag(S)[:o], 1e-300))
    S_oo = S[:o, :o] * d[:, None] * d[None, :]
    S_po = S[o:, :o] * d[None, :]
    inv_oo = np.linalg.pinv(S_oo, rcond=1e-10, hermitian=True)
    M = S[o:, o:] - S_po @ inv_oo @ S_po.T  # information on (cx, cy), the prior's included
    g_p = g[o:] - S_po @ inv_oo @ (g[:o] * d)
    cov = np.linalg.inv(0.5 * (M + M.T))
    return -(cov @ g_p), np.sqrt(np.maximum(noise * np.diag(cov), 0.0))


def _marginal_information(S: np.ndarray, k: int) -> float:
    """Information on unknown ``k`` with every other unknown of ``S`` eliminated. With a pseudo-
    inverse: the window's free scale is a null direction of S that the focal does not couple to."""
    others = np.r_[0:k, k + 1:len(S)]
    s_ok = S[others, k]
    return float(S[k, k] - s_ok @ np.linalg.pinv(S[np.ix_(others, others)], rcond=1e-10, hermitian=True) @ s_ok)


def refine_points(rvecs: np.ndarray, tvecs: np.ndarray, points: np.ndarray, K: np.ndarray, obs_view: np.ndarray,
                  obs_point: np.ndarray, obs_uv: np.ndarray, loss_scale_px: float = 1.5, iterations: int = 10,
                  rel_tol: float = 1e-6, radial_k1: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Points re-fitted to fixed cameras: ``points [P, 3]`` (world) moved to minimise the Huber
    reprojection cost of their observations in views ``rvecs/tvecs [V, 3]`` (world-to-camera) with
    ``K [3, 3]``; every point is independent, so each step solves one damped 3x3 system per point and
    keeps it only where that point's cost fell, until the total gains less than ``rel_tol``. For the
    points an adjustment held out: they must follow the cameras and focal it moved. Returns the
    points and each observation's reprojection error [O] (px) at them; points without observations
    stay where they were. Through a lens (``radial_k1``) the steps take the pinhole's Jacobian, which
    the cost check tolerates for a lens that bends by pixels."""
    R = Rotation.from_rotvec(rvecs).as_matrix()
    R_obs = R[obs_view]
    X = points.astype(np.float64).copy()
    P = len(X)
    lam = np.full(P, 1e-3)
    upper = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]

    def per_point(values: np.ndarray) -> np.ndarray:
        return np.bincount(obs_point, weights=values, minlength=P)

    def residuals(X):
        uv, _, pc, z = _project(R, tvecs, X, K, obs_view, obs_point, radial_k1)
        r = uv - obs_uv
        err = np.linalg.norm(r, axis=1)
        hub = np.where(err <= loss_scale_px, 0.5 * err ** 2, loss_scale_px * (err - 0.5 * loss_scale_px))
        return r, err, pc, z, per_point(hub)

    r, err, pc, z, cost = residuals(X)
    observed = per_point(np.ones(len(obs_point))) > 0
    for _ in range(iterations):
        w = _huber_weights(err, loss_scale_px)
        iz = 1.0 / z
        Ju = (K[0, 0] * iz)[:, None] * (R_obs[:, 0] - (pc[:, 0] * iz)[:, None] * R_obs[:, 2])  # d u / d X
        Jv = (K[1, 1] * iz)[:, None] * (R_obs[:, 1] - (pc[:, 1] * iz)[:, None] * R_obs[:, 2])
        H = np.zeros((P, 3, 3))
        for a, b in upper:
            H[:, a, b] = H[:, b, a] = per_point(w * (Ju[:, a] * Ju[:, b] + Jv[:, a] * Jv[:, b]))
        g = np.stack([per_point(w * (Ju[:, a] * r[:, 0] + Jv[:, a] * r[:, 1])) for a in range(3)], axis=1)
        H[:, range(3), range(3)] *= 1.0 + lam[:, None]
        H[:, range(3), range(3)] += 1e-9
        dp = np.zeros_like(X)
        dp[observed] = -np.linalg.solve(H[observed], g[observed][:, :, None])[:, :, 0]
        cand = residuals(X + dp)
        better = cand[4] < cost
        gain = float((cost - cand[4])[better].sum())
        X[better] += dp[better]
        lam = np.where(better, np.maximum(lam / 3, 1e-9), lam * 4)
        if better.all():
            r, err, pc, z, cost = cand
        elif better.any():
            r, err, pc, z, cost = residuals(X)
        if gain <= rel_tol * max(float(cost.sum()), 1e-12):
            break
    return X, err
