"""Live tracking: every arriving frame posed against the newest aligned window's map.

Mapping (window model + alignment) runs on keyframes and takes seconds a
window; a live frame cannot wait for it. ``MapTracker`` keeps the 3D points of
the newest aligned window (its last view's sparse tracks, else confident
point-map pixels: ``recon.tracking.anchor_points``) and follows them frame to
frame with Lucas-Kanade (forward-backward checked), solving each frame's pose
by PnP-RANSAC from the previous pose. The chain of 2D positions is renewed from
the map's keyframe when a new map arrives or too few points survive; the 3D
points stay those of the map, so the pose does not drift with the chain.
Each point is searched for where it is expected (``predict_motion``): projected
by the last two posed frames' motion carried on (a constant velocity), so a fast
turn or a low frame rate moves the points farther than Lucas-Kanade would find
them from where they were.

Mapping lags behind the stream, so a new map's keyframe is seconds older than
the frame being tracked: its points are carried to the present through the
recent frames the tracker kept (a few a second, grey), one short
Lucas-Kanade step at a time. ``set_map`` does most of that on the thread that
aligned the window; the tracking thread keeps posing frames on its chain and
does the rest a few kept frames per frame (``bridge_steps``), then renews the
chain from the map's points.

Before the first window, the map can be a two-view bootstrap
(``recon.live_bootstrap``, ``set_bootstrap``): its poses are provisional
(``LiveTrackedPose.provisional``), in the bootstrap's own world. When the first
window's map arrives, the similarity from the bootstrap world to the window's
is estimated from the window's keyframes the tracker posed on the bootstrap map
(``live_bootstrap.pose_sim3``); the chain of points and the last pose move into
the window's world with it, so the live poses go on without a jump
(``take_handover``: the provisional poses after the window's last keyframe, moved
too). The chain keeps the K its points were triangulated with (the prior, when
the stream has no intrinsics) until it reaches the window's points: the window
self-calibrates its own. Without such a similarity the chain starts again from the window's map; a
window none of whose frames was posed on the bootstrap map (the bootstrap started
again after them) is passed over instead, and the bootstrap goes on until a window
that shares frames with it arrives.
A bootstrap map that loses the camera for ``bootstrap_lost_frames`` frames is let
go (``needs_bootstrap``: a new bootstrap starts from the current frame). So is a
window's map, once the chain is gone and the map's points cannot be found for as
many frames (the camera turned away, or was covered, and mapping lags too far for
the next window to be reached): a new bootstrap gives the live poses a
provisional world again, handed over to the first window that shares frames
with it (``rebootstraps``).

A map's points leave the view as the camera moves on, and on two cores mapping
falls behind a 30 fps stream, so a bootstrap map can be the only map for many
seconds, and a window's map can be too old to reach. The chain then grows its
own points (``_extend``), as visual odometry does: corners found away from its
points in a posed frame are followed, and triangulated into the chain's world
once the camera has moved far enough. They carry the chain's drift; the next
window's map replaces them.

A frame it cannot pose (no map yet, the camera has left the map's view) gets
no live pose; its window poses it later. Poses are in the world of the map's
window; the pipeline re-poses every frame when the window around it is aligned.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, replace

import cv2
import numpy as np

from recon.live_bootstrap import BootstrapMap, pose_sim3
from recon.tracking import (
    TrackingConfig,
    anchor_points,
    follow_points,
    lens_of,
    project_points,
    solve_pnp,
    to_model_pixels,
    triangulate_views,
)
from stream4d.contracts import WindowPrediction
from stream4d.geometry import radial_distorted, radial_undistorted


@dataclass(frozen=True)
class LiveTrackingConfig:
    """max_points: map points followed; reprojection_px: PnP inlier threshold (chained Lucas-Kanade
    drifts a little, so looser than between keyframes); renew_share: the chain is renewed from the
    map's keyframe when fewer than this share of its points survive."""

    max_points: int = 600
    reprojection_px: float = 2.0
    fb_error_px: float = 1.0
    min_inliers: int = 15
    min_inlier_share: float = 0.4
    renew_share: float = 0.5
    renew_min_points: int = 60  # a renewal from the map that keeps fewer points than this and the chain is refused
    ransac_iterations: int = 50
    lk_window: int = 15  # Lucas-Kanade window side, px (frame to frame motion is small at camera rate)
    bridge_every: int = 4  # every this many frames is kept to carry a new map's points to the present
    bridge_frames: int = 150  # at most this many kept (frames older than that cannot be bridged)
    # kept frames a new map's points are carried through per tracked frame while the chain still poses
    # the frames: a map seconds old would otherwise cost one frame the whole bridge (see ``track``)
    bridge_steps: int = 3
    # a bootstrap map that poses none of this many frames in a row is let go; so is a window's map once the
    # chain is gone (a new bootstrap starts)
    bootstrap_lost_frames: int = 5
    chain_patience: int = 5  # frames in a row the chain may fail to pose before it is let go
    # the chain grows its own points (see ``_extend``) once it keeps under this share of its points
    extend_share: float = 0.7
    extend_angle_deg: float = 1.0  # a corner becomes a point once its two rays meet at this angle
    extend_restart_frames: int = 20  # corners older than this make way for new ones when the chain is short
    extend_corners: int = 200  # corners followed at a time (each costs the tracking thread a Lucas-Kanade step)
    # ... and new ones are found, should the chain be short, once fewer than this share of them is left
    extend_refill_share: float = 0.25
    # the chain's points are searched for where the last two posed frames' motion, carried on, puts them
    predict_motion: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.extend_share < 1 or not self.extend_angle_deg > 0 or self.extend_restart_frames < 1 \
                or self.extend_corners < self.min_inliers or self.chain_patience < 1 \
                or not 0 <= self.extend_refill_share < 1:
            raise ValueError("live tracking needs 0 <= extend_share < 1 (0: the chain never grows), "
                             "extend_angle_deg > 0, extend_restart_frames >= 1, extend_corners >= min_inliers, "
                             "chain_patience >= 1 and 0 <= extend_refill_share < 1")

    def tracking(self) -> TrackingConfig:
        return replace(TrackingConfig(), max_points=self.max_points, reprojection_px=self.reprojection_px,
                       fb_error_px=self.fb_error_px, min_inliers=self.min_inliers,
                       min_inlier_share=self.min_inlier_share)


@dataclass
class LiveTrackedPose:
    c2w: np.ndarray  # [4, 4] world of the map's window
    K: np.ndarray  # [3, 3] model pixels
    size: tuple[int, int]  # (W, H) model pixels
    segment: int
    inliers: int
    provisional: bool = False  # solved on a bootstrap map's points (recon.live_bootstrap), in its world
    grown: bool = False  # solved on a chain with points the tracker triangulated itself (``_extend``)


@dataclass
class _Map:
    grey: np.ndarray  # uint8 [H, W] of the map's keyframe, model pixels
    xy: np.ndarray  # float32 [N, 2] the map points in it
    X: np.ndarray  # float64 [N, 3] world
    c2w: np.ndarray  # [4, 4] the keyframe's pose
    K: np.ndarray
    pixel_map: np.ndarray  # [3, 3] input pixels -> model pixels
    size: tuple[int, int]
    segment: int
    index: int  # Frame.index of the keyframe
    provisional: bool = False  # a two-view bootstrap map, not an aligned window's
    radial_k1: float = 0.0  # the lens its window adjusted (recon.tracking.lens_of; 0: a pinhole)


@dataclass
class _Candidates:
    """Corners followed from a posed frame of the chain until the camera has moved enough to
    triangulate them; in the world of the chain that posed that frame (``provisional``, ``segment``)."""

    c2w0: np.ndarray  # [4, 4] pose of the frame they were found in
    xy0: np.ndarray  # float64 [N, 2] their positions there
    grey: np.ndarray  # uint8 [H, W] the last frame they were followed into
    xy: np.ndarray  # float32 [N, 2] their positions in it
    c2w: np.ndarray  # [4, 4] its pose
    provisional: bool
    segment: int
    frames: int = 0  # frames followed


class MapTracker:
    """``set_map`` from the alignment thread, ``track`` from the tracking thread (see the module doc)."""

    def __init__(self, config: LiveTrackingConfig | None = None) -> None:
        self.config = config or LiveTrackingConfig()
        self._cfg = self.config.tracking()
        self._lock = threading.Lock()
        self._incoming: tuple | None = None  # (prediction, segment, _Map, its bridge) from set_map
        self._map: _Map | None = None
        self._chain: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (grey, xy [N, 2], X [N, 3])
        # [3, 3] the K its points were triangulated and its poses are solved with: the bootstrap's prior
        # stays with a chain moved into a window's world, whose self-calibrated K can differ by half
        self._chain_K: np.ndarray | None = None
        # the newest map's lens: every pixel is seen through it, undistorted for PnP and triangulation
        self._lens = 0.0
        self._chain_start = 0  # points the chain started with
        self._grown_to = 0  # points the chain had when it last started or grew (``_extend``)
        self._chain_provisional = False  # the chain's points are a bootstrap map's
        self._pose: np.ndarray | None = None  # c2w of the last posed frame
        self._recent: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=self.config.bridge_frames)
        self._seen = 0
        self._bridge = None  # (map, frame index, grey, xy, X): where _bridged left the map's points
        self._renew = False  # a new map came while the chain poses the frames: renew from it once bridged
        self.maps = 0  # window maps taken
        self._provisional: dict[int, np.ndarray] = {}  # frame index -> c2w in the bootstrap map's world
        self._handed: dict[int, np.ndarray] = {}  # provisional poses moved into the first window's world
        self._handed_camera: tuple = (None, None)  # (K, size) of the bootstrap map they were solved on
        self._misses = 0  # frames in a row the map did not pose
        self._chain_misses = 0  # frames in a row the chain did not pose
        self._chain_grown = False  # the chain holds points the tracker triangulated itself
        self.bootstrap_lost = 0  # bootstrap maps let go
        self._lost_window = False  # a window's map lost the camera: a bootstrap may start again
        self.rebootstraps = 0  # bootstrap maps taken after a window's map had lost the camera
        self.handover: dict | None = None  # how the first window's map took over from the bootstrap map
        self._candidates: _Candidates | None = None  # corners on their way to become chain points
        self._unreachable = False  # the map's points could not be carried to the chain: it grows its own
        self.points_added = 0  # chain points triangulated by the tracker (``_extend``)
        self.deferred_maps = 0  # window maps passed over while a bootstrap map that shares no frame with them tracks
        self._last: tuple | None = None  # (frame index, c2w, provisional, segment) of the last posed frame
        self._step: np.ndarray | None = None  # [4, 4] motion from the frame before it to it, in its camera frame

    @property
    def has_map(self) -> bool:
        return self._map is not None or self._incoming is not None

    @property
    def needs_bootstrap(self) -> bool:
        """No map of any kind yet, or the window's map lost the camera (nor a window's on its way): a
        two-view bootstrap may give one."""
        return self._incoming is None and ((self._map is None and self.maps == 0) or self._lost_window)

    @property
    def on_bootstrap_map(self) -> bool:
        """The map tracked against is a two-view bootstrap's: its poses wait for a hand-over."""
        return self._map is not None and self._map.provisional

    def set_bootstrap(self, boot: BootstrapMap, pixel_map: np.ndarray, segment: int) -> None:
        """A two-view bootstrap map (tracking thread; frames in the pixels of ``pixel_map``, input ->
        image): tracked against until a window's map that shares frames with it arrives. Ignored once
        a window's came, unless that map has lost the camera."""
        if self.maps and not self._lost_window:
            return
        if self._lost_window:
            self.rebootstraps += 1
            self._lost_window, self._bridge, self._renew, self._unreachable = False, None, False, False
        H, W = boot.grey.shape
        c2w = boot.poses[boot.index][1].copy()
        self._map = _Map(boot.grey, boot.xy, boot.X, c2w, boot.K, np.asarray(pixel_map), (W, H), segment,
                         boot.index, provisional=True)
        self._chain, self._chain_start, self._chain_provisional = (boot.grey, boot.xy, boot.X), len(boot.X), True
        self._chain_K = boot.K
        self._grown_to, self._chain_grown, self._chain_misses, self._candidates = len(boot.X), False, 0, None
        self._pose = c2w
        self._provisional = {i: p for i, (_, p) in boot.poses.items()}
        self._misses = 0

    def take_handover(self) -> tuple[dict[int, np.ndarray], np.ndarray, tuple[int, int]]:
        """Provisional poses moved into the first window's world (frame index -> c2w [4, 4]) that no
        window has posed yet, with the bootstrap map's K and size; empty once taken."""
        handed, self._handed = self._handed, {}
        return handed, *self._handed_camera

    def set_map(self, pred: WindowPrediction, segment: int) -> None:
        """The newest aligned window (world poses), taken up by a coming ``track``. Its points are
        carried here, on the caller's (alignment) thread, through the frames kept since its
        keyframe: a map is seconds old when it arrives, and that bridge would cost the tracking
        thread a frame time many times over; what is kept meanwhile is bridged by ``track``."""
        if not pred.num_frames or pred.rotation_only_views[-1]:
            return
        k = pred.num_frames - 1
        grey = cv2.cvtColor(pred.images[k], cv2.COLOR_RGB2GRAY)
        xy, X = anchor_points(pred, k, grey, self._cfg)
        if len(xy) < self._cfg.min_inliers:
            return
        m = _Map(grey, xy, X, pred.c2w[k].copy(), pred.K[k].copy(), np.asarray(pred.pixel_maps[k]),
                 pred.model_size, segment, int(pred.frame_indices[k]), radial_k1=lens_of(pred))
        bridge, _ = self._carry((m, m.index, m.grey, m.xy, m.X), list(self._recent))
        with self._lock:
            self._incoming = (pred, segment, m, bridge)

    def track(self, image: np.ndarray, pixel_map: np.ndarray, index: int) -> LiveTrackedPose | None:
        """The pose of frame ``index`` (``image`` uint8 [H, W, 3], ``pixel_map`` input -> image pixels)
        or None."""
        self._seen += 1
        if self._seen % self.config.bridge_every == 0:
            self._recent.append((index, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), np.asarray(pixel_map)))
        renewed = self._take_map()
        m = self._map
        if m is None:
            return None
        grey = cv2.cvtColor(to_model_pixels(image, pixel_map, m.pixel_map, m.size), cv2.COLOR_RGB2GRAY)
        guess = self._pose if self._pose is not None else m.c2w
        solved = None
        provisional, K = self._chain_provisional, self._chain_K
        self._renew |= renewed and self._chain is not None
        if self._chain is not None:
            # The chain's points are PnP inliers of the frame before: one forward step, no backward check
            # (RANSAC drops what went astray), halves the tracker's Lucas-Kanade cost.
            predicted = self._predicted(index)
            solved = self._solve(*self._chain, grey, guess if predicted is None else predicted, K, checked=False,
                                 predicted=predicted is not None)
            # A chain still on bootstrap points tries the window's map every few frames.
            leave_bootstrap = provisional and not m.provisional and self._seen % self.config.bridge_every == 0
            fading = solved is not None and len(solved[2]) < self.config.renew_share * self._chain_start
            if solved is not None and (self._renew or leave_bootstrap or fading):
                # A few bridge steps a frame: the chain poses the frames until the map's points are here.
                *bridged, here = self._bridged(m, self.config.bridge_steps)
                if here:
                    self._renew = False
                    renew = self._solve(*bridged, grey, solved[0], m.K)
                    if renew is not None and len(renew[2]) < min(len(solved[2]), self.config.renew_min_points):
                        renew = None  # a handful of the map's points would end the chain sooner than its own
                    if renew is None:  # the map cannot be reached from here: tried again once the chain halves
                        self._chain_start = len(solved[2])
                        self._unreachable = True
                    else:
                        solved, provisional, K = renew, m.provisional, m.K
                        self._chain_start = self._grown_to = len(renew[2])
                        self._candidates, self._unreachable, self._chain_grown = None, False, False
        if solved is None:  # no chain, or it lost its points: from the map's keyframe, bridged all the way
            self._renew = False
            restart = self._solve(*self._bridged(m)[:3], grey, guess, m.K)
            if restart is not None:
                solved, provisional, K = restart, m.provisional, m.K
                self._chain_start = self._grown_to = len(restart[2])
                self._candidates, self._chain_grown = None, False
        if solved is None:
            # One frame the chain cannot pose (blur, a passing occluder) does not end it: the next frames
            # are tried against its last posed frame, for ``chain_patience`` frames.
            self._chain_misses += 1
            if self._chain_misses >= self.config.chain_patience:
                self._chain, self._candidates = None, None
            self._lost(m)
            return None
        self._chain_misses, self._lost_window = 0, False
        c2w, uv, X = solved
        self._moved(index, c2w, provisional, m.segment)
        if provisional or self._unreachable:
            uv, X = self._extend(grey, c2w, K, uv, X, m, provisional)
        self._chain, self._chain_provisional, self._chain_K = (grey, uv.astype(np.float32), X), provisional, K
        self._pose = c2w
        self._misses = 0
        if m.provisional:
            self._provisional[index] = c2w
        return LiveTrackedPose(c2w, K, m.size, m.segment, len(X), provisional, self._chain_grown)

    def _extend(self, grey: np.ndarray, c2w: np.ndarray, K: np.ndarray, uv: np.ndarray, X: np.ndarray, m: _Map,
                provisional: bool) -> tuple[np.ndarray, np.ndarray]:
        """The chain's points ``uv`` [N, 2] / ``X`` [N, 3] in frame ``grey`` (pose ``c2w``, the chain's
        ``K``), with the corners followed since an earlier posed frame that can now be triangulated added.

        A map's points leave the view as the camera moves on. The tracker renews the chain from the
        map when it can; a bootstrap map, or a map it can no longer reach (mapping lags the stream),
        would lose the camera instead, so the chain grows like visual odometry: once it keeps under
        ``extend_share`` of its points, corners away from them are found, followed frame to frame,
        and each is triangulated into the chain's world from its first frame and the present as soon
        as its two rays meet at ``extend_angle_deg``. Their drift is the chain's; the next window's
        map replaces them. Corners that have not got there in ``extend_restart_frames`` frames (far
        away, or along the motion) make way for new ones when the chain is short again, and so do
        corners of which under ``extend_refill_share`` are left (fast forward motion carries most of a
        set out of view, or past what Lucas-Kanade can follow, within a few frames)."""
        cfg = self.config
        cand = self._candidates
        if cand is not None and (cand.provisional != provisional or cand.segment != m.segment
                                 or cand.grey.shape != grey.shape):
            cand = None
        if cand is not None:
            # Forward-backward checked: triangulation cannot see a point that slid along its epipolar line.
            start = self._neighbour_flow(cand, K, uv, X) if cfg.predict_motion else None
            nxt, ok = follow_points(cand.grey, grey, cand.xy, cfg.fb_error_px, cfg.lk_window, start)
            xy0, xy = cand.xy0[ok], nxt[ok]
            rays0, rays = (radial_undistorted(p, K, self._lens) for p in (xy0, xy))
            Xn, good = triangulate_views(K, cand.c2w0, c2w, rays0, rays, cfg.reprojection_px, cfg.extend_angle_deg)
            if good.any():
                uv, X = np.concatenate([uv, xy[good]]), np.concatenate([X, Xn[good]])
                self.points_added += int(good.sum())
                self._chain_grown = True
                self._chain_start = max(len(X), self._chain_start)
                self._grown_to = max(len(X), self._grown_to)
            rest = ~good
            cand = replace(cand, xy0=xy0[rest], grey=grey, xy=xy[rest].astype(np.float32), c2w=c2w,
                           frames=cand.frames + 1) \
                if rest.sum() >= self._cfg.min_inliers else None
        if len(X) < cfg.extend_share * self._grown_to and (cand is None or cand.frames >= cfg.extend_restart_frames
                                                             or len(cand.xy) < cfg.extend_refill_share * cfg.extend_corners):
            cand = self._corners(grey, c2w, uv, min(cfg.extend_corners, cfg.max_points - len(X)), provisional,
                                 m.segment)
            self._grown_to = len(X)  # the bar for the next corners: under this share of the present
        self._candidates = cand
        return uv, X

    def _corners(self, grey: np.ndarray, c2w: np.ndarray, uv: np.ndarray, n: int, provisional: bool,
                 segment: int) -> _Candidates | None:
        """Up to ``n`` corners of ``grey`` away from the chain's points ``uv`` [N, 2]."""
        spacing = max(4, max(grey.shape) // 50)
        mask = np.full(grey.shape, 255, np.uint8)
        for x, y in np.round(uv).astype(int):
            cv2.circle(mask, (int(x), int(y)), spacing, 0, -1)
        corners = cv2.goodFeaturesToTrack(grey, n, 0.01, spacing, mask=mask) if n > 0 else None
        if corners is None or len(corners) < self._cfg.min_inliers:
            return None
        xy = corners[:, 0].astype(np.float32)
        return _Candidates(c2w.copy(), xy.astype(np.float64), grey, xy, c2w, provisional, segment)

    @staticmethod
    def _neighbour_flow(cand: _Candidates, K: np.ndarray, uv: np.ndarray, X: np.ndarray,
                        neighbours: int = 4) -> np.ndarray | None:
        """Where the corners ``cand`` should be searched for in the present frame: each moved by the
        median motion of its nearest chain points (``uv`` [N, 2] there, world ``X`` [N, 3], camera ``K``)
        since the corners' last frame. A corner has no depth yet; its neighbours' motion stands in."""
        before, seen = project_points(cand.c2w, K, X)
        if seen.sum() < neighbours:
            return None
        flow = (uv - before)[seen]
        d2 = ((cand.xy[:, None, :] - before[seen][None, :, :]) ** 2).sum(axis=2)
        nearest = np.argpartition(d2, neighbours - 1, axis=1)[:, :neighbours]
        return cand.xy + np.median(flow[nearest], axis=1)

    def _lost(self, m: _Map) -> None:
        """A bootstrap map that has not posed ``bootstrap_lost_frames`` frames in a row is let go; a
        window's map, with no chain left, asks for a new bootstrap (it is still tried meanwhile)."""
        self._misses += 1
        if self._misses < self.config.bootstrap_lost_frames:
            return
        if m.provisional:
            self._map, self._pose, self._provisional, self._misses = None, None, {}, 0
            self._bridge = None
            self.bootstrap_lost += 1
        elif self._chain is None:
            self._lost_window = True

    def _moved(self, index: int, c2w: np.ndarray, provisional: bool, segment: int) -> None:
        """Frame ``index`` posed at ``c2w``: the motion from the frame posed before it, when that was the
        frame just before, in the same world."""
        last, self._last = self._last, (index, c2w, provisional, segment)
        same_world = last is not None and last[2:] == (provisional, segment) and index - last[0] == 1
        self._step = np.linalg.inv(last[1]) @ c2w if same_world else None

    def _predicted(self, index: int) -> np.ndarray | None:
        """c2w [4, 4] of frame ``index`` if the camera keeps the motion of the last two posed frames
        (a constant velocity, over at most ``chain_patience`` frames), or None."""
        if not self.config.predict_motion or self._step is None or self._last is None \
                or self._pose is not self._last[1] or not 0 < index - self._last[0] <= self.config.chain_patience:
            return None
        c2w = self._last[1]
        for _ in range(index - self._last[0]):
            c2w = c2w @ self._step
        return c2w

    def _solve(self, grey0: np.ndarray, xy: np.ndarray, X: np.ndarray, grey: np.ndarray,
               guess: np.ndarray, K: np.ndarray, checked: bool = True, predicted: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(c2w, inlier positions in ``grey`` [M, 2], their world points [M, 3]) or None, seen with ``K``;
        ``predicted``: ``guess`` is a prediction of this frame's pose, so each point's search starts
        where it projects."""
        if grey0.shape != grey.shape:
            return None
        start = None
        if predicted:
            uv0, seen = project_points(guess, K, X)
            uv0 = radial_distorted(uv0, K, self._lens)
            H, W = grey.shape
            seen &= (uv0[:, 0] >= 0) & (uv0[:, 0] < W) & (uv0[:, 1] >= 0) & (uv0[:, 1] < H)
            start = np.where(seen[:, None], uv0, xy)
        uv, ok = follow_points(grey0, grey, xy, self.config.fb_error_px if checked else None,
                               self.config.lk_window, start)
        uv, X = uv[ok], X[ok]
        pinhole = radial_undistorted(uv, K, self._lens)
        solved = solve_pnp(X, pinhole, K, guess, self._cfg, self.config.ransac_iterations)
        if solved is None:
            return None
        c2w, inl = solved
        return c2w, uv[inl], X[inl]

    def _bridged(self, m: _Map, max_steps: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(grey, xy, X, here): the map's points carried from its keyframe through the kept frames after
        it, as far as they can be followed (the keyframe itself when none can), at most ``max_steps``
        kept frames this call; ``here`` False while kept frames are left to carry them through.
        Carried on from where the last call for this map stopped, so each kept frame costs one step
        per map."""
        if self._bridge is None or self._bridge[0] is not m:
            self._bridge = (m, m.index, m.grey, m.xy, m.X)
        self._bridge, here = self._carry(self._bridge, list(self._recent), max_steps)
        return (*self._bridge[2:], here)

    def _carry(self, bridge: tuple, recent: list, max_steps: int | None = None) -> tuple[tuple, bool]:
        """One bridge ``(map, frame index, grey, xy, X)`` carried on through the kept frames ``recent``
        after its frame (at most ``max_steps`` of them); (the bridge, whether none is left)."""
        m, last, grey0, xy, X = bridge
        here, steps = True, 0
        for index, g, pixel_map in recent:
            if index <= last:
                continue
            if max_steps is not None and steps >= max_steps:
                here = False
                break
            steps += 1
            g = to_model_pixels(g, pixel_map, m.pixel_map, m.size)
            if g.shape != grey0.shape:
                continue
            uv, ok = follow_points(grey0, g, xy, self.config.fb_error_px, self.config.lk_window)
            if ok.sum() < self._cfg.min_inliers:
                break
            last, grey0, xy, X = index, g, uv[ok].astype(np.float32), X[ok]
        return (m, last, grey0, xy, X), here

    def _take_map(self) -> bool:
        with self._lock:
            incoming, self._incoming = self._incoming, None
        if incoming is None:
            return False
        pred, segment, m, bridge = incoming
        if self._map is not None and self._map.provisional and self._chain is not None \
                and not any(int(i) in self._provisional for i in pred.frame_indices):
            # None of the window's frames was posed in this bootstrap's world (it started again after
            # them): no similarity joins the two, and a map that old is seldom reachable. The bootstrap
            # goes on; a later window, or one that shares frames with it, takes over.
            self.deferred_maps += 1
            return False
        if self._map is not None and self._map.provisional:
            self._hand_over(pred, m.pixel_map, m.size)
        elif self._map is not None and self._map.segment != segment:
            self._chain, self._pose = None, None  # a new world: the old chain's points are elsewhere
        self._map, self._bridge = m, bridge
        self._lens = m.radial_k1
        self._unreachable = False
        self.maps += 1
        return True

    def _hand_over(self, pred: WindowPrediction, pixel_map: np.ndarray, size: tuple[int, int]) -> None:
        """The first window's map replaces the bootstrap map: the chain, the last pose and the
        provisional poses after the window move into the window's world by the similarity of the
        window's frames posed in both worlds; without one, the chain starts again from the window
        (so it does too when the window's pixels, ``pixel_map`` and ``size``, are not the chain's)."""
        shared = [k for k, i in enumerate(pred.frame_indices) if int(i) in self._provisional]
        src = np.stack([self._provisional[int(pred.frame_indices[k])] for k in shared]) if shared else None
        sim3 = pose_sim3(src, pred.c2w[shared]) if len(shared) >= 2 else None
        self.handover = {"frames_in_both": len(shared), "applied": sim3 is not None}
        if sim3 is None:
            self._chain, self._pose, self._candidates = None, None, None
        else:
            same_pixels = tuple(size) == tuple(self._map.size) and np.allclose(pixel_map, self._map.pixel_map)
            if self._chain is not None and same_pixels:
                # The chain goes on in the window's world as it was (its points, its corners on the way to
                # becoming points, the camera's motion), with its own K, until the window's map is reached.
                grey, xy, X = self._chain
                self._chain = (grey, xy, sim3.apply(X))
                cand = self._candidates
                if cand is not None:
                    self._candidates = replace(cand, c2w0=sim3.apply_c2w(cand.c2w0), c2w=sim3.apply_c2w(cand.c2w))
                if self._step is not None:
                    self._step = self._step.copy()
                    self._step[:3, 3] *= sim3.s
            else:
                self._chain, self._candidates = None, None
            if self._pose is not None:
                self._pose = sim3.apply_c2w(self._pose)
                if self._last is not None:
                    self._last = (self._last[0], self._pose, *self._last[2:])
            last = int(np.max(pred.frame_indices))
            self._handed_camera = (self._map.K, self._map.size)
            self._handed = {i: sim3.apply_c2w(p) for i, p in self._provisional.items() if i > last}
            moved = sim3.apply_c2w(src)
            self.handover.update(scale=float(sim3.s), centre_rms=float(np.sqrt(np.mean(np.sum(
                (moved[:, :3, 3] - pred.c2w[shared][:, :3, 3]) ** 2, axis=1)))))
        self._provisional = {}
