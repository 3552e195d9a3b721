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

from recon.default.bundle import (
    FOCAL_SYSTEMATIC_PX,
    PRINCIPAL_POINT_SIGMA,
    BundleProblem,
    BundleResult,
    bundle_adjust,
    refine_points,
)
from recon.default.focal_profile import profile_focal
from recon.default.parallax import (
    ParallaxConfig,
    beyond_rotation,
    fit_rotation,
    judge_parallax,
    rotation_residual_px,
)
from recon.default.tracks import Tracks, undistorted_tracks
from recon.default.two_view import TwoViewConfig, essential_matrix
from recon.features import PairMatches
from stream4d.adjustment_budget import budgeted_points
from stream4d.geometry import radial_corner_shift_px


@dataclass
class SfmConfig:
    min_init_inliers: int = 40
    good_init_angle_deg: float = 3.0  # an initial pair with this much parallax is as good as any
    init_candidates: int = 8  # pairs given an essential-matrix fit when choosing the initial pair
    init_wide_candidates: int = 4  # and pairs with the most image motion (WindowSfm._candidate_pairs)
    init_attempts: int = 3  # initial pairs tried, best first, while views stay unregistered
    init_motion_px: float = 30.0  # median keypoint motion at which a pair ranks by its track count alone
    min_tri_angle_deg: float = 1.0  # new points need this much parallax
    # A point is kept only where it reprojects within this in every registered view that sees it.
    # SIFT at the model's resolution (512 px) reprojects with a median of 0.15-0.4 px, so 1.5 px is
    # 4-12 sigma; with 4 px, mismatches of 1.5-4 px stayed in the adjustments at nearly full weight
    # (docs/benchmarks.md, "The window SfM's reprojection gate").
    max_reproj_px: float = 1.5
    # A window's final adjustment leaves out observations that a short adjustment (of
    # intermediate_ba_iterations) leaves farther off their points than this, or than
    # final_ba_gate_ratio x its median: mismatches (a repeated texture verifies some), whose pull
    # under the Huber loss does not fade with the error and can drag a view held by few points far
    # off. (Before any adjustment a view registered last can be tens of pixels off a coarse
    # structure without a single mismatch.)
    final_ba_gate_px: float = 12.0
    final_ba_gate_ratio: float = 10.0
    min_pnp_inliers: int = 20
    # A view that sees too few triangulated tracks for PnP is registered from its pair with a
    # registered view: rotation and direction of travel from their essential matrix (at least
    # min_relative_inliers inliers), the length of travel from the triangulated tracks it sees (one
    # parameter: min_scale_points of them must agree) or from a second registered view's pair.
    # Wide baselines need it: a view can overlap the map through its own pairs and still see almost
    # none of the map's points (docs/default_backend.md, "Registration from a pair").
    relative_registration: bool = True
    min_relative_inliers: int = 30
    min_scale_points: int = 5
    scale_agreement: float = 0.15  # relative spread of the lengths those points agree on
    min_centre_angle_deg: float = 10.0  # two directions of travel that place a view's centre differ this much
    max_rotation_disagreement_deg: float = 5.0  # and the two pairs' rotations of the view agree this well
    ba_every: int = 3  # bundle-adjust after this many new registrations
    intermediate_ba_iterations: int = 5  # the final adjustment runs to convergence
    max_ba_points: int = 2500  # points in an adjustment (longest tracks first) ...
    max_ba_observations: int = 12000  # ... until their observations reach this: slow clips see each
    # track many times, and every observation costs each adjustment step (docs/default_backend.md)
    min_ba_points_per_view: int = 400  # but each view's longest tracks up to this many come first,
    # kept even where they alone exceed the budget (at most views x this many points)
    degenerate_angle_deg: float = 0.4  # an initial pair triangulating below this median angle has no
    # usable baseline
    parallax: ParallaxConfig = field(default_factory=ParallaxConfig)  # decides first whether there is any
    two_view: TwoViewConfig = field(default_factory=TwoViewConfig)  # essential matrices of pairs
    profile_focal: bool = True  # a self-calibrating final adjustment that does not converge searches the
    # focal length along its profile cost instead (recon/default/focal_profile.py)
    # The final self-calibrating adjustment moves the principal point to where the window's
    # observations put it, on axes whose sigma is at most this fraction of the prior's (bundle.
    # PRINCIPAL_POINT_SIGMA of the longest side). Off (0): on real images that sigma is several times
    # too small and the estimate hurt as often as it helped (docs/benchmarks.md).
    principal_point_gate: float = 0.0
    principal_point_rounds: int = 2  # Gauss-Newton steps on it, each followed by an adjustment
    # Errors common to a window's tracks (px per coordinate) that bound what it can know of the focal
    # length (bundle.FOCAL_SYSTEMATIC_PX); 0 trusts the reprojection noise alone.
    focal_systematic_px: float = FOCAL_SYSTEMATIC_PX
    # A self-calibrating window is adjusted once more at the end with one radial coefficient free
    # (bundle.BundleProblem.refine_radial), and takes that adjustment's poses, points and focal when its
    # lens bends the image corner by at least ``lens_min_corner_px`` (0: never): a pinhole fitted to a
    # barrel lens reads the focal length tens of percent off, differently in every window.
    lens_min_corner_px: float = 1.5
    lens_max_k1: float = 0.5  # a larger |k1| is not a lens this model describes (fisheyes): kept a pinhole
    lens_min_sigmas: float = 5.0  # and |k1| must be this many of its sigmas (forward motion trades it with f)


@dataclass
class SfmResult:
    w2c: dict[int, np.ndarray]  # view -> [4, 4] world-to-camera, for registered views
    K: np.ndarray  # [3, 3], refined if self-calibrated
    points: np.ndarray  # [P, 3], triangulated tracks
    point_track: np.ndarray  # int64 [P], track id of each point
    degenerate: bool = False  # no parallax: rotation-only poses, depth unusable
    info: dict = field(default_factory=dict)
    radial_k1: float = 0.0  # the lens the poses and points were adjusted through (0: a pinhole)

    @property
    def held_views(self) -> set[int]:
        """The views placed with their points: ``w2c``'s views but those placed at a rotation only
        (``info["rotation_only_views"]``: from a pair's rotation, no point holds them)."""
        return set(self.w2c) - set(self.info.get("rotation_only_views") or [])


# Views placed by rotation from a registered view would not follow an adjustment through a lens.
ROTATION_ONLY_WHY = "the window has rotation-only views"


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.ravel(t)
    return T


def ray_angle_deg(X: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Angle (deg) at points ``X`` [..., 3] between the rays from centres ``c1`` and ``c2`` ([3] or [..., 3])."""
    a = X - c1
    b = X - c2
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _centre(w2c: np.ndarray) -> np.ndarray:
    return -w2c[:3, :3].T @ w2c[:3, 3]


class WindowSfm:
    def __init__(self, tracks: Tracks, matches: list[PairMatches], num_views: int,
                 K: np.ndarray, known_K: bool, config: SfmConfig | None = None,
                 focal_prior: tuple[float, float] | None = None, refine_focal: bool | None = None,
                 image_size: tuple[int, int] | None = None, near_gap: int | None = None,
                 focal_sigma_limit: float | None = None, stream_k1: float = 0.0,
                 start_pair: tuple[int, int] | None = None, grow_k1: float = 0.0):
        self.tracks = tracks
        self.matches = matches
        # Views at most this many apart make the near pairs, whose own best candidates for the initial
        # pair are fitted too (None: no such distinction). A far pair can win the ranking by shared
        # tracks and motion with a look-alike's geometry: views of a repeated facade seen along the
        # direction of travel match one window with the next one along, which the epipolar test cannot
        # tell.
        self.near_gap = near_gap
        self.num_views = num_views
        self.K = K.astype(np.float64).copy()
        self.known_K = known_K  # False: the parallax test leaves the focal length free
        self.refine_focal = not known_K if refine_focal is None else refine_focal  # in bundle adjustment
        # A self-calibrated focal whose sigma is above this says nothing (the caller holds such a window's
        # focal instead): the lens is not tried on it, since k1 only loosens it further. None: no limit.
        self.focal_sigma_limit = focal_sigma_limit
        # The stream's lens (``recon.default.calibration.StreamFocal.lens_k1``): a window that does not refine
        # its own focal (the stream's, fixed or held) is adjusted through it once its views are in.
        self.stream_k1 = float(stream_k1)
        # A lens to grow the structure through (k1 at ``K``; 0: a pinhole): the tracks are undistorted
        # through it while views register and points triangulate, and the window is adjusted through it
        # on the pixels as seen (``_through_grown_lens``). A pinhole solve of a strongly bending lens
        # turns its views to explain the bend, and no later adjustment undoes that (recon/default/lens_search.py).
        self.grow_k1 = float(grow_k1)
        # The initial pair to start from when its essential matrix fits (no other is ranked then): a
        # structure grown to be compared with another starts where that one did.
        self.start_pair = start_pair
        self.cfg = config or SfmConfig()
        self.w2c: dict[int, np.ndarray] = {}
        self.X = np.full((tracks.num_tracks, 3), np.nan)  # NaN until triangulated
        # keypoint lookup: (view, track) -> observation row
        self._obs_of_view = [tracks.in_view(v) for v in range(num_views)]
        self.info: dict = {}  # evidence of the last run, kept when it finds no parallax
        self._parallax_pair: tuple[int, int] | None = None  # the pair that showed it, once judged
        # (focal px, weight) for self-calibrating adjustments: the stream's estimate so far
        self.focal_prior = focal_prior
        self.focal_evidence = None  # bundle.FocalEvidence of the last self-calibrating adjustment
        self.image_size = image_size  # (W, H) the tracks' pixels are in; None: centred on K's principal point
        # What the last self-calibrating final adjustment's observations say about the principal
        # point: (estimate [2] px, sigma [2] px), or None; and the axes moved to it (principal_point_gate)
        self.principal_evidence: tuple[np.ndarray, np.ndarray] | None = None
        self.principal_applied = np.zeros(2, bool)
        self.radial_k1 = 0.0  # the lens the final self-calibrating adjustment kept (_lens_pass; 0: a pinhole)

    # ---- two-view initialisation -------------------------------------------------
    def _track_pairs(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tracks seen in both views: (track ids, uv in i, uv in j)."""
        oi, oj = self._obs_of_view[i], self._obs_of_view[j]
        ti, tj = self.tracks.track[oi], self.tracks.track[oj]
        common, ai, aj = np.intersect1d(ti, tj, return_indices=True)
        return common, self.tracks.uv[oi[ai]], self.tracks.uv[oj[aj]]

    def _evaluate_pair(self, i: int, j: int):
        """(score, median angle deg, T1 [4, 4], inlier track ids, points [N, 3], translated) of the
        pair's essential-matrix fit, or None."""
        tid, ui, uj = self._track_pairs(i, j)
        if len(tid) < self.cfg.min_init_inliers:
            return None
        found = self._essential(ui, uj)
        if found is None:
            return None
        E, mask = found
        n, R, t, mask2 = cv2.recoverPose(E, ui, uj, self.K, mask=mask.copy())
        inl = mask2.ravel().astype(bool)
        if inl.sum() < self.cfg.min_init_inliers:
            return None
        T0, T1 = np.eye(4), _pose(R, t)
        X = self._triangulate_pair(T0, T1, ui[inl], uj[inl])
        ang = ray_angle_deg(X, _centre(T0), _centre(T1))
        med = float(np.median(ang))
        score = inl.sum() * min(med / self.cfg.good_init_angle_deg, 1.0)
        return score, med, T1, tid[inl], X, self._translated(ui[inl], uj[inl])

    def _essential(self, ua: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Essential matrix [3, 3] of pixels ``ua`` -> ``ub`` ([N, 2]) and its inlier mask, or None
        (recon/default/two_view.py)."""
        return essential_matrix(ua, ub, self.K, self.cfg.two_view)

    def _triangulate_pair(self, Ta, Tb, ua, ub) -> np.ndarray:
        Pa = self.K @ Ta[:3]
        Pb = self.K @ Tb[:3]
        Xh = cv2.triangulatePoints(Pa, Pb, ua.T.astype(np.float64), ub.T.astype(np.float64))
        return (Xh[:3] / Xh[3]).T

    def _candidate_pairs(self, matches: list[PairMatches]) -> list[tuple[int, int]]:
        """Pairs worth an essential-matrix fit: the ``init_candidates`` with most shared tracks that
        moved far (image motion is a cheap stand-in for parallax; the fit measures the real angle),
        then the ``init_wide_candidates`` that moved farthest, and the pair that showed the window's
        parallax (``has_parallax``), whose motion no rotation explains. Track counts favour
        neighbours, whose baseline can be too short for the points to pass ``min_tri_angle_deg``;
        image motion favours a turn on the spot."""
        scored, moved = [], []
        for m in matches:
            _, ui, uj = self._track_pairs(m.i, m.j)
            if len(ui) >= self.cfg.min_init_inliers:
                motion = float(np.median(np.linalg.norm(ui - uj, axis=1)))
                scored.append((len(ui) * min(motion / self.cfg.init_motion_px, 1.0), m.i, m.j))
                moved.append((motion, m.i, m.j))
        scored.sort(reverse=True)
        moved.sort(reverse=True)
        chosen = [(i, j) for _, i, j in scored[: self.cfg.init_candidates]]
        wide = [(i, j) for _, i, j in moved if (i, j) not in chosen]
        chosen += wide[: self.cfg.init_wide_candidates]
        pairs = {(m.i, m.j) for m in matches}
        if self._parallax_pair in pairs and self._parallax_pair not in chosen:
            chosen.append(self._parallax_pair)
        return chosen

    def _initial_pairs(self) -> list[tuple]:
        """Candidate initial pairs with an essential-matrix fit, best score first:
        (score, median angle deg, T1 [4, 4], track ids, points [N, 3], i, j). Pairs a camera rotation
        explains come after all others, whatever their score: with the focal length unknown (or
        wrong), a turn on the spot fits an essential matrix with a made-up baseline and a wide
        triangulation angle, and a structure started from it is wrong from its first two views.
        The near pairs (``near_gap``) rank their own candidates too: far pairs share as many tracks and
        move farther, so they can fill every place while a near pair's fit scores best, and a far
        pair's geometry can be a look-alike's. ``start_pair``, when it fits, is the only candidate."""
        if self.start_pair is not None and (res := self._evaluate_pair(*self.start_pair)) is not None:
            return [(*res[:5], *self.start_pair)]
        candidates = self._candidate_pairs(self.matches)
        near = [] if self.near_gap is None else [m for m in self.matches if m.j - m.i <= self.near_gap]
        if 0 < len(near) < len(self.matches):  # with only near pairs, the ranking above is theirs
            candidates += [p for p in self._candidate_pairs(near) if p not in candidates]
        evaluated = []
        for i, j in candidates:
            res = self._evaluate_pair(i, j)
            if res is not None:
                evaluated.append((not res[5], -res[0], len(evaluated), (*res[:5], i, j)))
        evaluated.sort()  # the first of equal scores stays first
        return [e[-1] for e in evaluated]

    def _translated(self, ui: np.ndarray, uj: np.ndarray) -> bool:
        """Whether a pair's inlier matches ``ui`` -> ``uj`` (pixels [N, 2]) moved by more than a
        rotation of the camera explains (the window's parallax test, ``recon.default.parallax``, on
        this pair alone)."""
        cfg = self.cfg.parallax
        if len(ui) < cfg.min_matches:
            return True  # too few to judge: the score alone decides, as before the test
        return beyond_rotation(rotation_residual_px(ui, uj, self.K, not self.known_K, cfg), ui, uj, cfg)

    def _start(self, pair: tuple) -> tuple[int, int, float]:
        """Register the initial pair (an entry of ``_initial_pairs``) and its points."""
        score, med, T1, tid, X, i, j = pair
        self.w2c[i] = np.eye(4)
        self.w2c[j] = T1
        if med >= self.cfg.degenerate_angle_deg:
            ok = self._accept_points(tid, X, _centre(self.w2c[i]), _centre(T1))
            self.X[tid[ok]] = X[ok]
        return i, j, med

    def initialise(self) -> tuple[int, int, float] | None:
        """Start from the best initial pair: (i, j, its median triangulation angle), or None."""
        pairs = self._initial_pairs()
        return self._start(pairs[0]) if pairs else None

    def _snapshot(self) -> tuple:
        return (dict(self.w2c), self.X.copy(), self.K.copy(), dict(self.info), self.focal_evidence,
                self.principal_evidence, self.principal_applied.copy(), self.radial_k1)

    def _restore(self, state: tuple) -> None:
        w2c, X, K, info, focal, principal, applied, radial = state
        self.w2c, self.X, self.K, self.info = dict(w2c), X.copy(), K.copy(), dict(info)
        self.focal_evidence, self.principal_evidence, self.principal_applied = focal, principal, applied.copy()
        self.radial_k1 = radial

    # ---- registration -----------------------------------------------------------
    def _accept_points(self, tid: np.ndarray, X: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
        """Points with positive depth and small reprojection error in every registered view that
        sees them, and enough parallax between the centres ``ca``/``cb`` ([3] or [N, 3]) they came from."""
        ok = np.isfinite(X).all(axis=1) & (ray_angle_deg(X, ca, cb) >= self.cfg.min_tri_angle_deg)
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

    # ---- registration from a pair ------------------------------------------------
    def _relative_pose(self, r: int, v: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Motion from registered view ``r`` to view ``v`` by the essential matrix of their shared
        tracks: (R [3, 3], t [3] unit) with x_v = R x_r + s t in camera coordinates, s unknown."""
        _, ur, uv = self._track_pairs(r, v)
        if len(ur) < self.cfg.min_relative_inliers:
            return None
        found = self._essential(ur, uv)
        if found is None:
            return None
        E, mask = found
        inliers, R, t, _ = cv2.recoverPose(E, ur, uv, self.K, mask=mask.copy())
        if inliers < self.cfg.min_relative_inliers:
            return None
        return R, t.ravel()

    def _travel_from_points(self, v: int, r: int, R: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray] | None:
        """Length s of the travel ``t`` from view ``r`` to ``v`` from the triangulated tracks ``v``
        sees: each point alone gives s (where its pixel's ray meets the line the point moves on as s
        varies); the length most points agree with (within ``scale_agreement`` of it) is their
        median. Returns (s, the agreeing tracks), or None unless ``min_scale_points`` agree on a
        positive length. Lengths, not pixels, are compared: the pair's rotation, fitted with the
        focal length as it stands, may still be off by a few pixels that the adjustment fixes."""
        rows = self._obs_of_view[v]
        tv = self.tracks.track[rows]
        has = np.isfinite(self.X[tv, 0])
        if has.sum() < self.cfg.min_scale_points:
            return None
        Tr = self.w2c[r]
        a = (self.X[tv[has]] @ Tr[:3, :3].T + Tr[:3, 3]) @ R.T  # [N, 3] in v's frame at s = 0
        y = np.c_[self.tracks.uv[rows[has]], np.ones(int(has.sum()))] @ np.linalg.inv(self.K).T
        ya, yt = np.cross(y, a), np.cross(y, t)
        norm2 = (yt ** 2).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lengths = -(ya * yt).sum(1) / norm2
        ok = np.isfinite(lengths) & (lengths > 0)
        if ok.sum() < self.cfg.min_scale_points:
            return None
        log_len = np.log(lengths[ok])
        votes = (np.abs(log_len[:, None] - log_len[None]) <= np.log1p(self.cfg.scale_agreement)).sum(1)
        centre = log_len[int(np.argmax(votes))]
        agree = np.abs(log_len - centre) <= np.log1p(self.cfg.scale_agreement)
        if agree.sum() < self.cfg.min_scale_points:
            return None
        return float(np.exp(np.median(log_len[agree]))), tv[has][ok][agree]

    def _travel_from_second_pair(self, v: int, r: int, R: np.ndarray, t: np.ndarray,
                                 others: list[tuple[int, tuple[np.ndarray, np.ndarray]]]) -> tuple[float, np.ndarray] | None:
        """Length of the travel ``t`` from view ``r`` to ``v`` where it meets the direction of travel
        from another registered view whose pair with ``v`` has its own essential matrix (``others``:
        (view, (R, t)) as ``_relative_pose`` gives them): the centre of ``v`` is where the two lines
        from the registered centres cross. The lines must differ by ``min_centre_angle_deg`` (else the
        crossing is ill-conditioned) and both lengths must be positive. Returns (length, the
        tracks ``v`` shares with that other view) or None."""
        c_r = _centre(self.w2c[r])
        d_r = -(R @ self.w2c[r][:3, :3]).T @ t  # world direction of travel from r to v
        for r2, (R2, t2) in others:
            d_2 = -(R2 @ self.w2c[r2][:3, :3]).T @ t2
            if ray_angle_deg(d_r, np.zeros(3), d_2) < self.cfg.min_centre_angle_deg:
                continue
            lengths = np.linalg.lstsq(np.stack([d_r, -d_2], axis=1), _centre(self.w2c[r2]) - c_r, rcond=None)[0]
            if (lengths > 0).all():
                return float(lengths[0]), self._track_pairs(r2, v)[0]
        return None

    def register_from_pair(self, v: int, fixed_view: int) -> bool:
        """Register ``v`` when it sees too few triangulated tracks for PnP
        (``SfmConfig.relative_registration``). Rotation and direction of travel come from its
        strongest pair in the window, which must be with a registered view: a weaker pair waits
        until the strong partner is placed (a repeated texture can verify a few dozen false matches,
        rarely hundreds). The length of travel comes from the map's points ``v`` sees or, when too
        few agree, from a second registered view's pair that puts ``v`` at the same rotation. The
        view is kept only if, after triangulating its pairs' tracks and adjusting, at least
        ``min_scale_points`` of the tracks that set the length still reproject within
        ``max_reproj_px`` in it."""
        shared = {r: len(self._track_pairs(r, v)[0]) for r in range(self.num_views) if r != v}
        r = max(shared, key=shared.get)
        if r not in self.w2c or shared[r] < self.cfg.min_relative_inliers:
            return False
        motion = self._relative_pose(r, v)
        if motion is None:
            return False
        R, t = motion
        R_v = R @ self.w2c[r][:3, :3]
        agreeing = []  # other registered views whose pair with v gives v the same rotation
        for r2 in sorted(self.w2c, key=lambda k: -shared[k]):
            if r2 == r or shared[r2] < self.cfg.min_relative_inliers:
                continue
            m = self._relative_pose(r2, v)
            if m is not None and _rotation_deg(m[0] @ self.w2c[r2][:3, :3] @ R_v.T) <= self.cfg.max_rotation_disagreement_deg:
                agreeing.append((r2, m))
        travel = self._travel_from_points(v, r, R, t) or self._travel_from_second_pair(v, r, R, t, agreeing)
        if travel is None:
            return False
        length, placed_by = travel
        before = self._snapshot()
        Tr = self.w2c[r]
        self.w2c[v] = _pose(R_v, R @ Tr[:3, 3] + length * t)
        self.triangulate_new()
        self.adjust(refine_focal=self.refine_focal and len(self.w2c) >= 4, fixed_view=fixed_view,
                    max_iterations=self.cfg.intermediate_ba_iterations)
        if self._reprojecting(v, placed_by) >= self.cfg.min_scale_points:
            return True
        self._restore(before)
        return False

    def register_rotations(self) -> list[int]:
        """Views the structure could not take that a turn of the camera at a registered view's place
        explains: a turn on the spot past what the window's points cover, whose views see no point
        triangulated from views elsewhere. Each such view, taken in the order of its strongest pair
        with a registered (or so placed) view, gets that view's centre and the rotation that maps
        their shared tracks (``parallax.fit_rotation`` with the window's K), when that rotation
        leaves less motion than the window's parallax test asks for (``ParallaxConfig.min_ratio``
        times the pair's matching noise). The caller gives them no depth. Returns them."""
        cfg = self.cfg.parallax
        placed: list[int] = []
        refused: set[int] = set()
        shared: dict[tuple[int, int], int] = {}  # (placed view, view) -> tracks they share
        while True:
            best = None
            for v in range(self.num_views):
                if v in self.w2c or v in refused:
                    continue
                for r in self.w2c:
                    if (r, v) not in shared:
                        shared[(r, v)] = len(self._track_pairs(r, v)[0])
                    n = shared[(r, v)]
                    if n >= self.cfg.min_relative_inliers and (best is None or n > best[0]):
                        best = (n, r, v)
            if best is None:
                return placed
            _, r, v = best
            _, ur, uv = self._track_pairs(r, v)
            R, residual = fit_rotation(ur, uv, self.K, False, cfg)
            if beyond_rotation(residual, ur, uv, cfg):
                refused.add(v)  # it moved: a view the structure should have taken, or a mismatch
                continue
            R_v = R @ self.w2c[r][:3, :3]
            self.w2c[v] = _pose(R_v, -R_v @ _centre(self.w2c[r]))
            placed.append(v)

    def _drop_unsupported(self, initial_pair: tuple[int, int]) -> list[int]:
        """Unregisters the views (never those of the ``initial_pair``) that the final structure does
        not hold: fewer than ``min_pnp_inliers`` of their triangulated tracks reproject within
        ``max_reproj_px``. An adjustment can carry a view held by a handful of points anywhere; such
        a view is better left unposed (the pipeline tracks it or says so) than posed tens of degrees
        off. Points left with fewer than two registered views are forgotten with them (they were
        triangulated from a dropped pose). Returns the views."""
        dropped = []
        for v in sorted(self.w2c):
            if v in initial_pair:
                continue
            tv = self.tracks.track[self._obs_of_view[v]]
            if self._reprojecting(v, tv[np.isfinite(self.X[tv, 0])]) < self.cfg.min_pnp_inliers:
                dropped.append(v)
        if not dropped:
            return dropped
        for v in dropped:
            del self.w2c[v]
        seen = np.bincount(self.tracks.track[np.isin(self.tracks.view, sorted(self.w2c))],
                           minlength=self.tracks.num_tracks)
        self.X[seen < 2] = np.nan
        return dropped

    def _reprojecting(self, v: int, tids: np.ndarray) -> int:
        """How many of the tracks ``tids`` have a point that reprojects within ``max_reproj_px`` in
        registered view ``v``."""
        rows = self._obs_of_view[v]
        sel = rows[np.isin(self.tracks.track[rows], tids)]
        X = self.X[self.tracks.track[sel]]
        pc = X @ self.w2c[v][:3, :3].T + self.w2c[v][:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = pc @ self.K.T
            err = np.linalg.norm(proj[:, :2] / proj[:, 2:3] - self.tracks.uv[sel], axis=1)
        return int(((pc[:, 2] > 0) & (err <= self.cfg.max_reproj_px)).sum())

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
        if len(tids) == 0:  # every such track has one registered view so far
            return 0
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
    def adjust(self, refine_focal: bool, fixed_view: int, max_iterations: int = 40, radial: bool = False) -> float:
        """Adjust the registered views and triangulated points (the focal too when ``refine_focal``, a
        radial coefficient too when ``radial``); returns the median reprojection error (px)."""
        views = np.array(sorted(self.w2c))
        vslot = np.full(self.num_views, -1)
        vslot[views] = np.arange(len(views))
        tri = np.nonzero(np.isfinite(self.X[:, 0]))[0]
        seen = np.bincount(self.tracks.track[np.isin(self.tracks.view, views)], minlength=self.tracks.num_tracks)
        if len(tri) > self.cfg.max_ba_points or seen[tri].sum() > self.cfg.max_ba_observations:
            tri = self._budgeted_points(tri, views)
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
            focal_systematic_px=self.cfg.focal_systematic_px,
            radial_k1=self.radial_k1,
            refine_radial=radial,
        )
        if max_iterations > self.cfg.intermediate_ba_iterations:
            problem, rows = self._without_mismatches(problem, rows)
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
        self.radial_k1 = res.radial_k1
        # Forget points that stay far off after adjustment: they are mismatches.
        bad_rows = rows[res.residuals_px > self.cfg.max_reproj_px]
        bad_tracks = np.unique(self.tracks.track[bad_rows])
        if max_iterations > self.cfg.intermediate_ba_iterations:  # the window's output: all consistent
            self._follow_adjustment(res, vslot, pslot)
        self.X[bad_tracks] = np.nan
        return float(np.median(res.residuals_px))

    def _budgeted_points(self, tri: np.ndarray, views: np.ndarray) -> np.ndarray:
        """The triangulated tracks ``tri`` an adjustment of ``views`` holds when they exceed its budget,
        sorted (``stream4d.adjustment_budget``): each registered view's ``min_ba_points_per_view`` longest
        ones, then the longest overall up to ``max_ba_points`` points and ``max_ba_observations``
        observations, at least 100. The rest keep their triangulation."""
        rows = np.nonzero(np.isin(self.tracks.view, views) & np.isin(self.tracks.track, tri))[0]
        return budgeted_points(self.tracks.track[rows], self.tracks.view[rows], self.cfg.min_ba_points_per_view,
                               self.cfg.max_ba_points, self.cfg.max_ba_observations, min_points=100)

    def _without_mismatches(self, problem: BundleProblem, rows: np.ndarray) -> tuple[BundleProblem, np.ndarray]:
        """``problem`` and its observation ``rows`` without the observations a short adjustment leaves
        beyond ``final_ba_gate_px`` / ``final_ba_gate_ratio`` x its median error (from the same start)."""
        err = bundle_adjust(problem, max_iterations=self.cfg.intermediate_ba_iterations).residuals_px
        keep = err <= max(self.cfg.final_ba_gate_px, self.cfg.final_ba_gate_ratio * float(np.median(err)))
        if keep.all():
            return problem, rows
        return replace(problem, obs_view=problem.obs_view[keep], obs_point=problem.obs_point[keep],
                       obs_uv=problem.obs_uv[keep]), rows[keep]

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
        X, err = refine_points(res.rvecs, res.tvecs, self.X[held], res.K, obs_view, obs_point, self.tracks.uv[rows],
                               radial_k1=res.radial_k1)
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
            if not registered and self.cfg.relative_registration:
                # No view sees enough of the map for PnP: one that overlaps a registered view
                # through its own pair can still be placed, the one with the strongest pair first.
                strongest = [max(len(self._track_pairs(r, v)[0]) for r in self.w2c) for v in pending]
                for k in np.argsort(strongest, kind="stable")[::-1]:
                    if strongest[k] < self.cfg.min_relative_inliers:
                        break
                    if self.register_from_pair(pending[k], fixed_view):
                        registered = True
                        self.info["registered_from_pair"] = self.info.get("registered_from_pair", 0) + 1
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
        self._parallax_pair = evidence.pair if evidence.has_parallax else None
        return evidence.has_parallax

    def run(self) -> SfmResult | None:
        """The window's structure (``_structure``), through the lens ``grow_k1`` when it has one, or None
        when it has no usable baseline."""
        if not self.grow_k1:
            result = self._structure()
            return None if result is None else self._lens_pass(result)
        raw, start_K = self.tracks, self.K.copy()
        self._use_tracks(undistorted_tracks(raw, self.K, self.grow_k1))
        try:
            result = self._structure()
        finally:
            self._use_tracks(raw)
        return None if result is None else self._through_grown_lens(start_K)

    def _use_tracks(self, tracks: Tracks) -> None:
        self.tracks = tracks
        self._obs_of_view = [tracks.in_view(v) for v in range(self.num_views)]

    def _through_grown_lens(self, start_K: np.ndarray) -> SfmResult:
        """The structure grown on tracks undistorted through ``grow_k1`` at ``start_K``, adjusted on the
        pixels as seen through the same lens: undistorting through focal f0 and coefficient k then
        seeing through a pinhole of focal f is exactly a lens of coefficient k (f / f0)^2 at focal f."""
        self.radial_k1 = self.grow_k1 * (float(self.K[0, 0]) / float(start_K[0, 0])) ** 2
        grown_median = self.info.get("median_reproj_px")
        fixed = int(self.info.get("init_pair", [min(self.w2c)])[0])
        median = self.adjust(refine_focal=self.refine_focal, fixed_view=fixed)
        # The candidate only has to start the structure in the right basin: the coefficient is then
        # adjusted freely, and taken where it fits the pixels better.
        before = self._snapshot()
        freed = self.adjust(refine_focal=self.refine_focal, fixed_view=fixed, radial=True)
        if freed < median:
            median = freed
        else:
            self._restore(before)
        lens = {"kept": bool(np.isfinite(median)), "grown_through": True, "radial_k1": round(self.radial_k1, 6),
                "corner_px": round(self._corner_bend_px(), 3), "radial_sigma": None,
                "focal_px": round(float(self.K[0, 0]), 3), "median_reproj_px": round(float(median), 4),
                "grown_median_reproj_px": None if grown_median is None else round(float(grown_median), 4)}
        return self._through_lens(lens, median)

    def _corner_bend_px(self) -> float:
        """How far (px) the window's lens (``radial_k1`` at ``K``) moves the image corner."""
        size = np.asarray(self.image_size if self.image_size is not None else 2.0 * self.K[:2, 2] + 1.0, np.float64)
        return radial_corner_shift_px(self.radial_k1, float(self.K[0, 0]), (size - 1.0) / 2.0)

    def _structure(self) -> SfmResult | None:
        """The window's structure, or None when it has no usable baseline (the caller falls back to
        rotation-only poses; ``self.info`` says why). A structure that leaves views unregistered is
        grown again from the next initial pairs (``init_attempts`` in all), and the one that
        registers the most views is kept: with wide baselines, which pair the map starts from
        decides which views can join it."""
        if not self.has_parallax():
            return None
        pairs = self._initial_pairs()
        if not pairs:  # parallax, but seen on too few matches to start a structure from
            self.info["no_structure"] = f"no pair of views has {self.cfg.min_init_inliers} inlier matches to start from"
            return None
        if pairs[0][1] < self.cfg.degenerate_angle_deg:  # the best pair has no baseline: none has
            i, j, med = self._start(pairs[0])
            self.info.update({"init_pair": [int(i), int(j)], "init_median_angle_deg": med})
            self.info["no_structure"] = f"the widest pair triangulates at {med:.2f} degrees"
            return None
        usable = [p for p in pairs if p[1] >= self.cfg.degenerate_angle_deg][: self.cfg.init_attempts]
        fresh = self._snapshot()
        best: tuple[SfmResult, tuple] | None = None
        for attempt, pair in enumerate(usable):
            if attempt:
                self._restore(fresh)
            result = self._grow(pair)
            if best is None or len(result.w2c) > len(best[0].w2c):
                best = (result, self._snapshot())
            if len(result.w2c) == self.num_views:
                break
        result, state = best
        self._restore(state)
        result.info["init_attempts"] = self.info["init_attempts"] = attempt + 1
        return result

    def _lens_pass(self, result: SfmResult) -> SfmResult:
        """``result`` adjusted again with a radial coefficient free when the window self-calibrates and
        determines its focal, kept when that lens bends the image corner by ``lens_min_corner_px`` or more
        and |k1| is at least ``lens_min_sigmas`` of its sigmas and at most ``lens_max_k1`` (``info["lens"]`` says what
        was found either way). Registration and triangulation stay pinhole: the lens enters once the
        window's views are all in, so that only its poses, points, focal and focal evidence follow it."""
        cfg = self.cfg
        if not self.refine_focal and self.stream_k1 and not self.known_K:
            return self._stream_lens_pass(result)
        if not (self.refine_focal and cfg.lens_min_corner_px > 0 and len(self.w2c) >= 4):
            return result
        why = None
        if self.info.get("rotation_only_views"):  # placed from a registered view, they would not follow it
            why = ROTATION_ONLY_WHY
        elif self.focal_sigma_limit is not None and not (
                self.focal_evidence is not None and self.focal_evidence.sigma_log <= self.focal_sigma_limit):
            why = "the window does not determine its focal length"
        if why is not None:
            self.info["lens"] = result.info["lens"] = {"kept": False, "why": why}
            return result
        before = self._snapshot()
        fixed = int(self.info.get("init_pair", [min(self.w2c)])[0])
        pinhole = self.info.get("median_reproj_px")
        median = self.adjust(refine_focal=True, fixed_view=fixed, radial=True)
        f, k1 = float(self.K[0, 0]), float(self.radial_k1)
        bend = self._corner_bend_px()
        ev = self.focal_evidence
        sigma = ev.radial_sigma if ev is not None and ev.radial_sigma is not None else float("inf")
        kept = bool(np.isfinite(median) and bend >= cfg.lens_min_corner_px
                    and cfg.lens_min_sigmas * sigma <= abs(k1) <= cfg.lens_max_k1)
        lens = {"kept": kept, "radial_k1": round(k1, 6), "corner_px": round(bend, 3),
                "radial_sigma": round(sigma, 6) if np.isfinite(sigma) else None,
                "focal_px": round(f, 3), "median_reproj_px": round(float(median), 4),
                "pinhole_median_reproj_px": None if pinhole is None else round(float(pinhole), 4)}
        return self._settle_lens(result, lens, before, median)

    def _stream_lens_pass(self, result: SfmResult) -> SfmResult:
        """``result`` adjusted again through the stream's lens (``stream_k1``, held, as the focal is),
        kept when that lowers the median reprojection error (a lens of another camera or zoom would not);
        ``info["lens"]`` says which, with ``"stream": true``."""
        lens = {"kept": False, "stream": True, "radial_k1": round(self.stream_k1, 6)}
        if self.info.get("rotation_only_views"):
            self.info["lens"] = result.info["lens"] = {**lens, "why": ROTATION_ONLY_WHY}
            return result
        before = self._snapshot()
        pinhole = self.info.get("median_reproj_px")
        self.radial_k1 = self.stream_k1
        median = self.adjust(refine_focal=False, fixed_view=int(self.info.get("init_pair", [min(self.w2c)])[0]))
        kept = bool(np.isfinite(median) and (pinhole is None or median < pinhole))
        lens.update(kept=kept, median_reproj_px=round(float(median), 4),
                    pinhole_median_reproj_px=None if pinhole is None else round(float(pinhole), 4))
        return self._settle_lens(result, lens, before, median)

    def _settle_lens(self, result: SfmResult, lens: dict, before: tuple, median: float) -> SfmResult:
        """The window through the lens just adjusted when ``lens["kept"]``, else ``result`` as it was before
        (``before``: the snapshot taken ahead of that adjustment); ``info["lens"]`` says which."""
        if not lens["kept"]:
            self._restore(before)
            self.info["lens"] = result.info["lens"] = lens
            return result
        return self._through_lens(lens, median)

    def _through_lens(self, lens: dict, median: float) -> SfmResult:
        """The window as adjusted through its lens (``lens``: its record, ``median``: its median
        reprojection error, px)."""
        self.info.update(lens=lens, median_reproj_px=median)
        tri = np.nonzero(np.isfinite(self.X[:, 0]))[0]
        self.info["num_points"] = int(len(tri))
        return SfmResult(dict(self.w2c), self.K, self.X[tri], tri, False, self.info, float(self.radial_k1))

    def _grow(self, pair: tuple) -> SfmResult:
        """Structure from the initial ``pair``: register, triangulate and adjust until no view joins."""
        i, j, med = self._start(pair)
        info = self.info
        info.update({"init_pair": [int(i), int(j)], "init_median_angle_deg": med})
        since_ba = 0
        for _attempt in range(3):  # after a full adjustment more points exist: retry the stragglers
            added = self._register_all(i, since_ba)
            info["median_reproj_px"] = self.adjust(refine_focal=self.refine_focal and len(self.w2c) >= 3, fixed_view=i)
            self.triangulate_new()
            if not added or len(self.w2c) == self.num_views:
                break
        info["unsupported_views"] = self._drop_unsupported(initial_pair=(i, j))
        info["rotation_only_views"] = self.register_rotations()
        info["unregistered"] = [v for v in range(self.num_views) if v not in self.w2c]
        tri = np.nonzero(np.isfinite(self.X[:, 0]))[0]
        info["num_points"] = int(len(tri))
        return SfmResult(dict(self.w2c), self.K, self.X[tri], tri, False, info)
