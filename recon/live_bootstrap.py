"""A live stream's first map from two views, before its first window is aligned.

The first aligned window needs ``live.first_window`` parallax keyframes and then the window
model and the alignment: seconds in which ``recon.live_tracking.MapTracker`` has nothing to track
against, so every frame of that time waits for the window. Monocular SLAM starts instead from two
views, and so does ``TwoViewBootstrap``:

1. **Reference.** Corners on the first frame, followed frame to frame with Lucas-Kanade
   (forward-backward checked, ``recon.tracking.follow_points``); each frame's positions are kept.
   When fewer than ``min_tracks`` survive (or ``max_frames`` went by) the current frame becomes
   the reference instead.
2. **Parallax gate.** Every ``check_every`` frames, the motion of the tracks since the reference
   that no camera rotation explains (``recon.default.parallax.rotation_residual_px``, the measure
   the keyframer uses; focal length free when the intrinsics are the prior) must reach
   ``min_parallax`` of the image's longest side before the two-view geometry is tried. The gate
   only spares the geometry frames that plainly have no parallax: the geometry's own checks
   (step 3) decide, since that residual, with the focal length free, stays small long after the
   views triangulate well (docs/benchmarks.md, "Stop 27").
3. **Two-view geometry.** Essential matrix (RANSAC) and, on the same tracks, a homography
   (RANSAC). Refused (the next frames bring more parallax) when: fewer than ``min_points``
   inliers; the homography explains at least ``max_homography_share`` as many tracks as the
   essential matrix (a rotation, or a plane seen with little translation: ORB-SLAM's model
   choice, here a refusal, since a plane needs no map this early); after ``recoverPose`` and
   triangulation, fewer than ``min_points`` points in front of both views and reprojecting within
   ``max_reprojection_px``, or a median triangulation angle under ``min_angle_deg``.
4. **Scale.** A monocular pair has none: the points' median depth in the reference is 1. The
   world is the reference camera's (its pose is the identity).
5. **Map.** The points with their positions in the init frame go to the ``MapTracker``; every
   frame held since the reference is posed by PnP-RANSAC against the points from its own tracked
   positions, so it waited only for the parallax, not for the first window.

Poses of the bootstrap map are **provisional**: in the bootstrap world, with the intrinsics the
frames carry or else the prior the default backend's self-calibration starts from
(``DefaultModelConfig.focal_prior`` x the longest side, principal point at the centre). The
tracker moves them into the first aligned window's world by a Sim(3) (``pose_sim3``) and they
never reach the output folder: the windows pose every frame again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from recon.default.model import DefaultModelConfig, prior_intrinsics
from recon.default.parallax import ParallaxConfig, rotation_residual_px
from recon.tracking import TrackingConfig, follow_points, interpolate_pose, solve_pnp, triangulate_views
from stream4d.geometry import Sim3, similarity_from_poses


@dataclass(frozen=True)
class BootstrapConfig:
    """See the module doc. ``min_parallax`` and ``max_homography_share`` are shares (of the image's
    longest side; of the essential matrix's inliers); angles in degrees, distances in pixels of the
    frames as they arrive."""

    corners: int = 400
    min_tracks: int = 60
    fb_error_px: float = 1.0
    lk_window: int = 15
    min_parallax: float = 0.002
    check_every: int = 2
    ransac_px: float = 1.0
    min_points: int = 50
    max_homography_share: float = 0.8
    min_angle_deg: float = 0.5
    max_reprojection_px: float = 2.0
    max_frames: int = 600
    pnp_reprojection_px: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.min_parallax < 1 or not 0 < self.max_homography_share <= 1:
            raise ValueError("bootstrap min_parallax and max_homography_share must be in (0, 1]")
        if self.min_points < 8 or self.min_tracks < self.min_points or self.check_every < 1:
            raise ValueError("bootstrap needs min_tracks >= min_points >= 8 and check_every >= 1")


@dataclass
class BootstrapMap:
    """The two-view map: world = the reference camera, median reference depth 1."""

    grey: np.ndarray  # uint8 [H, W] the init frame
    xy: np.ndarray  # float32 [M, 2] the points in it
    X: np.ndarray  # float64 [M, 3] world
    K: np.ndarray  # [3, 3] pixels of the frames
    reference: int  # Frame.index of the reference (pose identity)
    index: int  # Frame.index of the init frame
    poses: dict[int, tuple[float, np.ndarray]]  # Frame.index -> (timestamp, c2w [4, 4]): reference .. init
    median_angle_deg: float
    inliers: int  # essential-matrix inliers
    homography_share: float  # homography inliers over essential inliers


@dataclass
class _Held:
    index: int
    timestamp: float
    xy: np.ndarray  # float32 [N, 2] every track's position (meaningful where alive)
    alive: np.ndarray  # bool [N]


@dataclass
class _Refusals:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


class TwoViewBootstrap:
    """``add`` each frame in stream order until it returns a ``BootstrapMap``; ``reset`` to start
    over from the next frame (see the module doc)."""

    def __init__(self, config: BootstrapConfig | None = None, focal_prior: float | None = None) -> None:
        self.config = config or BootstrapConfig()
        self.focal_prior = DefaultModelConfig().focal_prior if focal_prior is None else float(focal_prior)
        self._parallax_cfg = ParallaxConfig(max_matches=150)
        self._pnp_cfg = TrackingConfig(reprojection_px=self.config.pnp_reprojection_px)
        self.refusals = _Refusals()
        self.references = 0  # reference frames taken
        self.maps = 0  # maps made
        self.reset()

    def reset(self) -> None:
        self._grey: np.ndarray | None = None  # the last frame, uint8 [H, W]
        self._ref_grey: np.ndarray | None = None  # the reference frame
        self._xy0: np.ndarray | None = None  # float32 [N, 2] tracks in the reference
        self._held: list[_Held] = []  # reference first

    def intrinsics(self, size: tuple[int, int], K: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """(K [3, 3], known): the frames' own, else the default backend's prior at ``size`` (W, H)."""
        if K is not None:
            return np.asarray(K, np.float64), True
        return prior_intrinsics(int(size[0]), int(size[1]), self.focal_prior), False

    def add(self, image: np.ndarray, index: int, timestamp: float, K: np.ndarray | None = None
            ) -> BootstrapMap | None:
        """Frame ``index`` (``image`` uint8 RGB [H, W, 3], ``K`` its intrinsics or None); the map once
        two-view geometry is accepted, else None."""
        cfg = self.config
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self._grey is None or grey.shape != self._grey.shape:
            self._start(grey, index, timestamp)
            return None
        last = self._held[-1]
        uv, ok = follow_points(self._grey, grey, last.xy[last.alive], cfg.fb_error_px, cfg.lk_window)
        xy, alive = last.xy.copy(), np.zeros_like(last.alive)
        rows = np.nonzero(last.alive)[0]
        xy[rows] = uv.astype(np.float32)
        alive[rows] = ok
        self._grey = grey
        self._held.append(_Held(index, timestamp, xy, alive))
        if alive.sum() < cfg.min_tracks or len(self._held) > cfg.max_frames:
            self._start(grey, index, timestamp)
            return None
        if (len(self._held) - 1) % cfg.check_every:
            return None
        H, W = grey.shape
        Kf, known = self.intrinsics((W, H), K)
        a, b = self._xy0[alive].astype(np.float64), xy[alive].astype(np.float64)
        side = max(W, H)
        if np.median(np.linalg.norm(b - a, axis=1)) < 0.5 * cfg.min_parallax * side:
            return None  # what rotation cannot explain is at most the motion itself
        if rotation_residual_px(a, b, Kf, fit_focal=not known, config=self._parallax_cfg) < cfg.min_parallax * side:
            return None
        b = self._against_reference(grey, a, b)
        xy[alive] = b.astype(np.float32)
        geometry = two_view(a, b, Kf, cfg)
        if isinstance(geometry, str):
            self.refusals.add(geometry)
            return None
        c2w, X, rows_ok, angle, n_e, h_share = geometry
        tracks = np.nonzero(alive)[0][rows_ok]
        self.maps += 1
        return BootstrapMap(grey, xy[tracks].copy(), X, Kf, self._held[0].index, index,
                            self._pose_held(tracks, X, Kf, c2w), angle, n_e, h_share)

    def report(self) -> dict:
        """References taken, maps made and two-view refusals by reason (run.json ``live_bootstrap``)."""
        return {"references": self.references, "maps": self.maps, "refused": dict(self.refusals.counts)}

    def _start(self, grey: np.ndarray, index: int, timestamp: float) -> None:
        cfg = self.config
        corners = cv2.goodFeaturesToTrack(grey, cfg.corners, 0.01, max(4, max(grey.shape) // 50))
        xy = np.zeros((0, 2), np.float32) if corners is None else corners[:, 0].astype(np.float32)
        self._grey, self._ref_grey, self._xy0 = grey, grey, xy
        self._held = [_Held(index, timestamp, xy.copy(), np.ones(len(xy), bool))]
        self.references += 1

    def _against_reference(self, grey: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The tracks' positions ``b`` [N, 2] in ``grey`` measured again directly from their reference
        positions ``a`` [N, 2] (one Lucas-Kanade step from the chained positions): the frame-to-frame
        chain's drift does not reach the two-view geometry."""
        lk = dict(winSize=(21, 21), maxLevel=1, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
        out, st, _ = cv2.calcOpticalFlowPyrLK(self._ref_grey, grey, a.astype(np.float32).reshape(-1, 1, 2),
                                              b.astype(np.float32).reshape(-1, 1, 2).copy(), **lk)
        out = out[:, 0].astype(np.float64)
        ok = st.ravel().astype(bool) & (np.linalg.norm(out - b, axis=1) < 2.0)  # else the chain's
        return np.where(ok[:, None], out, b)

    def _pose_held(self, tracks: np.ndarray, X: np.ndarray, K: np.ndarray, c2w_init: np.ndarray
                   ) -> dict[int, tuple[float, np.ndarray]]:
        """Poses of the held frames (reference = identity, init frame = ``c2w_init``, the others by
        PnP-RANSAC from their tracked positions of the map's points; a frame PnP refuses has none)."""
        ref, init = self._held[0], self._held[-1]
        poses = {ref.index: (ref.timestamp, np.eye(4)), init.index: (init.timestamp, c2w_init)}
        span = max(1, init.index - ref.index)
        for h in self._held[1:-1]:
            seen = h.alive[tracks]
            guess = interpolate_pose(np.eye(4), c2w_init, (h.index - ref.index) / span)
            solved = solve_pnp(X[seen], h.xy[tracks][seen].astype(np.float64), K, guess, self._pnp_cfg)
            if solved is not None:
                poses[h.index] = (h.timestamp, solved[0])
        return poses


def two_view(a: np.ndarray, b: np.ndarray, K: np.ndarray, cfg: BootstrapConfig
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int, float] | str:
    """Relative geometry of tracks ``a`` -> ``b`` (pixels [N, 2], one camera ``K``): (c2w [4, 4] of
    the second view with the first at the identity, points [M, 3], which rows of ``a`` they are
    (int [M]), median triangulation angle (deg), essential inliers, homography share), scaled to a
    median depth of 1 in the first view; or the reason it was refused (``"inliers"``,
    ``"homography"``, ``"triangulated"``, ``"angle"``)."""
    E, mask = cv2.findEssentialMat(a, b, K, cv2.USAC_ACCURATE, 0.999, cfg.ransac_px)
    if E is None or E.shape[0] < 3 or mask is None:
        return "inliers"
    E, inl = E[:3], mask.ravel().astype(bool)
    n_e = int(inl.sum())
    if n_e < cfg.min_points:
        return "inliers"
    Hm, hmask = cv2.findHomography(a, b, cv2.RANSAC, cfg.ransac_px)
    h_share = 0.0 if Hm is None else float(hmask.sum()) / n_e
    if h_share >= cfg.max_homography_share:
        return "homography"
    rows = np.nonzero(inl)[0]
    _, R, t, _ = cv2.recoverPose(E, a[rows], b[rows], K)
    t = t.ravel()
    w2c1 = np.eye(4)
    w2c1[:3, :3], w2c1[:3, 3] = R, t
    X, good = triangulate_views(K, np.eye(4), np.linalg.inv(w2c1), a[rows], b[rows], cfg.max_reprojection_px, 0.0)
    if good.sum() < cfg.min_points:
        return "triangulated"
    X, rows = X[good], rows[good]
    centre1 = -R.T @ t
    r0, r1 = X, X - centre1
    cos = (r0 * r1).sum(axis=1) / (np.linalg.norm(r0, axis=1) * np.linalg.norm(r1, axis=1))
    angle = float(np.degrees(np.median(np.arccos(np.clip(cos, -1.0, 1.0)))))
    if angle < cfg.min_angle_deg:
        return "angle"
    scale = 1.0 / float(np.median(X[:, 2]))
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t * scale
    return np.linalg.inv(w2c), X * scale, rows, angle, n_e, h_share


def pose_sim3(src: np.ndarray, dst: np.ndarray, max_rotation_deg: float = 5.0,
              max_residual: float = 0.2) -> Sim3 | None:
    """The similarity taking cameras ``src`` [N, 4, 4] (c2w) onto the same cameras ``dst`` [N, 4, 4]
    in another world: rotation the chordal mean of dst_R src_R^T, then scale and translation by least
    squares on the centres. None when fewer than 2 cameras or their centres do not spread, when
    a camera's rotation disagrees by more than ``max_rotation_deg``, or when the centres' RMS residual
    exceeds ``max_residual`` of their spread (the two worlds do not agree on these cameras)."""
    sim = similarity_from_poses(src, dst)
    if sim is None:
        return None
    rel = dst[:, :3, :3] @ np.transpose(src[:, :3, :3], (0, 2, 1))
    off = np.einsum("nij,ij->n", rel, sim.R)  # trace(rel^T R) = 1 + 2 cos(angle between rel and R)
    if np.degrees(np.arccos(np.clip((off - 1) / 2, -1, 1))).max() > max_rotation_deg:
        return None
    cd = dst[:, :3, 3]
    spread_dst = float(np.sqrt(((cd - cd.mean(axis=0)) ** 2).sum(axis=1).mean()))
    residual = float(np.sqrt(((sim.apply(src[:, :3, 3]) - cd) ** 2).sum(axis=1).mean()))
    if spread_dst <= 1e-12 or residual > max_residual * spread_dst:
        return None
    return sim
