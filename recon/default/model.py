"""The weight-free default window model: window SfM for poses, flow triangulation for depth."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Sequence

import cv2
import numpy as np

from recon.default.calibration import StreamFocal, StreamFocalConfig
from recon.default.dense import DenseConfig, FlowCache, choose_neighbours, dense_depth, dense_inputs, upsample_depth
from recon.default.far_pairs import FarPairCheck, chained_split_deg, checked_far_pairs, rotation_split_deg
from recon.default.lens_search import LensSearchConfig, LensTrial, bend_of_k1, chosen_trial, k1_of_bend
from recon.default.sfm import SfmConfig, SfmResult, WindowSfm
from recon.default.sparse_depth import SparseDepthConfig, fill_sparse_depth
from recon.default.tracks import Tracks, build_tracks
from recon.features import Features, PairMatches, detect_features, verified_matches
from stream4d.contracts import Frame, SparseTracks, WindowPrediction
from stream4d.geometry import centred_intrinsics, invert_se3, project_points, radial_distorted, unproject_depth_maps

MIN_RANGE_POINTS = 10  # this many points or fewer in view give no depth range for its dense depth


class WindowModelError(RuntimeError):
    """A window could not be reconstructed at all (e.g. mismatched frame sizes)."""


@dataclass
class DefaultModelConfig:
    """Knobs of the default backend; defaults chosen on ../shared/data (see docs/benchmarks.md)."""

    max_features: int = 3000
    feature_scale: float = 1.0  # < 1 detects SIFT on a reduced copy (features.detect_features): cheaper
    # but clearly less accurate (docs/default_backend.md); a stream whose first pairs match weakly, or a
    # window that does not pose every view, goes to full size for the rest of the stream
    match_neighbours: int = 3  # match each view with the next N views
    # and with the views after those up to the next ``far_neighbours``, keeping such a far pair only
    # with ``far_min_inliers`` verified matches or more (see DefaultWindowModel._structure)
    far_neighbours: int = 8
    far_min_inliers: int = 80
    # A window whose far pairs turn its views more than ``far_split_deg`` from where its near pairs alone
    # put them is grown again with only the far matches the near structure agrees with (within
    # ``far_agree_px``), from the far pairs where half of the matches do (recon/default/far_pairs.py:
    # repeated textures fit a far pair's fundamental matrix)
    check_far_pairs: bool = True
    far_split_deg: float = 2.0
    far_agree_px: float = 5.0
    # A view the window's structure leaves unregistered is also matched with every view beyond
    # ``far_neighbours`` (such pairs kept from ``far_min_inliers`` too), and the structure is grown again
    # when one verifies: photos of a walk that comes back meet their first views further along the
    # window than any video's keyframes do. Costs nothing in windows that register every view.
    far_pairs_for_stragglers: bool = True
    focal_prior: float = 1.0  # unknown intrinsics start at f = focal_prior * max(W, H)
    # the focal length estimated across the windows of a stream (recon/default/calibration.py)
    stream_focal: StreamFocalConfig = field(default_factory=StreamFocalConfig)
    # A window whose pinhole solve reads a lens as a field of view no rectilinear lens has is solved
    # with its focal held, through candidate lenses too (recon/default/lens_search.py)
    lens_search: LensSearchConfig = field(default_factory=LensSearchConfig)
    sfm: SfmConfig = field(default_factory=SfmConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    # views flow could not follow (wide baselines) take their depth from the triangulated tracks
    sparse_depth: SparseDepthConfig = field(default_factory=SparseDepthConfig)
    cache_frames: int = 64  # features / matches kept for reuse by overlapping windows
    threads: int = 2  # for features and matches a window computes itself
    scale_vote_pairs: int = 4  # consecutive pairs prepare() looks at before choosing the feature size
    min_pair_inliers: int = 60  # median verified matches a pair needs to keep reduced-size features


def prior_intrinsics(width: int, height: int, focal_prior: float) -> np.ndarray:
    return centred_intrinsics(width, height, focal_prior * max(width, height))


def sparse_tracks(tracks: Tracks, point_track: np.ndarray, points: np.ndarray, posed: list[int],
                  w2c: list[np.ndarray], K: np.ndarray, images: list[np.ndarray],
                  max_reproj_px: float, radial_k1: float = 0.0) -> SparseTracks:
    """The window's triangulated tracks as a contract: points [P, 3] in the window frame, and the
    observations of the posed views (``posed[k]`` is window view k) that reproject within
    ``max_reproj_px`` with the final poses ``w2c``, ``K`` and the lens ``radial_k1``; points left with
    fewer than two observations are dropped."""
    slot = np.full(tracks.num_tracks, -1, np.int64)
    slot[point_track] = np.arange(len(point_track))
    vslot = np.full(max(int(tracks.view.max(initial=-1)), max(posed)) + 1, -1, np.int64)
    vslot[np.asarray(posed, np.int64)] = np.arange(len(posed))
    rows = np.nonzero((slot[tracks.track] >= 0) & (vslot[tracks.view] >= 0))[0]
    obs_point, obs_view, obs_xy = slot[tracks.track[rows]], vslot[tracks.view[rows]], tracks.uv[rows]
    T = np.stack(w2c)[obs_view]
    pc = np.einsum("nij,nj->ni", T[:, :3, :3], points[obs_point]) + T[:, :3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = pc @ K.T
        uv = proj[:, :2] / proj[:, 2:3]
        uv = radial_distorted(uv, K, radial_k1)
        err = np.linalg.norm(uv - obs_xy, axis=1)
    good = (pc[:, 2] > 0) & (err <= max_reproj_px)
    S = len(posed)
    full = SparseTracks(points.astype(np.float64), np.zeros((len(points), 3), np.uint8), obs_point[good],
                        obs_view[good], obs_xy[good].astype(np.float64), np.repeat(K[None], S, axis=0), radial_k1)
    sparse = full.subset_views(np.arange(S))  # drops points seen fewer than twice
    if sparse.num_points:  # colour: the pixel of each point's first observation
        first = np.unique(sparse.obs_point, return_index=True)[1]
        h, w = images[0].shape[:2]
        xy = np.rint(sparse.obs_xy[first]).astype(np.int64)
        x, y = np.clip(xy[:, 0], 0, w - 1), np.clip(xy[:, 1], 0, h - 1)
        view = sparse.obs_view[first]
        for k in np.unique(view):
            sel = view == k
            sparse.colors[sel] = images[k][y[sel], x[sel]]
    return sparse


class DefaultWindowModel:
    """Implements ``stream4d.contracts.WindowModel`` without learned weights."""

    name = "default"

    def __init__(self, config: DefaultModelConfig | None = None):
        self.cfg = config or DefaultModelConfig()
        self._scale = self.cfg.feature_scale  # rises to 1.0 for the stream once a window needs it
        self._scale_votes: list[int] | None = []  # verified matches of the first consecutive pairs
        self._lock = threading.Lock()  # prepare() runs in reader threads
        self._features: OrderedDict[tuple[int, float], Future] = OrderedDict()  # Future[Features]
        self._matches: OrderedDict[tuple[int, int, float], PairMatches | None] = OrderedDict()
        self._recent: OrderedDict[int, Frame] = OrderedDict()  # frames prepare() saw, by index
        self._focal = StreamFocal(self.cfg.stream_focal)  # the stream's focal length, without intrinsics
        self._windows = 0  # windows predicted in this stream
        self._size: tuple[int, int] | None = None  # (W, H) of the last window
        self._stream_bend: float | None = None  # the lens a window of this stream took (lens_search.bend_of_k1)

    def reset(self) -> None:
        self._scale = self.cfg.feature_scale
        self._scale_votes = []
        self._focal.reset()
        self._stream_bend = None
        self._windows = 0
        self._size = None
        with self._lock:
            self._features.clear()
            self._matches.clear()
            self._recent.clear()

    # ---- cached per-frame and per-pair work --------------------------------------
    def prepare(self, frame: Frame) -> None:
        """Work that needs only this frame and the ones before it, run ahead by the reader (on
        several threads: OpenCV and BLAS release the GIL) while earlier windows are reconstructed:
        features, and verified matches with the previous ``match_neighbours`` and ``far_neighbours``
        frames (by index), which are the pairs a window of consecutive frames asks for."""
        scale = self._scale
        with self._lock:
            self._recent[frame.index] = frame
            while len(self._recent) > 4 * self._reach:
                self._recent.popitem(last=False)
            before = [self._recent.get(frame.index - k) for k in range(self._reach, 0, -1)]
        feats = self._features_of(frame, scale)
        for prev in before:
            if prev is None or prev.size != frame.size:
                continue  # not seen (yet): a window that needs the pair computes it
            m = self._verified(prev, frame, self._features_of(prev, scale), feats, scale)
            if prev.index == frame.index - 1:
                self._judge_scale(scale, 0 if m is None else len(m.idx_i))

    @property
    def _reach(self) -> int:
        """How many views on a view is matched with (near and far pairs)."""
        return max(self.cfg.match_neighbours, self.cfg.far_neighbours)

    def _judge_scale(self, scale: float, inliers: int) -> None:
        """Decide from the stream's first consecutive pairs whether reduced-size features will do:
        weakly textured scenes (DTU at 512 px: ~30 verified matches a pair at half size, where
        KITTI, fern and fountain-P11 have 90-250) go to full size before their first window
        instead of failing it once."""
        if scale >= 1.0 or self._scale_votes is None:
            return
        self._scale_votes.append(inliers)
        if len(self._scale_votes) >= self.cfg.scale_vote_pairs:
            if np.median(self._scale_votes) < self.cfg.min_pair_inliers:
                self._scale = 1.0
            self._scale_votes = None  # decided

    def _features_of(self, frame: Frame, scale: float) -> Features:
        """Features of a frame at a scale, computed once: a thread asking while another computes waits."""
        key = (frame.index, scale)
        with self._lock:
            fut = self._features.get(key)
            mine = fut is None
            if mine:
                fut = self._features[key] = Future()
                while len(self._features) > 2 * self.cfg.cache_frames:
                    self._features.popitem(last=False)
        if mine:
            try:
                fut.set_result(detect_features(frame.image, self.cfg.max_features, scale))
            except BaseException as exc:
                fut.set_exception(exc)
        return fut.result()

    def _verified(self, a: Frame, b: Frame, fa: Features, fb: Features, scale: float) -> PairMatches | None:
        """Verified matches of frames a and b (keypoint indices into fa / fb), cached by frame index."""
        key = (a.index, b.index, scale)
        with self._lock:
            if key in self._matches:
                return self._matches[key]
        m = verified_matches(fa, fb, 0, 1)
        with self._lock:
            self._matches[key] = m
            while len(self._matches) > 2 * self.cfg.cache_frames * self._reach:
                self._matches.popitem(last=False)
        return m

    def _match(self, frames: Sequence[Frame], feats: list[Features], i: int, j: int,
               scale: float) -> PairMatches | None:
        m = self._verified(frames[i], frames[j], feats[i], feats[j], scale)
        return None if m is None else PairMatches(i, j, m.idx_i, m.idx_j, m.F)

    def intrinsics_report(self) -> dict | None:
        """The stream's self-calibration for run.json (None when every window had intrinsics)."""
        return self._focal.report(self._size)

    def _structure(self, frames: Sequence[Frame], K: np.ndarray, known_K: bool, scale: float,
                   timings: dict[str, float], focal_prior=None, refine_focal: bool | None = None,
                   grow_k1: float = 0.0):
        """Features, matches, tracks and window SfM with features detected at ``scale`` (grown through the
        lens ``grow_k1``, k1 at ``K``, when it is not 0: ``WindowSfm.grow_k1``)."""
        t0 = time.perf_counter()
        near = self.cfg.match_neighbours
        pairs = [(i, j) for i in range(len(frames)) for j in range(i + 1, min(i + 1 + self._reach, len(frames)))]
        # Whatever prepare() did not do ahead (a feature-scale change, frames it skipped: keyframes of a
        # video are not consecutive) runs here, on both cores: SIFT and the matcher release the GIL.
        with ThreadPoolExecutor(self.cfg.threads) as pool:
            feats = list(pool.map(lambda f: self._features_of(f, scale), frames))
            found = [m for m in pool.map(lambda ij: self._match(frames, feats, ij[0], ij[1], scale), pairs)
                     if m is not None]
        # Views further apart still overlap in photo sets taken back and forth (rows of an object scan,
        # a drive seen again) and add observations to the adjustment; between them, a pair verified on
        # a handful of matches is as often a repeated facade as the same surface, so far pairs must be
        # strong ones.
        near_pairs = [m for m in found if m.j - m.i <= near]
        far = [m for m in found if m.j - m.i > near and len(m.idx_i) >= self.cfg.far_min_inliers]
        t1 = time.perf_counter()
        timings["features_matches"] = timings.get("features_matches", 0.0) + t1 - t0
        far_weak = len(found) - len(near_pairs) - len(far)
        matches = near_pairs + far
        tracks, window_sfm, sfm = self._grown(frames, feats, matches, K, known_K, focal_prior, refine_focal,
                                              grow_k1=grow_k1)
        far_check = None
        if far and sfm is not None and self.cfg.check_far_pairs:
            far_check, regrown = self._checked_far(frames, feats, near_pairs, far, sfm, K, known_K, focal_prior,
                                                   refine_focal)
            if regrown is not None:
                matches, (tracks, window_sfm, sfm) = regrown
        timings["sfm"] = timings.get("sfm", 0.0) + time.perf_counter() - t1
        stragglers = self._straggler_pairs(frames, feats, scale, sfm)
        if stragglers:
            t2 = time.perf_counter()
            grown = self._grown(frames, feats, matches + stragglers, K, known_K, focal_prior, refine_focal,
                                grow_k1=grow_k1)
            timings["sfm"] = timings.get("sfm", 0.0) + time.perf_counter() - t2
            if grown[2] is not None and len(grown[2].held_views) > len(sfm.held_views):
                matches = matches + stragglers
                tracks, window_sfm, sfm = grown
                sfm.info["far_pairs_for_stragglers"] = len(stragglers)
        pairs_used = {"near": sum(m.j - m.i <= near for m in matches), "far": sum(m.j - m.i > near for m in matches),
                      "far_weak": far_weak, "far_check": far_check.as_info() if far_check is not None else None}
        window_sfm.info["pairs"] = pairs_used  # a window without parallax reports it too
        if sfm is not None:
            sfm.info["pairs"] = pairs_used
        window_sfm.info["focal_evidence"] = window_sfm.focal_evidence
        window_sfm.info["principal_point"] = (window_sfm.principal_evidence, window_sfm.principal_applied)
        return sfm, feats, matches, tracks, window_sfm.info

    def _checked_far(self, frames: Sequence[Frame], feats: list[Features], near_pairs: list[PairMatches],
                     far: list[PairMatches], sfm: SfmResult, K: np.ndarray, known_K: bool, focal_prior, refine_focal):
        """Whether the structure ``sfm`` grown with the far pairs ``far`` turns its views apart from the one
        ``near_pairs`` grow alone, and if so the window grown again on the far matches that structure
        agrees with (recon/default/far_pairs.py): ``(report or None, None or (matches, _grown's result))``;
        the near structure itself when that regrowth fails or holds fewer views with points than it does.
        The near structure is grown only when the near pairs' own two-view rotations, chained, do not
        already agree with ``sfm`` within the gate (``chained_split_deg``: a chain overstates the split).
        It only has to say whether the far pairs turned the views, so it starts from the initial pair
        ``sfm`` started from when that is a near pair (ranking the candidates again is most of a
        growth's time, and a common start compares the two structures from the same two views), and
        without known intrinsics it is grown with the camera ``sfm`` calibrated (focal length and lens
        held; calibrating again costs more than the growth itself)."""
        chained = chained_split_deg(feats, near_pairs, sfm)
        if chained <= self.cfg.far_split_deg:
            return FarPairCheck(chained_deg=chained), None
        # a structure grown through a lens was so with its focal held, at K: the others grow through it too
        grow_k1 = sfm.radial_k1 if (sfm.info.get("lens") or {}).get("grown_through") else 0.0
        start = tuple(sfm.info.get("init_pair", (0, len(frames))))
        start = start if start[1] - start[0] <= self.cfg.match_neighbours else None
        if known_K:
            near = self._grown(frames, feats, near_pairs, K, known_K, focal_prior, refine_focal, start_pair=start)
        else:
            near = self._grown(frames, feats, near_pairs, sfm.K, False, None, False, lens_k1=sfm.radial_k1,
                               start_pair=start, grow_k1=grow_k1)
        near_tracks, _, near_sfm = near
        if near_sfm is None:
            return None, None
        split = rotation_split_deg(sfm, near_sfm)
        if split <= self.cfg.far_split_deg:
            return FarPairCheck(split_deg=split, chained_deg=chained), None
        kept, report = checked_far_pairs(far, feats, near_tracks, near_sfm, self.cfg.far_agree_px)
        report.split_deg, report.chained_deg = split, chained
        matches = near_pairs + kept
        regrown = self._grown(frames, feats, matches, K, known_K, focal_prior, refine_focal, grow_k1=grow_k1)
        if regrown[2] is None or len(regrown[2].held_views) < len(near_sfm.held_views):
            # the structure the far pairs turned is known wrong: the near one, consistent, stands in
            report.kept_near = True
            return report, (near_pairs, near)
        return report, (matches, regrown)

    def _grown(self, frames: Sequence[Frame], feats: list[Features], matches: list[PairMatches], K: np.ndarray,
               known_K: bool, focal_prior, refine_focal,
               lens_k1: float | None = None, start_pair: tuple[int, int] | None = None,
               grow_k1: float = 0.0) -> tuple[Tracks, WindowSfm, SfmResult | None]:
        """Tracks of ``matches`` and the window's structure grown on them; ``lens_k1``: the lens a held
        focal length is adjusted through (None: the stream's); ``start_pair``, ``grow_k1``: ``WindowSfm``'s."""
        tracks = build_tracks(feats, matches)
        if lens_k1 is None:
            lens_k1 = 0.0 if known_K or refine_focal else self._focal.lens_k1()
        window_sfm = WindowSfm(tracks, matches, len(frames), K, known_K, self.cfg.sfm, focal_prior, refine_focal,
                               frames[0].size, near_gap=self.cfg.match_neighbours,
                               focal_sigma_limit=self.cfg.stream_focal.max_prior_sigma,
                               stream_k1=lens_k1, start_pair=start_pair, grow_k1=grow_k1)
        return tracks, window_sfm, window_sfm.run()

    def _straggler_pairs(self, frames: Sequence[Frame], feats: list[Features], scale: float,
                         sfm: SfmResult | None) -> list[PairMatches]:
        """Strong pairs beyond the matching reach that involve a view ``sfm`` left unregistered
        (``DefaultModelConfig.far_pairs_for_stragglers``); empty when every view is registered or the
        window has no structure at all."""
        if not self.cfg.far_pairs_for_stragglers or sfm is None:
            return []
        missing = {v for v in range(len(frames)) if v not in sfm.w2c}
        pairs = [(i, j) for i in range(len(frames)) for j in range(i + 1 + self._reach, len(frames))
                 if i in missing or j in missing]
        if not pairs:
            return []
        with ThreadPoolExecutor(self.cfg.threads) as pool:
            found = pool.map(lambda ij: self._match(frames, feats, ij[0], ij[1], scale), pairs)
            return [m for m in found if m is not None and len(m.idx_i) >= self.cfg.far_min_inliers]

    # ---- the window ------------------------------------------------------------------
    def predict(self, frames: Sequence[Frame]) -> WindowPrediction:
        if len(frames) < 2:
            raise WindowModelError(f"a window needs at least 2 frames, got {len(frames)}")
        sizes = {f.size for f in frames}
        if len(sizes) != 1:
            raise WindowModelError(f"frames of one window must share a size, got {sorted(sizes)}")
        W, H = frames[0].size
        window = self._windows
        self._windows += 1
        self._size = (W, H)
        timings: dict[str, float] = {}
        known_K = all(f.K is not None for f in frames)
        focal_prior, refine_focal = None, None
        if known_K:
            K = np.asarray(frames[0].K, np.float64)
        else:  # the stream's focal so far: fixed, or the start and prior of this window's own
            stated = [f.focal_hint for f in frames if f.focal_hint is not None]
            if stated:
                self._focal.state((W, H), float(np.median(stated)))
            K = self._focal.intrinsics((W, H))
            refine_focal = not self._focal.fixed
            focal_prior = self._focal.prior((W, H))
            if K is None:
                K = prior_intrinsics(W, H, self.cfg.focal_prior)

        scale = self._scale
        sfm, feats, matches, tracks, evidence = self._structure(frames, K, known_K, scale, timings,
                                                                focal_prior, refine_focal)
        if scale < 1.0 and (sfm is None or len(sfm.w2c) < len(frames)):
            # Cheap features were not enough (wide baselines, weak texture): full resolution,
            # and for the rest of the stream, whose next windows are likely the same.
            scale = self._scale = 1.0
            sfm, feats, matches, tracks, evidence = self._structure(frames, K, known_K, scale, timings,
                                                                    focal_prior, refine_focal)
        focal = evidence.pop("focal_evidence", None)
        principal, principal_applied = evidence.pop("principal_point", (None, None))
        if sfm is None:
            return self._rotation_only(frames, K, feats, matches, timings, evidence)
        # a stream that took a lens grows its later windows through it too
        misread = refine_focal and (self._stream_bend is not None or self._lens_misread(focal, sfm, (W, H)))
        if refine_focal and (misread or not self._focal_determined(focal, (W, H))):
            held = self._solve_with_focal_held(frames, K, known_K, scale, timings, window, focal, misread,
                                               (sfm, feats, matches, tracks, evidence))
            if held is not None:
                sfm, feats, matches, tracks = held
                focal = None
        if focal is not None and refine_focal:
            used = self._focal.add(window, (W, H), focal.log_focal, focal.sigma_log, focal.noise_px2,
                                   principal, principal_applied, sfm.K[:2, 2], sfm.info.get("lens"))
            sfm.info["focal_evidence"] = {"focal_px": float(np.exp(focal.log_focal)), "sigma_rel": focal.sigma_log,
                                          "used": used}
        sfm.info["feature_scale"] = scale

        posed = sorted(sfm.w2c)
        K = sfm.K
        ref = posed[0]
        # Window frame = first posed camera; scale = median sparse depth of that view is 1.
        to_ref = invert_se3(sfm.w2c[ref])
        w2c = {v: sfm.w2c[v] @ to_ref for v in posed}
        pts_ref = sfm.points @ sfm.w2c[ref][:3, :3].T + sfm.w2c[ref][:3, 3]
        scale = 1.0 / max(float(np.median(pts_ref[:, 2])), 1e-9)
        for v in posed:
            w2c[v][:3, 3] *= scale
        points = pts_ref * scale

        t2 = time.perf_counter()
        centres = np.stack([invert_se3(w2c[v])[:3, 3] for v in posed])
        w2c_list = [w2c[v] for v in posed]
        images, K_dense = dense_inputs([frames[v].image for v in posed], K, self.cfg.dense.max_side)
        flows = FlowCache(images, self.cfg.dense)
        h, w = images[0].shape[:2]
        depth = np.zeros((len(posed), h, w), np.float32)
        conf = np.zeros_like(depth)
        plans = [self._dense_plan(k, points, w2c[v], K, (W, H), centres) for k, v in enumerate(posed)]
        flows.precompute([p for k, (nb, _) in enumerate(plans) for j in nb for p in ((k, j), (j, k))])

        def fuse(k: int) -> None:
            nb, depth_range = plans[k]
            depth[k], conf[k] = dense_depth(k, flows, K_dense, w2c_list, nb, depth_range, self.cfg.dense)

        with ThreadPoolExecutor(self.cfg.threads) as pool:  # numpy releases the GIL on these arrays
            list(pool.map(fuse, range(len(plans))))
        depth, conf = upsample_depth(depth, conf, W, H)
        sparse = sparse_tracks(tracks, sfm.point_track, points, posed, w2c_list, K,
                               [frames[v].image for v in posed], self.cfg.sfm.max_reproj_px, sfm.radial_k1)
        from_tracks = fill_sparse_depth(depth, conf, sparse, w2c_list, self.cfg.sparse_depth)
        turned = np.isin(posed, sfm.info.get("rotation_only_views", []))  # a turn on the spot: no depth
        depth[turned], conf[turned] = 0.0, 0.0
        from_tracks = [k for k in from_tracks if not turned[k]]
        timings["dense"] = time.perf_counter() - t2

        info = dict(sfm.info)
        info["timings"] = timings
        info["unposed_sources"] = [frames[v].source for v in range(len(frames)) if v not in sfm.w2c]
        info["self_calibrated"] = not known_K
        if not known_K:
            info["focal_fixed"] = not refine_focal  # solved with the stream's fixed focal length
            self._stream_intrinsics(info, (W, H))
        info["sparse_points"] = sparse.num_points
        info["depth_from_tracks"] = from_tracks  # views (of the prediction) whose depth is only their tracks' points
        pred = self._prediction(frames, posed, w2c_list, K, depth, conf, info, sparse)
        return replace(pred, rotation_only=turned) if turned.any() else pred

    def _dense_plan(self, k: int, points: np.ndarray, w2c: np.ndarray, K: np.ndarray, size: tuple[int, int],
                    centres: np.ndarray) -> tuple[list[int], tuple[float, float]]:
        """View ``k``'s flow neighbours (by the median depth of the window's points in front of it) and
        the range its dense depth must fall in, from the z-depths of the points inside its image
        (``size`` (W, H), ``K`` at that size): points beside the camera, in front of its plane but out
        of view (a turn), would let flow errors through at a tiny depth."""
        uv, z = project_points(points, K, invert_se3(w2c))
        inside = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= size[0] - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= size[1] - 0.5)
        front = z[z > 0]
        med = float(np.median(front)) if len(front) else 1.0
        z = z[inside] if inside.sum() > MIN_RANGE_POINTS else front
        lo, hi = (np.percentile(z, 1) * 0.5, np.percentile(z, 99) * 2.0) if len(z) > MIN_RANGE_POINTS else (1e-3, 1e3)
        return choose_neighbours(k, centres, med, self.cfg.dense), (lo, hi)

    def _solve_with_focal_held(self, frames, K: np.ndarray, known_K: bool, scale: float, timings: dict,
                               window: int, focal, search_lens: bool = False, free_solve: tuple | None = None):
        """A window whose observations leave the focal free (a sideways slide past a flat scene):
        whatever its adjustment ended on is arbitrary and bends its depth, so it is solved again with
        the focal ``K`` it started from (the stream's so far, or the prior's). The free evidence is
        listed (unused) in the stream's report, and the structure's ``info`` says ``focal_held``.
        With ``search_lens`` it is also grown through candidate lenses (``_lens_trials``), and a lens that
        fits clearly better than the free solve ``free_solve`` (``_structure``'s result) does is taken
        without growing the held pinhole at all: the held pinhole fits no better than the free one.
        Returns (sfm, feats, matches, tracks), or None when the held solve finds no structure."""
        W, H = frames[0].size
        trials = self._lens_trials(frames, K, scale, timings) if search_lens else None
        chosen = None
        if trials and free_solve is not None and free_solve[0] is not None:
            chosen = self._chosen_lens(trials, free_solve, "free", (W, H))
            chosen = None if chosen is free_solve else chosen
        if chosen is None:
            chosen = self._structure(frames, K, known_K, scale, timings, None, False)
            if chosen[0] is None:  # the caller keeps the free solve, and reports its evidence once
                return None
            if trials is not None:
                chosen = self._chosen_lens(trials, chosen, "held", (W, H))
        sfm, feats, matches, tracks, evidence = chosen
        free = focal is not None and bool(np.isfinite(focal.log_focal))
        implausible = free and not self._focal_plausible(focal, (W, H))
        if free:  # run.json lists the lens the held solve was adjusted or grown through, and the search
            search = sfm.info.get("lens_search")
            lens = {**(sfm.info.get("lens") or {}), **({"search": search} if search else {})}
            self._focal.add(window, (W, H), focal.log_focal, focal.sigma_log, focal.noise_px2, lens=lens or None,
                            misread=bool(lens.get("grown_through")))
        if self._focal.log_rel is None:
            self._focal.held_rel = float(K[0, 0]) / max(W, H)
        evidence.pop("focal_evidence", None)
        evidence.pop("principal_point", None)
        evidence["focal_held"] = {"focal_px": float(K[0, 0]),
                                  "free_estimate_px": float(np.exp(focal.log_focal)) if free else None,
                                  "free_sigma_rel": focal.sigma_log if focal is not None else None}
        if implausible:
            evidence["focal_held"]["implausible"] = True
        sfm.info.update(evidence)
        return sfm, feats, matches, tracks

    def _lens_misread(self, focal, sfm: SfmResult | None, size: tuple[int, int]) -> bool:
        """Whether a self-calibrating window's pinhole solve, or the lens pass that started from it, put
        its focal length where no rectilinear lens has it (``_focal_plausible``): the sign of a strong
        barrel lens read by a pinhole (recon/default/lens_search.py). False when the search is off."""
        if not self.cfg.lens_search.bends or sfm is None:
            return False
        lens = sfm.info.get("lens") or {}
        focals = [float(np.exp(focal.log_focal))] if focal is not None and np.isfinite(focal.log_focal) else []
        if lens.get("focal_px") and not lens.get("kept"):
            focals.append(float(lens["focal_px"]))
        return any(not self.cfg.stream_focal.plausible(float(np.log(f / max(size)))) for f in focals)

    def _lens_trials(self, frames, K: np.ndarray, scale: float, timings: dict) -> list[tuple[LensTrial, tuple]]:
        """The window held at ``K`` and grown through each candidate lens (``LensSearchConfig.bends``, or
        the bend this stream took before): (trial, ``_structure``'s result) for each that found a structure."""
        size = frames[0].size
        bends = (self._stream_bend,) if self._stream_bend is not None else self.cfg.lens_search.bends
        found = []
        for bend in bends:
            grown = self._structure(frames, K, False, scale, timings, None, False, grow_k1=k1_of_bend(bend, K, size))
            sfm = grown[0]
            if sfm is not None:
                trial = LensTrial(bend, sfm.radial_k1, float(sfm.info.get("median_reproj_px", np.nan)),
                                  len(sfm.held_views))
                found.append((trial, grown))
        return found

    def _chosen_lens(self, trials: list[tuple[LensTrial, tuple]], pinhole: tuple, against: str,
                     size: tuple[int, int]) -> tuple:
        """Of the lens ``trials`` and the pinhole solve ``pinhole`` (``_structure``'s result; ``against``:
        "free" or "held", which one it is) of a window of ``size`` (W, H), the one ``lens_search.chosen_trial`` picks; its
        ``info["lens_search"]`` says what was tried, and a lens taken becomes the stream's bend."""
        base = pinhole[0]
        base_median = float(base.info.get("median_reproj_px", np.nan))
        best = chosen_trial([t for t, _ in trials], base_median, len(base.held_views), self.cfg.lens_search)
        chosen = pinhole if best is None else next(grown for t, grown in trials if t is best)
        report = {"against": against, "pinhole_median_reproj_px": round(base_median, 4),
                  "trials": [t.as_info() for t, _ in trials], "taken": best is not None}
        if best is not None:
            self._stream_bend = bend_of_k1(best.radial_k1, chosen[0].K, size)
            report["stream_bend"] = round(self._stream_bend, 4)
        chosen[0].info["lens_search"] = chosen[4]["lens_search"] = report
        return chosen

    def _focal_determined(self, focal, size: tuple[int, int]) -> bool:
        """Whether a self-calibrating window's focal evidence (``bundle.FocalEvidence`` or None) pins
        its focal down well enough for the stream to use it (``StreamFocalConfig.max_prior_sigma``), at a
        focal length a rectilinear lens can have (``_focal_plausible``)."""
        return (focal is not None and bool(np.isfinite(focal.sigma_log))
                and focal.sigma_log <= self.cfg.stream_focal.max_prior_sigma and self._focal_plausible(focal, size))

    def _focal_plausible(self, focal, size: tuple[int, int]) -> bool:
        """Whether ``focal``'s estimate (px at ``size`` (W, H)) is one a rectilinear lens can have
        (``StreamFocalConfig.plausible``): else the window would be solved with a pinhole fitted to a bending lens."""
        return self.cfg.stream_focal.plausible(focal.log_focal - float(np.log(max(size))))

    def _stream_intrinsics(self, info: dict, size: tuple[int, int]) -> None:
        """The stream's K so far, for the aligner's reference (``info["stream_K"]``, [3, 3] list)."""
        K = self._focal.intrinsics(size)
        if K is not None:
            info["stream_K"] = K.tolist()
            info["stream_focal_fixed"] = self._focal.fixed

    def _prediction(self, frames, posed, w2c_list, K, depth, conf, info, sparse=None) -> WindowPrediction:
        c2w = invert_se3(np.stack(w2c_list))
        pts = unproject_depth_maps(depth, K, c2w)
        sel = [frames[v] for v in posed]
        return WindowPrediction(
            frame_indices=np.array([f.index for f in sel], np.int64),
            timestamps=np.array([f.timestamp for f in sel], np.float64),
            sources=tuple(f.source for f in sel),
            images=np.stack([f.image for f in sel]),
            depth=depth,
            depth_conf=conf,
            c2w=c2w,
            K=np.repeat(K[None], len(sel), axis=0),
            points=pts,
            points_conf=conf.copy(),
            pixel_maps=np.stack([f.pixel_map for f in sel]),
            input_sizes=np.array([f.input_size for f in sel], np.int64),
            backend=self.name,
            info=info,
            sparse=sparse,
        )

    def _rotation_only(self, frames, K, feats, matches, timings, evidence: dict) -> WindowPrediction:
        """No parallax (static camera or pure rotation), or parallax on too few matches or too short
        a baseline to triangulate: chain rotations from homographies.

        Depth cannot be known; it is set to a nominal 1 with zero confidence so
        nothing downstream trusts it, and poses keep the camera at one place. A frame that shares
        too few matches with every frame posed before it has no rotation either: it is left unposed
        (``unposed_sources``), and a window none of whose frames relate to another is refused
        (``WindowModelError``: covered, blank or noise frames).
        """
        n = len(frames)
        rotations = _HomographyRotations(K, feats, matches)
        posed: dict[int, np.ndarray] = {}
        for anchor in range(n - 1):  # the first frame that relates to a later one anchors the chain
            posed = _chain_rotations(anchor, n, rotations)
            if len(posed) >= 2:
                break
        if len(posed) < 2:
            raise WindowModelError("no two frames of the window share enough matched features to relate "
                                   "them (covered, blank or noise frames?): nothing to pose")
        order = sorted(posed)
        w2c = []
        for v in order:
            T = np.eye(4)
            T[:3, :3] = posed[v]
            w2c.append(T)
        W, H = frames[0].size
        depth = np.ones((len(order), H, W), np.float32)
        conf = np.zeros((len(order), H, W), np.float32)
        why = evidence.pop("no_structure", None) or "no parallax"
        info = {**evidence, "degenerate": f"{why}: rotation-only poses, depth unconfident", "timings": timings,
                "unposed_sources": [frames[v].source for v in range(n) if v not in posed],
                "self_calibrated": not all(f.K is not None for f in frames)}
        if info["self_calibrated"]:
            self._stream_intrinsics(info, (W, H))
        pred = self._prediction(frames, order, w2c, K, depth, conf, info)
        return replace(pred, rotation_only=np.ones(len(order), bool))  # carried to trajectory.json's pose_kind


class _HomographyRotations:
    """The rotation [3, 3] taking view i's world-to-camera rotation to view j's (i < j), from a
    homography of their matches (a camera that only rotates); None for pairs with under 8 matches.
    Computed when first asked for: a chain of consecutive views needs only its neighbours'."""

    def __init__(self, K: np.ndarray, feats, matches) -> None:
        self.K, self.Kinv, self.feats = K, np.linalg.inv(K), feats
        self.by_pair = {(m.i, m.j): m for m in matches}
        self._cache: dict[tuple[int, int], np.ndarray | None] = {}

    def __call__(self, i: int, j: int) -> np.ndarray | None:
        if (i, j) not in self._cache:
            self._cache[(i, j)] = self._solve(self.by_pair.get((i, j)))
        return self._cache[(i, j)]

    def _solve(self, m) -> np.ndarray | None:
        if m is None or len(m.idx_i) < 8:
            return None
        Hm, _ = cv2.findHomography(self.feats[m.i].keypoints[m.idx_i], self.feats[m.j].keypoints[m.idx_j],
                                   cv2.RANSAC, 2.0)
        if Hm is None:
            return None
        U, _, Vt = np.linalg.svd(self.Kinv @ Hm @ self.K)
        R = U @ Vt
        return -R if np.linalg.det(R) < 0 else R


def _chain_rotations(anchor: int, n: int, rotation) -> dict[int, np.ndarray]:
    """World-to-camera rotations of the views that relate, pair by pair, to view ``anchor`` (the
    identity): each later view from the nearest posed view before it, each earlier one from the
    nearest posed view after it; ``rotation(i, j)`` as ``_HomographyRotations``."""
    posed = {anchor: np.eye(3)}
    for v in range(anchor + 1, n):
        for u in range(v - 1, -1, -1):
            if u in posed and (R := rotation(u, v)) is not None:
                posed[v] = R @ posed[u]
                break
    for v in range(anchor - 1, -1, -1):
        for u in range(v + 1, n):
            if u in posed and (R := rotation(v, u)) is not None:
                posed[v] = R.T @ posed[u]
                break
    return posed
