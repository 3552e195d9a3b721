"""Incremental structure from motion inside one window.

Two-view initialisation on the pair with the best mix of inliers and
triangulation angle, PnP registration of further views in order of how many
triangulated tracks they see, triangulation of new tracks, and bundle
adjustment (with focal self-calibration when the intrinsics are not known).
Works for forward motion (driving): initialisation uses the essential matrix
with the window's intrinsics, never a homography-only model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from recon.default.bundle import PRINCIPAL_POINT_SIGMA, BundleProblem, BundleResult, bundle_adjust, refine_points
from recon.default.focal_profile import profile_focal
from recon.default.parallax import ParallaxConfig, judge_parallax
from recon.default.tracks import Tracks
from recon.features import PairMatches


@dataclass
class SfmConfig:
    min_init_inliers: int = 40
    good_init_angle_deg: float = 3.0  # an initial pair with this much parallax is as good as any
    init_candidates: int = 8  # pairs given an essential-matrix fit when choosing the initial pair
    init_motion_px: float = 30.0  # median keypoint motion at which a pair ranks by its track count alone
    min_tri_angle_deg: float = 1.0  # new points need this much parallax
    max_reproj_px: float = 4.0
    min_pnp_inliers: int = 20
    ba_every: int = 3  # bundle-adjust after this many new registrations
    intermediate_ba_iterations: int = 5  # the final adjustment runs to convergence
    max_ba_points: int = 2500  # points in an adjustment (longest tracks first) ...
    max_ba_observations: int = 12000  # ... until their observations reach this: slow clips see each
    # track many times, and every observation costs each adjustment step (docs/default_backend.md)
    degenerate_angle_deg: float = 0.4  # an initial pair triangulating below this median angle has no
    # usable baseline
    parallax: ParallaxConfig = field(default_factory=ParallaxConfig)  # decides first whether there is any
    profile_focal: bool = True  # a self-calibrating final adjustment that does not converge searches the
    # focal length along its profile cost instead (recon/default/focal_profile.py)
    # The final self-calibrating adjustment moves the principal point to where the window's
    # observations put it, on axes whose sigma is at most this fraction of the prior's (bundle.
    # PRINCIPAL_POINT_SIGMA of the longest side). Off (0): on real images that sigma is several times
    # too small and the estimate hurt as often as it helped (docs/benchmarks.md).
    principal_point_gate: float = 0.0
    principal_point_rounds: int = 2  # Gauss-Newton steps on it, each followed by an adjustment


@dataclass
class SfmResult:
    w2c: dict[int, np.ndarray]  # view -> [4, 4] world-to-camera, for registered views
    K: np.ndarray  # [3, 3], refined if self-calibrated
    points: np.ndarray  # [P, 3], triangulated tracks
    point_track: np.ndarray  # int64 [P], track id of each point
    degenerate: bool = False  # no parallax: rotation-only poses, depth unusable
    info: dict = field(default_factory=dict)


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.ravel(t)
    return T


def _ray_angle_deg(X: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    a = X - c1
    b = X - c2
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _centre(w2c: np.ndarray) -> np.ndarray:
    return -w2c[:3, :3].T @ w2c[:3, 3]


class WindowSfm:
    def __init__(self, tracks: Tracks, matches: list[PairMatches], num_views: int,
                 K: np.ndarray, known_K: bool, config: SfmConfig | None = None,
                 focal_prior: tuple[float, float] | None = None, refine_focal: bool | None = None,
                 image_size: tuple[int, int] | None = None):
        self.tracks = tracks
        self.matches = matches
        self.num_views = num_views
        self.K = K.astype(np.float64).copy()
        self.known_K = known_K  # False: the parallax test leaves the focal length free
        self.refine_focal = not known_K if refine_focal is None else refine_focal  # in bundle adjustment
        self.cfg = config or SfmConfig()
        self.w2c: dict[int, np.ndarray] = {}
        self.X = np.full((tracks.num_tracks, 3), np.nan)  # NaN until triangulated
        # keypoint lookup: (view, track) -> observation row
        self._obs_of_view = [tracks.in_view(v) for v in range(num_views)]
        self.info: dict = {}  # evidence of the last run, kept when it finds no parallax
        # (focal px, weight) for self-calibrating adjustments: the stream's estimate so far
        self.focal_prior = focal_prior
        self.focal_evidence = None  # bundle.FocalEvidence of the last self-calibrating adjustment
        self.image_size = image_size  # (W, H) the tracks' pixels are in; None: centred on K's principal point
        # What the last self-calibrating final adjustment's observations say about the principal
        # point: (estimate [2] px, sigma [2] px), or None; and the axes moved to it (principal_point_gate)
        self.principal_evidence: tuple[np.ndarray, np.ndarray] | None = None
        self.principal_applied = np.zeros(2, bool)

    # ---- two-view initialisation -------------------------------------------------
    def _track_pairs(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tracks seen in both views: (track ids, uv in i, uv in j)."""
        oi, oj = self._obs_of_view[i], self._obs_of_view[j]
        ti, tj = self.tracks.track[oi], self.tracks.track[oj]
        common, ai, aj = np.intersect1d(ti, tj, return_indices=True)
        return common, self.tracks.uv[oi[ai]], self.tracks.uv[oj[aj]]

    def _evaluate_pair(self, i: int, j: int):
        tid, ui, uj = self._track_pairs(i, j)
        if len(tid) < self.cfg.min_init_inliers:
            return None
        E, mask = cv2.findEssentialMat(ui, uj, self.K, cv2.RANSAC, 0.999, 1.0)
        if E is None or E.shape != (3, 3):
            return None
        n, R, t, mask2 = cv2.recoverPose(E, ui, uj, self.K, mask=mask.copy())
        inl = mask2.ravel().astype(bool)
        if inl.sum() < self.cfg.min_init_inliers:
            return None
        T0, T1 = np.eye(4), _pose(R, t)
        X = self._triangulate_pair(T0, T1, ui[inl], uj[inl])
        ang = _ray_angle_deg(X, _centre(T0), _centre(T1))
        med = float(np.median(ang))
        score = inl.sum() * min(med / self.cfg.good_init_angle_deg, 1.0)
        return score, med, T1, tid[inl], X

    def _triangulate_pair(self, Ta, Tb, ua, ub) -> np.ndarray:
        Pa = self.K @ Ta[:3]
        Pb = self.K @ Tb[:3]
        Xh = cv2.triangulatePoints(Pa, Pb, ua.T.astype(np.float64), ub.T.astype(np.float64))
        return (Xh[:3] / Xh[3]).T

    def _candidate_pairs(self) -> list[tuple[int, int]]:
        """Pairs worth an essential-matrix fit, best first: many shared tracks that moved far
        (image motion is a cheap stand-in for parallax; the fit measures the real angle)."""
        scored = []
        for m in self.matches:
            _, ui, uj = self._track_pairs(m.i, m.j)
            if len(ui) >= self.cfg.min_init_inliers:
                motion = float(np.median(np.linalg.norm(ui - uj, axis=1)))
                scored.append((len(ui) * min(motion / self.cfg.init_motion_px, 1.0), m.i, m.j))
        scored.sort(reverse=True)
        return [(i, j) for _, i, j in scored[: self.cfg.init_candidates]]

    def initialise(self) -> tuple[int, int, float] | None:
        best = None
        for i, j in self._candidate_pairs():
            res = self._evaluate_pair(i, j)
            if res is not None and (best is None or res[0] > best[0][0]):
                best = (res, i, j)
        if best is None:
            return None
        (score, med, T1, tid, X), i, j = best
        self.w2c[i] = np.eye(4)
        self.w2c[j] = T1
        if med < self.cfg.degenerate_angle_deg:
            return i, j, med
        ok = self._accept_points(tid, X, _centre(self.w2c[i]), _centre(T1))
        self.X[tid[ok]] = X[ok]
        return i, j, med

    # ---- registration -----------------------------------------------------------
    def _accept_points(self, tid: np.ndarray, X: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
        """Points with positive depth and small reprojection error in every registered view that
        sees them, and enough parallax between the centres ``ca``/``cb`` ([3] or [N, 3]) they came from."""
        ok = np.isfinite(X).all(axis=1) & (_ray_angle_deg(X, ca, cb) >= self.cfg.min_tri_angle_deg)
        slot = np.full(self.tracks.num_tracks, -1)
        slot[tid] = np.arange(len(tid))
        views = np.array(sorted(self.w2c))
        vslot = np.full(self.num_views, -1)
        vslot[views] = np.arange(len(views))
        rows = np.nonzero((slot[self.tracks.track] >= 0) & (vslot[self.tracks.view] >= 0))[0]
        if len(rows):
            T = np.stack([self.w2c[v] for v in views])[vslot[self.tracks.view[rows]]]
            k = slot[self.tracks.track[rows]]
            pc = np.einsum("nij,nj->ni", T[:, :3, :3], X[k]) + T[:, :3, 3]
            proj = pc @ self.K.T
            with np.errstate(divide="ignore", invalid="ignore"):
                err = np.linalg.norm(proj[:, :2] / proj[:, 2:3] - self.tracks.uv[rows], axis=1)
            bad = (pc[:, 2] <= 0) | ~(err < self.cfg.max_reproj_px)
            ok[k[bad]] = False
        return ok

    def register_view(self, v: int) -> bool:
        rows = self._obs_of_view[v]
        tv = self.tracks.track[rows]
        has = np.isfinite(self.X[tv, 0])
        if has.sum() < self.cfg.min_pnp_inliers:
            return False
        obj = self.X[tv[has]]
        img = self.tracks.uv[rows[has]]
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, self.K, None, iterationsCount=500,
                                                 reprojectionError=3.0, confidence=0.999,
                                                 flags=cv2.SOLVEPNP_SQPNP)
        if not ok or inl is None or len(inl) < self.cfg.min_pnp_inliers:
            return False
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], self.K, None, rvec, tvec)
        self.w2c[v] = _pose(cv2.Rodrigues(rvec)[0], tvec)
        return True

    def triangulate_new(self) -> int:
        """Triangulate tracks seen by >= 2 registered views that have no point yet."""
        reg = np.array(sorted(self.w2c))
        obs_reg = np.isin(self.tracks.view, reg)
        untri = ~np.isfinite(self.X[self.tracks.track, 0])
        sel = np.nonzero(obs_reg & untri)[0]
        if len(sel) == 0:
            return 0
        tr, vw = self.tracks.track[sel], self.tracks.view[sel]
        order = np.lexsort((vw, tr))
        tr, vw, sel = tr[order], vw[order], sel[order]
        first = np.r_[True, tr[1:] != tr[:-1]]
        last = np.r_[tr[1:] != tr[:-1], True]
        tids, a_rows, b_rows = tr[first], sel[first], sel[last]
        keep = a_rows != b_rows
        tids, a_rows, b_rows = tids[keep], a_rows[keep], b_rows[keep]
        va, vb = self.tracks.view[a_rows], self.tracks.view[b_rows]
        X = np.full((len(tids), 3), np.nan)
        for pa, pb in set(zip(va.tolist(), vb.tolist())):
            m = (va == pa) & (vb == pb)
            X[m] = self._triangulate_pair(self.w2c[pa], self.w2c[pb], self.tracks.uv[a_rows[m]], self.tracks.uv[b_rows[m]])
        centres = {v: _centre(T) for v, T in self.w2c.items()}
        ca = np.stack([centres[v] for v in va.tolist()])
        cb = np.stack([centres[v] for v in vb.tolist()])
        ok = self._accept_points(tids, X, ca, cb)
        self.X[tids[ok]] = X[ok]
        return int(ok.sum())

    # ---- bundle adjustment ------------------------------------------------------
    def adjust(self, refine_focal: bool, fixed_view: int, max_iterations: int = 40) -> float:
        views = np.array(sorted(self.w2c))
        vslot = np.full(self.num_views, -1)
        vslot[views] = np.arange(len(views))
        tri = np.nonzero(np.isfinite(self.X[:, 0]))[0]
        seen = np.bincount(self.tracks.track[np.isin(self.tracks.view, views)], minlength=self.tracks.num_tracks)
        if len(tri) > self.cfg.max_ba_points or seen[tri].sum() > self.cfg.max_ba_observations:
            # The longest tracks constrain the cameras best; the rest keep their triangulation.
            longest = tri[np.argsort(-seen[tri], kind="stable")]
            within = np.cumsum(seen[longest]) <= self.cfg.max_ba_observations
            keep = max(min(self.cfg.max_ba_points, int(within.sum())), min(len(longest), 100))
            tri = np.sort(longest[:keep])
        pslot = np.full(self.tracks.num_tracks, -1)
        pslot[tri] = np.arange(len(tri))
        rows = np.nonzero((vslot[self.tracks.view] >= 0) & (pslot[self.tracks.track] >= 0))[0]
        if len(rows) < 10:
            return float("nan")
        Rs = np.stack([self.w2c[v][:3, :3] for v in views])
        problem = BundleProblem(
            rvecs=Rotation.from_matrix(Rs).as_rotvec(),
            tvecs=np.stack([self.w2c[v][:3, 3] for v in views]),
            points=self.X[tri].copy(),
            obs_view=vslot[self.tracks.view[rows]],
            obs_point=pslot[self.tracks.track[rows]],
            obs_uv=self.tracks.uv[rows],
            K=self.K,
            fixed_view=int(vslot[fixed_view]),
            refine_focal=refine_focal,
            focal_prior=self.focal_prior,
            image_size=self.image_size,
        )
        res = bundle_adjust(problem, max_iterations=max_iterations)
        if refine_focal:
            self.focal_evidence = res.focal_evidence
            if (self.cfg.profile_focal and max_iterations > self.cfg.intermediate_ba_iterations
                    and res.iterations >= max_iterations):
                # A full adjustment that ran out of iterations with the focal free is crawling along
                # the focal valley: search the focal directly (recon/default/focal_profile.py).
                hint = res.focal_evidence.sigma_log if res.focal_evidence is not None else 1.0
                res, self.focal_evidence = profile_focal(problem, res, hint)
            if max_iterations > self.cfg.intermediate_ba_iterations:
                res = self._refine_principal_point(problem, res)
        Rn = Rotation.from_rotvec(res.rvecs).as_matrix()
        for k, v in enumerate(views):
            self.w2c[v] = _pose(Rn[k], res.tvecs[k])
        self.X[tri] = res.points
        self.K = res.K
        # Forget points that stay far off after adjustment: they are mismatches.
        bad_rows = rows[res.residuals_px > self.cfg.max_reproj_px]
        bad_tracks = np.unique(self.tracks.track[bad_rows])
        if max_iterations > self.cfg.intermediate_ba_iterations:  # the window's output: all consistent
            self._follow_adjustment(res, vslot, pslot)
        self.X[bad_tracks] = np.nan
        return float(np.median(res.residuals_px))

    def _follow_adjustment(self, res: BundleResult, vslot: np.ndarray, pslot: np.ndarray) -> None:
        """Re-fits the triangulated points a full adjustment held out (``pslot`` -1: beyond its point
        budget) to the cameras and K it moved, and forgets those that stay far off in some view: left
        where they were triangulated they would no longer agree with the window's poses and focal
        (the sparse tracks it hands out, against which frames between keyframes are posed).
        Intermediate adjustments skip this: registration works with the points as triangulated."""
        held = np.nonzero(np.isfinite(self.X[:, 0]) & (pslot < 0))[0]
        if not len(held):
            return
        hslot = np.full(self.tracks.num_tracks, -1)
        hslot[held] = np.arange(len(held))
        rows = np.nonzero((vslot[self.tracks.view] >= 0) & (hslot[self.tracks.track] >= 0))[0]
        obs_view, obs_point = vslot[self.tracks.view[rows]], hslot[self.tracks.track[rows]]
        X, err = refine_points(res.rvecs, res.tvecs, self.X[held], res.K, obs_view, obs_point, self.tracks.uv[rows])
        self.X[held] = X
        R = Rotation.from_rotvec(res.rvecs).as_matrix()
        depth = np.einsum("oj,oj->o", R[obs_view][:, 2], X[obs_point]) + res.tvecs[obs_view, 2]
        bad = ~(err <= self.cfg.max_reproj_px) | (depth <= 0)
        self.X[np.unique(self.tracks.track[rows[bad]])] = np.nan

    def _refine_principal_point(self, problem: BundleProblem, res: BundleResult) -> BundleResult:
        """Records what the final self-calibrating adjustment's observations say about the principal
        point (``bundle.FocalEvidence``: its Gauss-Newton estimate and sigma, which the model reports).
        Where that sigma is at most ``principal_point_gate`` of the prior's around the image centre,
        the principal point moves there and the window is adjusted again, focal free, from there; the
        default gate 0 keeps it at the centre (docs/default_backend.md: the sigma is overconfident on
        real images)."""
        ev = self.focal_evidence
        if ev is None or ev.principal_step_px is None:
            return res
        self.principal_evidence = (res.K[:2, 2] + ev.principal_step_px, ev.principal_sigma_px.copy())
        gate = self.cfg.principal_point_gate * PRINCIPAL_POINT_SIGMA * max(self.image_size or (0, 0))
        for _ in range(self.cfg.principal_point_rounds):
            ev = self.focal_evidence
            if gate <= 0 or ev is None or ev.principal_step_px is None:
                break
            determined = ev.principal_sigma_px <= gate
            self.principal_applied |= determined
            step = np.where(determined, ev.principal_step_px, 0.0)
            if np.abs(step).max() < 0.05:
                break
            K = res.K.copy()
            K[:2, 2] += step
            res = bundle_adjust(replace(problem, rvecs=res.rvecs, tvecs=res.tvecs, points=res.points, K=K))
            self.focal_evidence = res.focal_evidence
        return res

    def _register_all(self, fixed_view: int, since_ba: int) -> int:
        """Register views greedily (most triangulated tracks first) until none can be; returns how many."""
        added = 0
        while True:
            pending = [v for v in range(self.num_views) if v not in self.w2c]
            if not pending:
                return added
            counts = []
            for v in pending:
                tv = self.tracks.track[self._obs_of_view[v]]
                counts.append(int(np.isfinite(self.X[tv, 0]).sum()))
            registered = False
            for k in np.argsort(counts)[::-1]:
                if counts[k] < self.cfg.min_pnp_inliers:
                    break
                if self.register_view(pending[k]):
                    registered = True
                    break
            if not registered:
                return added
            added += 1
            self.triangulate_new()
            since_ba += 1
            if since_ba >= self.cfg.ba_every or len(self.w2c) <= 4:
                self.adjust(refine_focal=self.refine_focal and len(self.w2c) >= 4, fixed_view=fixed_view,
                            max_iterations=self.cfg.intermediate_ba_iterations)
                since_ba = 0

    def has_parallax(self) -> bool:
        """Whether some pair of views moved in a way no rotation explains (``recon.default.parallax``)."""
        pairs = [(m.i, m.j, *self._track_pairs(m.i, m.j)[1:]) for m in self.matches]
        evidence = judge_parallax(pairs, self.K, not self.known_K, self.cfg.parallax)
        self.info.update(evidence.as_info())
        return evidence.has_parallax

    def run(self) -> SfmResult | None:
        """The window's structure, or None when it has no usable baseline (the caller falls back to
        rotation-only poses; ``self.info`` says why)."""
        if not self.has_parallax():
            return None
        init = self.initialise()
        if init is None:
            return None
        i, j, med = init
        self.info.update({"init_pair": [int(i), int(j)], "init_median_angle_deg": med})
        if med < self.cfg.degenerate_angle_deg:
            return None
        info = self.info
        since_ba = 0
        for _attempt in range(3):  # after a full adjustment more points exist: retry the stragglers
            added = self._register_all(i, since_ba)
            info["median_reproj_px"] = self.adjust(refine_focal=self.refine_focal and len(self.w2c) >= 3, fixed_view=i)
            self.triangulate_new()
            if not added or len(self.w2c) == self.num_views:
                break
        info["unregistered"] = [v for v in range(self.num_views) if v not in self.w2c]
        tri = np.nonzero(np.isfinite(self.X[:, 0]))[0]
        info["num_points"] = int(len(tri))
        return SfmResult(dict(self.w2c), self.K, self.X[tri], tri, False, info)
