"""Does a window have parallax? A decision that owns its own geometry.

A camera that only rotates (or stands still) maps every pixel through the
infinite homography ``K R K^-1``: no depth can be recovered. We fit that
rotation-only model, with the focal length free when the intrinsics are not
known, to the verified matches of a pair, and measure what it cannot explain:
the residual image motion, as an angle (pixels over the focal length). That
residual is the parallax that translation produced. The fit is a small
deterministic robust least-squares problem, so the decision does not depend
on any library's RANSAC sampling, unlike the triangulation angle of a
five-point essential matrix, which on noise-level motion returns an arbitrary
baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation


@dataclass
class ParallaxConfig:
    """When a window counts as having parallax (docs/default_backend.md has the measurements)."""

    min_ratio: float = 6.0  # rotation-unexplained motion over matching noise that a pair needs
    noise_floor_px: float = 0.1  # matching noise is never taken as lower than this
    min_matches: int = 20  # pairs with fewer verified matches are not judged
    max_matches: int = 400  # matches a fit uses (evenly subsampled): the medians need no more
    max_pairs: int = 12  # pairs judged per window, widest apart first
    focal_range: tuple[float, float] = (0.25, 4.0)  # free focal length, relative to the prior


def _bearings(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit rays ``[N, 3]`` through pixels ``uv`` ``[N, 2]`` of a camera with intrinsics ``K``."""
    rays = np.c_[(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], np.ones(len(uv))]
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation ``R`` minimising ``|R a - b|`` over unit vectors ``a``, ``b`` ``[N, 3]``."""
    U, _, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _skew_rows(v: np.ndarray) -> np.ndarray:
    """[v]x for each row of ``v`` [N, 3]: [N, 3, 3]."""
    S = np.zeros((len(v), 3, 3))
    S[:, 0, 1], S[:, 0, 2], S[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    return S - S.transpose(0, 2, 1)


def _left_jacobian(w: np.ndarray) -> np.ndarray:
    """SO(3)'s left Jacobian at rotation vector ``w`` [3]."""
    theta = float(np.linalg.norm(w))
    W = _skew_rows(w[None])[0]
    if theta < 1e-6:
        return np.eye(3) + 0.5 * W
    return np.eye(3) + (1 - np.cos(theta)) / theta**2 * W + (theta - np.sin(theta)) / theta**3 * W @ W


class RotationOnlyFit:
    """The rotation-only model of matches ``ui`` -> ``uj`` (pixels ``[N, 2]``) seen by a camera with
    intrinsics ``K``: parameters are a rotation vector (camera i to j) and, when ``fit_focal``, the
    log of the focal length relative to ``K``'s. Residuals are pixels over ``K``'s focal length."""

    def __init__(self, ui: np.ndarray, uj: np.ndarray, K: np.ndarray, fit_focal: bool) -> None:
        self.uj, self.fit_focal = uj, fit_focal
        self.f0 = float(K[0, 0])
        self.c, self.aspect = K[:2, 2], K[1, 1] / K[0, 0]
        self.centred = (ui - self.c) / [1.0, self.aspect]

    def _rotated_rays(self, params: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """(p = R x [N, 3] for the rays x of ``ui``, the focal length, R)."""
        f = self.f0 * np.exp(params[3]) if self.fit_focal else self.f0
        R = Rotation.from_rotvec(params[:3]).as_matrix()
        return np.c_[self.centred / f, np.ones(len(self.centred))] @ R.T, f, R

    def residual(self, params: np.ndarray) -> np.ndarray:
        """[2N]; 1e6 where a ray turns behind the camera."""
        p, f, _ = self._rotated_rays(params)
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = p[:, :2] / p[:, 2:3] * [f, f * self.aspect] + self.c
        return np.nan_to_num((proj - self.uj).ravel(), nan=1e6) / self.f0

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        """d residual / d params [2N, 3 or 4], analytic: the rotation vector through SO(3)'s left
        Jacobian (R(w + dw) = exp(J(w) dw) R(w)), the log focal length through the rays and the
        scale. Given to the solver, it costs about one residual where finite differences cost four."""
        p, f, R = self._rotated_rays(params)
        fy = f * self.aspect
        with np.errstate(divide="ignore", invalid="ignore"):
            z = 1.0 / p[:, 2]
            dproj = np.zeros((len(p), 2, 3))  # d(projection) / dp
            dproj[:, 0, 0], dproj[:, 0, 2] = f * z, -f * p[:, 0] * z * z
            dproj[:, 1, 1], dproj[:, 1, 2] = fy * z, -fy * p[:, 1] * z * z
            J = np.einsum("nij,njk->nik", dproj, -_skew_rows(p) @ _left_jacobian(params[:3]))
            if self.fit_focal:  # x = ((u - cx) / f, (v - cy) / (a f), 1): dx / dlog f = -(x0, x1, 0)
                dp = -np.c_[self.centred / f, np.zeros(len(p))] @ R.T
                scale = np.c_[p[:, 0] * z * f, p[:, 1] * z * fy]
                J = np.concatenate([J, (scale + np.einsum("nij,nj->ni", dproj, dp))[:, :, None]], axis=2)
        J = J.reshape(-1, J.shape[2]) / self.f0
        J[~np.isfinite(J)] = 0.0
        return J


def rotation_residual_px(ui: np.ndarray, uj: np.ndarray, K: np.ndarray, fit_focal: bool,
                         config: ParallaxConfig | None = None) -> float:
    """Median motion (pixels) of matches ``ui`` -> ``uj`` (pixels ``[N, 2]``) that no rotation of
    a camera with intrinsics ``K`` (focal length free when ``fit_focal``) explains."""
    return fit_rotation(ui, uj, K, fit_focal, config)[1]


def fit_rotation(ui: np.ndarray, uj: np.ndarray, K: np.ndarray, fit_focal: bool,
                 config: ParallaxConfig | None = None) -> tuple[np.ndarray, float]:
    """The rotation [3, 3] of a camera (i to j: ``x_j ~ R x_i`` for rays ``x``) that best maps
    matches ``ui`` -> ``uj``, and the median motion (pixels) it leaves unexplained."""
    cfg = config or ParallaxConfig()
    if len(ui) > cfg.max_matches:
        pick = np.linspace(0, len(ui) - 1, cfg.max_matches).astype(np.int64)
        ui, uj = ui[pick], uj[pick]
    model = RotationOnlyFit(ui, uj, K, fit_focal)
    start = np.zeros(4 if fit_focal else 3)
    start[:3] = Rotation.from_matrix(_kabsch(_bearings(ui, K), _bearings(uj, K))).as_rotvec()
    bounds = (-np.inf, np.inf)
    if fit_focal:
        lo, hi = np.log(cfg.focal_range)
        bounds = ([-np.inf] * 3 + [lo], [np.inf] * 3 + [hi])
    # soft_l1 with a one-pixel scale: a few mismatched pairs cannot pull the rotation away.
    fit = least_squares(model.residual, start, jac=model.jacobian, loss="soft_l1", f_scale=1.0 / model.f0,
                        bounds=bounds, max_nfev=50)
    residual = float(np.median(np.linalg.norm(fit.fun.reshape(-1, 2), axis=1)) * model.f0)
    return Rotation.from_rotvec(fit.x[:3]).as_matrix(), residual


def epipolar_noise_px(ui: np.ndarray, uj: np.ndarray) -> float:
    """Median distance (pixels) of matches ``ui`` -> ``uj`` ``[N, 2]`` from the epipolar lines of
    the least-squares fundamental matrix (normalised eight-point, no sampling): the matching noise,
    since a fundamental matrix also explains whatever translation and rotation there is."""
    def normaliser(u):
        c = u.mean(axis=0)
        s = np.sqrt(2) / max(np.linalg.norm(u - c, axis=1).mean(), 1e-12)
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])

    Ti, Tj = normaliser(ui), normaliser(uj)
    a = np.c_[ui, np.ones(len(ui))] @ Ti.T
    b = np.c_[uj, np.ones(len(uj))] @ Tj.T
    A = (b[:, :, None] * a[:, None, :]).reshape(-1, 9)
    F = np.linalg.svd(A)[2][-1].reshape(3, 3)
    U, S, Vt = np.linalg.svd(F)
    F = Tj.T @ (U @ np.diag([S[0], S[1], 0.0]) @ Vt) @ Ti
    xa = np.c_[ui, np.ones(len(ui))]
    xb = np.c_[uj, np.ones(len(uj))]
    Fa, Fb = xa @ F.T, xb @ F
    num = np.abs((xb * Fa).sum(axis=1))
    return float(np.median(num / np.sqrt(Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Fb[:, 0] ** 2 + Fb[:, 1] ** 2 + 1e-30)))


def matching_noise_px(ui: np.ndarray, uj: np.ndarray, config: ParallaxConfig) -> float:
    """A pair's matching noise (``epipolar_noise_px``), never below ``config.noise_floor_px``."""
    return max(epipolar_noise_px(ui, uj), config.noise_floor_px)


def beyond_rotation(residual_px: float, ui: np.ndarray, uj: np.ndarray, config: ParallaxConfig) -> bool:
    """Whether a pair whose rotation fit left ``residual_px`` has parallax: ``config.min_ratio`` times
    its matching noise or more."""
    return residual_px >= config.min_ratio * matching_noise_px(ui, uj, config)


@dataclass
class ParallaxEvidence:
    has_parallax: bool
    ratio: float  # the best pair's rotation-unexplained motion over its matching noise
    residual_px: float  # that pair's rotation-unexplained motion
    noise_px: float  # that pair's matching noise
    pairs_judged: int
    pair: tuple[int, int] | None = None  # the views of that pair

    def as_info(self) -> dict:
        return {"parallax_ratio": round(self.ratio, 2), "parallax_residual_px": round(self.residual_px, 3),
                "matching_noise_px": round(self.noise_px, 3), "parallax_pairs_judged": self.pairs_judged}


def judge_parallax(pairs: list[tuple[int, int, np.ndarray, np.ndarray]], K: np.ndarray, fit_focal: bool,
                   config: ParallaxConfig | None = None) -> ParallaxEvidence:
    """Whether any matched pair of a window moved in a way no camera rotation explains, by a
    clear margin over its own matching noise. ``pairs`` holds ``(i, j, uv_i, uv_j)`` (pixels
    ``[N, 2]``) per pair of views; the ``max_pairs`` widest apart are judged first, then each view's
    widest pair and each pair of neighbours, and the first that passes decides."""
    cfg = config or ParallaxConfig()
    usable = [p for p in pairs if len(p[2]) >= cfg.min_matches]
    usable.sort(key=lambda p: (p[1] - p[0], len(p[2])), reverse=True)
    # Then every view's widest pair, then neighbours (keyframes of a video are spaced by parallax):
    # a window that turns on the spot and walks on has its widest pairs all in the turn, and its
    # parallax only in pairs of the walk.
    widest = list({p[0]: p for p in reversed(usable)}.values())
    widest.sort(key=lambda p: (p[1] - p[0], len(p[2])), reverse=True)
    neighbours = sorted((p for p in usable if p[1] - p[0] == 1), key=lambda p: -len(p[2]))
    order = {(p[0], p[1]): p for p in usable[: cfg.max_pairs]}
    for p in widest + neighbours:
        order.setdefault((p[0], p[1]), p)
    best = ParallaxEvidence(False, 0.0, 0.0, 0.0, 0)
    for n, (i, j, ui, uj) in enumerate(order.values(), start=1):
        residual = rotation_residual_px(ui, uj, K, fit_focal, cfg)
        noise = matching_noise_px(ui, uj, cfg)
        if residual / noise > best.ratio:
            best = ParallaxEvidence(False, residual / noise, residual, noise, n, (int(i), int(j)))
        best.pairs_judged = n
        if best.ratio >= cfg.min_ratio:
            best.has_parallax = True
            break
    return best
