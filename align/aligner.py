"""Streaming alignment: place each window's prediction in one world frame.

``StreamAligner.add`` takes windows in stream order. The first window
defines the world (identity). Each later window must share at least one
frame (by ``frame_indices``) with the previous one; those shared frames give
the window-to-world Sim(3) (:mod:`align.sim3`) and, with ``layerwise``, the
per-layer depth scales (:mod:`align.layerwise`). Only the previous window's
last ``overlap`` frames are kept, so work and memory per window do not grow
with the stream. With ``loop_closure`` on, each window's keyframes also go to
the global map (:mod:`align.globalmap`): loops found there move the window
before it is emitted and report the earlier windows they moved in
``AlignedWindow.moved``; the keyframe database is capped.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from align.confidence import confidence_mask
from align.config import AlignConfig
from align.globalmap import MAX_LOOP_PAIR_SETS, GlobalMap, LoopPairs
from align.layers import layer_thresholds, segment_window
from align.layerwise import cross_window_seeds, propagate_scales
from align.mapfile import MapKeyframe
from align.reattach import LinkNoise, SegmentLinker, lift_keyframe
from align.sim3 import noise_at, overlap_noise, register_overlap
from align.validate import unusable_reason
from stream4d.contracts import AlignedWindow, Reattachment, WindowPrediction
from stream4d.geometry import Sim3, invert_se3, pixel_grid, transform_point_maps

MAP_FRAMES_PER_TRY = 5  # frames of a window matched against a saved map while not yet found in it


class AlignmentError(ValueError):
    """A window cannot be placed in the stream's world (the message says which and why)."""


class UnusableWindowError(AlignmentError):
    """The model's output for one window is unusable (non-finite poses, intrinsics or depth; see
    ``align.validate``). The aligner's state is as before the window, so the stream can go on: the next
    window registers on the last good one if they share frames, else starts a new segment."""

    def __init__(self, message: str, window_index: int, frame_indices: list[int], reason: str):
        super().__init__(message)
        self.window_index = window_index  # position of the window among those given to the aligner
        self.frame_indices = frame_indices  # Frame.index of its views
        self.reason = reason


@dataclass
class _OverlapState:
    """The previous window's last frames: all the aligner remembers."""

    frame_indices: np.ndarray  # int64 [O]
    c2w: np.ndarray  # float64 [O, 4, 4], world
    depth: np.ndarray  # float32 [O, H, W], world scale, layer scales applied (what was emitted)
    mask: np.ndarray  # bool [O, H, W], trusted pixels
    labels: np.ndarray | None  # int32 [O, H, W], layers (None without layerwise, or not yet made)
    registration_depth: np.ndarray | None = None  # float32 [O, H, W], to register on; None: ``depth``
    layer_thresholds: tuple[float, float] | None = None  # the window's, to segment ``depth`` when first
    # needed: the first window of a world leaves its layers to the next window (a stream's last window
    # never needs them; in a stream the work moves to the align thread's next turn)

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the frames' model images."""
        return int(self.depth.shape[2]), int(self.depth.shape[1])

    @property
    def nbytes(self) -> int:
        arrays = [self.frame_indices, self.c2w, self.depth, self.mask, self.labels, self.registration_depth]
        return sum(a.nbytes for a in arrays if a is not None)


def _intrinsics_agree(K: np.ndarray, K_ref: np.ndarray, rtol: float) -> bool:
    """fx, fy, cx, cy of every frame of ``K [S, 3, 3]`` within ``rtol`` of ``K_ref [3, 3]``."""
    idx = ([0, 1, 0, 1], [0, 1, 2, 2])
    params = K[:, idx[0], idx[1]]
    ref = K_ref[idx[0], idx[1]]
    return bool(np.all(np.abs(params - ref) <= rtol * np.abs(ref)))


class StreamAligner:
    """Places windows of a stream in one world frame (see the module docstring)."""

    def __init__(self, config: AlignConfig | None = None):
        self.config = config if config is not None else AlignConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next window defines a new world (segment 0)."""
        self._state: _OverlapState | None = None
        self._K_refs: dict[tuple[int, int], np.ndarray] = {}  # (W, H) -> [3, 3]: per model size
        self._size: tuple[int, int] | None = None  # (W, H) of the first window
        self._count = 0
        self._segment = 0
        self._next_segment = 1
        self._overlap_noise: tuple[float, float, float] | None = None  # the last registration's (overlap_noise)
        # This window's re-attachment noise and where it was measured (SegmentLinker.measure), or None.
        self._link_noise: LinkNoise | None = None
        self._detached: set[int] = set()  # segments started by a gap and not yet found in an earlier world
        self._last_scale: float | None = None  # window-to-world scale of the last window emitted with parallax
        # The segment a gap just left and the scale of its last window, while the window that started the
        # new segment is being placed (a bridge: see _reattach); None otherwise.
        self._bridge_from: tuple[int, float] | None = None
        self._linker = SegmentLinker(self.config.reattach)
        self.global_map = GlobalMap(self.config.loop_closure) if self.config.loop_closure.enabled else None
        # Each re-attachment link's PnP inliers as image matches, held (as the global map holds its loops')
        # for a final adjustment, which ties a re-attached segment to its world with them.
        self.link_pairs: deque[LoopPairs] = deque(maxlen=MAX_LOOP_PAIR_SETS)
        # The last window's keyframe, lifted (SIFT) only when the next window arrives: a stream's
        # last window never needs one. (segment, lift_keyframe arguments)
        self._pending_keyframe: tuple[int, tuple] | None = None
        # Every keyframe per segment with its view, for a saved map (align.mapfile); None: not kept.
        self._map: dict[int, list[MapKeyframe]] | None = None
        self.map_link: Reattachment | None = None  # how a stream started by start_from_map found the map
        self._map_per_window = 1
        self._pending_map: list[tuple[int, tuple]] = []  # more of the last window's frames, for the map only
        self._from_map = False
        self._map_window: dict[int, int] = {}  # frame index of a recorded map keyframe -> its window
        self._map_loaded: set[int] = set()  # ids of a saved map's keyframes: another run's frame indices

    # ---- persistent maps -------------------------------------------------------------------
    @property
    def segment(self) -> int:
        """The world segment the next window continues (0 for a stream that started from a map and found it)."""
        return self._segment

    @property
    def model_size(self) -> tuple[int, int] | None:
        """(W, H) of the model images of the stream's first window (None before it). Windows of another
        size (portrait photos among landscape ones) share no frame with it and start segments of their own."""
        return self._size

    def record_map(self, per_window: int = 3) -> None:
        """Keep keyframes for ``map_keyframes``: ``per_window`` new frames of every window (evenly spread,
        the last one the re-attachment keyframe) with their pose and intrinsics. Unlike the re-attachment
        keyframes these are not bounded: a saved map grows with the stream."""
        if per_window < 1:
            raise ValueError(f"record_map needs per_window >= 1, got {per_window}")
        if self._map is None:
            self._map = {}
        self._map_per_window = per_window

    def start_from_map(self, keyframes: list[MapKeyframe]) -> None:
        """Begin the stream inside a saved map: its keyframes form segment 0 (the map's world) and the
        stream starts detached in segment 1, which re-attachment moves into the map once a window matches."""
        if self._count or self._state is not None:
            raise AlignmentError("start_from_map must come before the first window")
        if not self._linking():
            raise AlignmentError("starting from a map needs new_segment_on_gap and reattach.enabled")
        self._linker.add_segment(0, [m.keyframe for m in keyframes])
        if self._map is not None:
            self._map[0] = list(keyframes)
            self._map_loaded = {id(m) for m in keyframes}
        self._segment, self._next_segment = 1, 2
        self._detached = {1}
        self._from_map = True

    def map_keyframes(self, segment: int | None = None) -> list[MapKeyframe]:
        """The recorded keyframes of ``segment`` (default: the current one), the last window's included."""
        if self._map is None:
            raise AlignmentError("map keyframes were not recorded: call record_map() before the stream")
        self._lift_pending_keyframe()
        return list(self._map.get(self._segment if segment is None else segment, ()))

    @property
    def state_nbytes(self) -> int:
        """Bytes of array state carried to the next window (bounded by ``overlap`` frames)."""
        ref = sum(K.nbytes for K in self._K_refs.values())
        return ref + (0 if self._state is None else self._state.nbytes)

    @property
    def keyframe_nbytes(self) -> int:
        """Bytes of the keyframes kept for re-attaching segments (bounded by ``ReattachConfig``)."""
        pending = 0 if self._pending_keyframe is None else sum(
            a.nbytes for a in self._pending_keyframe[1] if isinstance(a, np.ndarray))
        database = 0 if self.global_map is None else self.global_map.nbytes
        links = sum(lp.query_uv.nbytes + lp.match_uv.nbytes for lp in self.link_pairs)
        return self._linker.nbytes + pending + database + links

    def add(self, pred: WindowPrediction) -> AlignedWindow:
        """Place ``pred`` in the world; see :class:`AlignConfig` for the behaviour."""
        start = time.perf_counter()
        self._check(pred)
        self._lift_pending_keyframe()
        cfg = self.config
        S = pred.num_frames
        usable = np.isfinite(pred.depth) & (pred.depth > 0) & np.isfinite(pred.points).all(axis=-1)
        depth = np.where(usable, pred.depth, 0.0).astype(np.float32)
        mask = confidence_mask(pred.depth_conf, depth, cfg.conf_quantile)  # bool [S, H, W]
        cam_points, K_used, intrinsics = self._camera_points(pred, depth)  # [S, H, W, 3], own scale
        info: dict = {"intrinsics": intrinsics, "trusted_fraction": float(mask.mean())}

        state, shared_prev, shared_new, sim3 = self._register(pred, depth, mask, info)
        is_new = np.ones(S, bool)
        is_new[shared_new] = False
        depth *= np.float32(sim3.s)
        tail = np.arange(max(0, S - cfg.overlap), S)  # what the next window may share
        labels_tail = registration_depth = None
        if cfg.layerwise and state is not None and self._state_labels(state) is not None:
            labels = self._layers(depth, mask)
            scale_map = self._layer_scales(state, shared_prev, shared_new, labels, depth, mask, info)
            if not cfg.register_on_layer_depth:
                registration_depth = depth[tail].copy()
            depth *= scale_map
            cam_points *= scale_map[..., None]
            labels_tail = labels[tail]

        c2w = sim3.apply_c2w(pred.c2w)  # [S, 4, 4]
        if not np.all(np.isfinite(c2w)):  # a degenerate overlap fit; nothing kept of this window yet
            self._refuse(pred, f"was registered by a non-finite similarity (scale {sim3.s!r})")
        cam_points *= np.float32(sim3.s)
        link, depth_factor = self._reattach(pred, depth, K_used, c2w, is_new, info)
        self._bridge_from = None
        if link is not None:
            c2w = link.sim3.apply_c2w(c2w)
            depth_scale = np.float32(link.sim3.s * depth_factor)
            cam_points *= depth_scale
            depth *= depth_scale
            if registration_depth is not None:
                registration_depth *= depth_scale
            info["reattached"] = {"from_segment": link.from_segment, "to_segment": link.to_segment,
                                  "inliers": link.inliers, "scale": float(link.sim3.s)}
            if depth_factor != 1.0:
                info["reattached"]["depth_factor"] = depth_factor
            if self._link_noise is not None:
                rotation, centre, log_scale = self._link_noise.sigma
                info["reattached"]["sigma"] = {"rotation_deg": float(np.degrees(rotation)), "centre": centre,
                                               "log_scale": log_scale}
        moved, own_correction = {}, None
        update = self._global_step(pred, depth, K_used, c2w, is_new, state is not None, link, info,
                                   sim3 if link is None else link.sim3.compose(sim3))
        if update is not None and update.corrections:
            own = update.corrections.get(self._count)
            if own is not None:  # this window moves with the loop before anything of it is emitted
                c2w = own.apply_c2w(c2w)
                cam_points *= np.float32(own.s)
                depth *= np.float32(own.s)
                if registration_depth is not None:
                    registration_depth *= np.float32(own.s)
                own_correction = own
            moved = {w: c for w, c in update.corrections.items() if w != self._count}
            self._move_map_keyframes(moved)
        self._remember_keyframe(pred, depth, K_used, c2w, is_new)  # in the world the window is emitted in
        if update is not None and update.relocations:
            position = {int(f): k for k, f in enumerate(pred.frame_indices)}
            for r in update.relocations:  # pose from PnP on an old keyframe; its own depth is not trusted
                k = position[r.frame_index]
                moved_match = update.corrections.get(r.match_window)  # a loop of this window moved that world
                c2w[k] = r.c2w if moved_match is None else moved_match.apply_c2w(r.c2w)
                depth[k] = 0.0
                cam_points[k] = 0.0
                mask[k] = False
                if registration_depth is not None and k in tail:
                    registration_depth[int(np.flatnonzero(tail == k)[0])] = 0.0
        world_points = transform_point_maps(c2w.astype(np.float32), cam_points)
        # First window of a world: the next window segments the frames it links to (with this window's
        # thresholds), so a stream's last window costs no segmentation.
        thresholds = (layer_thresholds(depth, mask, cfg.layer_merge_fraction)
                      if cfg.layerwise and labels_tail is None else None)
        self._state = _OverlapState(
            frame_indices=pred.frame_indices[tail].copy(), c2w=c2w[tail].copy(), depth=depth[tail].copy(),
            mask=mask[tail].copy(), labels=labels_tail, registration_depth=registration_depth,
            layer_thresholds=thresholds)

        rotation_only = pred.rotation_only
        if not (usable & (pred.depth_conf > 0)).any() and (pred.sparse is None or not len(pred.sparse.points)):
            # Not one confident depth pixel and no triangulated track: whatever the model says about its
            # poses, it saw no parallax it could use; only orientations are worth anything. (Tracks
            # without dense depth are wide baselines that optical flow cannot follow: those poses stand.)
            rotation_only = np.ones(S, bool)
            info["no_parallax"] = True
        if link is not None:
            sim3 = link.sim3.compose(sim3)  # what took the window's own frame to the world it is in
        if own_correction is not None:
            sim3 = own_correction.compose(sim3)
        sparse = None if pred.sparse is None else pred.sparse.transformed(sim3)  # moves with the poses
        aligned = replace(pred, depth=depth, c2w=c2w, K=K_used, points=world_points, info=dict(pred.info),
                          rotation_only=rotation_only, sparse=sparse)
        info["time_s"] = time.perf_counter() - start
        if rotation_only is None or not np.all(rotation_only):  # a window without parallax has no scale
            self._last_scale = float(sim3.s)
        out = AlignedWindow(prediction=aligned, sim3_scale=float(sim3.s), sim3_R=sim3.R.copy(),
                            sim3_t=np.asarray(sim3.t, np.float64).copy(), is_new=is_new,
                            window_index=self._count, segment=self._segment, info=info, reattached=link,
                            moved=moved)
        self._count += 1
        return out

    def _register(self, pred: WindowPrediction, depth: np.ndarray, mask: np.ndarray, info: dict
                  ) -> tuple[_OverlapState | None, np.ndarray, np.ndarray, Sim3]:
        """Window-to-world Sim(3); also the state it was registered against and the shared frames' positions."""
        none = np.zeros(0, np.int64)
        state = self._state
        self._overlap_noise = None
        if state is None:
            info["placement"] = "first window"
            return None, none, none, Sim3.identity()
        _, shared_prev, shared_new = np.intersect1d(
            state.frame_indices, pred.frame_indices, assume_unique=True, return_indices=True)
        if len(shared_new) == 0:
            self._start_segment_or_raise(pred, state)
            info["placement"] = "new segment"
            return None, none, none, Sim3.identity()
        cfg = self.config
        world_depth = state.depth if state.registration_depth is None else state.registration_depth
        reg = register_overlap(
            world_depth[shared_prev], depth[shared_new], state.mask[shared_prev] & mask[shared_new],
            state.c2w[shared_prev], pred.c2w[shared_new],
            iters=cfg.irls_iters, tol=cfg.irls_tol, min_pixels=cfg.min_overlap_pixels)
        if (reg.scale_source == "unit" and self._linking() and self._linker.has_structure(self._segment)
                and self._scale_matters(pred, shared_new, mask)):
            # The shared frames fix where the window is but not its size, and the window has a size
            # (parallax of its own): a new segment, bridged through the keyframes (see _reattach).
            self._start_segment_or_raise(pred, state)
            info.update(placement="new segment", shared_frames=int(len(shared_new)), unscaled_overlap=True,
                        fallback_reason=reg.fallback_reason)
            return None, none, shared_new, Sim3.identity()
        self._overlap_noise = None if reg.scale_source != "depth" else overlap_noise(
            reg.sim3, world_depth[shared_prev], depth[shared_new], state.mask[shared_prev] & mask[shared_new],
            state.c2w[shared_prev], pred.c2w[shared_new], min_pixels=cfg.min_overlap_pixels)
        info.update(placement="registered", shared_frames=int(len(shared_new)), scale_source=reg.scale_source,
                    overlap_pixels=reg.overlap_pixels, degenerate_overlap=reg.scale_source != "depth")
        if self._overlap_noise is not None:
            rotation, centre, log_scale = self._overlap_noise
            info["overlap_noise"] = {"rotation_deg": float(np.degrees(rotation)), "centre": centre,
                                     "scale_pct": 100.0 * log_scale}
        if reg.fallback_reason:
            info["fallback_reason"] = reg.fallback_reason
        if reg.scale_fit is not None:
            info.update(irls_iterations=reg.scale_fit.iterations, scale_inlier_fraction=reg.scale_fit.inlier_fraction)
        return state, shared_prev, shared_new, reg.sim3

    @staticmethod
    def _scale_matters(pred: WindowPrediction, shared: np.ndarray, mask: np.ndarray) -> bool:
        """Whether the window's frames beyond ``shared`` have depth or tracks, so a wrong scale would show."""
        rest = np.setdiff1d(np.arange(pred.num_frames), shared)
        if pred.rotation_only is not None and np.asarray(pred.rotation_only)[rest].all():
            return False
        return bool(mask[rest].any()) or (pred.sparse is not None and len(pred.sparse.points) > 0)

    def _layer_scales(self, state: _OverlapState, shared_prev: np.ndarray, shared_new: np.ndarray,
                      labels: np.ndarray, depth: np.ndarray, mask: np.ndarray, info: dict) -> np.ndarray:
        """Per-pixel layer scales ``float32 [S, H, W]`` of the new window (after the global Sim(3) scale)."""
        cfg = self.config
        seeds = {}
        for i_prev, j_new in zip(shared_prev, shared_new):
            seeds[int(j_new)] = cross_window_seeds(
                state.labels[i_prev], state.depth[i_prev], labels[j_new], depth[j_new],
                state.mask[i_prev] & mask[j_new], min_iou=cfg.cross_link_iou, min_pixels=cfg.layer_min_pixels,
                min_fraction=cfg.layer_min_fraction, iters=cfg.irls_iters, tol=cfg.irls_tol,
                scale_limit=cfg.layer_scale_limit)
            seg, scale, weight = seeds[int(j_new)]
            real = np.abs(scale - 1.0) >= cfg.layer_scale_deadband
            seeds[int(j_new)] = (seg[real], scale[real], weight[real])
        layer = propagate_scales(labels, seeds, cfg.link_iou)
        known = np.concatenate([v[~np.isnan(v)] for v in layer.segment_scales])
        info["layers"] = {
            "segments": int(sum(len(v) for v in layer.segment_scales)),
            "links": int(sum(len(s[0]) for s in seeds.values())),
            "reached_fraction": layer.reached_fraction,
            "scale_min": float(known.min()) if known.size else 1.0,
            "scale_max": float(known.max()) if known.size else 1.0,
        }
        return layer.scale_map

    # ---- segments ------------------------------------------------------------------------
    def _linking(self) -> bool:
        return self.config.new_segment_on_gap and self.config.reattach.enabled

    def _keyframe_inputs(self, pred: WindowPrediction, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                         k: int) -> tuple:
        # Every pixel with a depth may lift a feature (not only the trusted quantile): the 3D-3D
        # RANSAC sorts out the bad ones, and features are scarce enough already.
        usable = (depth[k] > 0) & (pred.depth_conf[k] > 0)
        return (pred.images[k], depth[k], usable, K[k], c2w[k], int(pred.frame_indices[k]),
                self.config.reattach.max_features, 0.0 if pred.sparse is None else float(pred.sparse.radial_k1))

    def _reattach(self, pred, depth, K, c2w, is_new, info: dict) -> tuple[Reattachment | None, float]:
        """While the current segment is detached: find it in an earlier world; on success it becomes
        that segment (its keyframes move along) and the caller maps this window by ``link.sim3`` (its
        depth by the returned factor on top of that scale).

        A bridge (this window started the segment, right after a window of the world it links to)
        is checked harder: on all its query views at their poses (``SegmentLinker.bridge``), and its
        scale against the scale of the window before the gap (``ReattachConfig.bridge_max_scale_change``)."""
        none = None, 1.0
        self._link_noise = None
        if not self._linking() or self._segment not in self._detached:
            return none
        new = np.flatnonzero(is_new)
        if len(new) == 0:
            return none
        bridge = self._bridge_from
        # A saved map is searched with more frames: a new stream may start anywhere in it, and the
        # relocalisation sets the new stream's whole world (refine_link locates each of them). A bridge
        # needs several views to judge the scale by.
        tries = max(self.config.reattach.frames_per_try,
                    MAP_FRAMES_PER_TRY if self._from_map or bridge is not None else 0)
        picks = np.unique(new[np.linspace(0, len(new) - 1, tries).round().astype(int)])
        queries = [lift_keyframe(*self._keyframe_inputs(pred, depth, K, c2w, int(k))) for k in picks]
        candidates = None
        if self.global_map is not None:  # relocalisation: every keyframe of every other segment may be it
            segment = self._segment
            candidates = [[(e.segment, e.keyframe()) for e, _ in self.global_map.database.query(
                q.features.descriptors, self.config.loop_closure.top_k, lambda e: e.segment != segment)]
                for q in queries]
        link = self._linker.try_link(self._segment, queries, candidates)
        if link is None:
            return none
        factor = 1.0
        if self._from_map and link.to_segment == 0:
            link = self._linker.refine_link(link, queries, [(c2w[k], K[k]) for k in picks])
        elif bridge is not None and link.to_segment == bridge[0]:
            checked = self._linker.bridge(link, queries)
            if checked is None:
                info["bridge_rejected"] = "reprojection"
                return none
            link, factor = checked
            # This window's own-frame scale is 1 (it started the segment); the window before the gap
            # sets what a neighbour's scale looks like.
            change = abs(np.log(link.sim3.s / bridge[1]))
            if not change <= np.log(self.config.reattach.bridge_max_scale_change):
                info["bridge_rejected"] = f"scale {link.sim3.s:.3g} against {bridge[1]:.3g} before the gap"
                return none
            info["bridged"] = True
        self._link_noise = self._linker.measure(link, queries)  # before merge: the matched keyframe stays
        self._linker.merge(link)
        if self._link_noise is not None:
            noise = self._link_noise
            self.link_pairs.append(LoopPairs(link.frame_index, link.keyframe_index, noise.query_uv, noise.match_uv))
        if self._map is not None:
            moved = [m.transformed(link.sim3) for m in self._map.pop(link.from_segment, [])]
            self._map.setdefault(link.to_segment, []).extend(moved)
        if self.global_map is not None:
            self.global_map.move_segment(link.from_segment, link.to_segment, link.sim3)
        self._detached.discard(link.from_segment)
        if self._from_map and link.to_segment == 0 and self.map_link is None:
            self.map_link = link
        self._segment = link.to_segment
        return link, factor

    def _global_step(self, pred, depth, K, c2w, is_new, registered: bool, link: Reattachment | None,
                     info: dict, to_world: Sim3):
        """The window's keyframes into the global map; loops found there move earlier windows (returned)."""
        if self.global_map is None:
            return None
        new = np.flatnonzero(is_new)
        if len(new) == 0:
            return None
        weak = self._weak_frames(pred)
        # Every stride-th new frame, and every weakly placed one (it may need relocating).
        picks = np.union1d(new[::-1][:: self.config.loop_closure.keyframe_stride],
                           [k for k in new if int(pred.frame_indices[k]) in weak]).astype(np.int64)
        lift_start = time.perf_counter()
        sparse = None if pred.sparse is None else pred.sparse.transformed(to_world)
        keyframes = []
        for k in picks:
            anchors = None
            if sparse is not None:
                seen = sparse.obs_view == k
                anchors = (sparse.obs_xy[seen], sparse.points[sparse.obs_point[seen]])
            kf = lift_keyframe(*self._keyframe_inputs(pred, depth, K, c2w, int(k)), anchors=anchors)
            if len(kf.points) >= self.config.loop_closure.min_inliers:
                keyframes.append((kf, c2w[int(k)], K[int(k)]))
        self.global_map.lift_seconds += time.perf_counter() - lift_start
        linked_to = None if link is None else self.global_map.window_of_frame(link.keyframe_index)
        link_sigma = None if self._link_noise is None else noise_at(self._link_noise.sigma, self._link_noise.centre,
                                                                     c2w[new[-1], :3, 3])
        update = self.global_map.add_window(self._count, self._segment, c2w[new[-1]], registered, keyframes,
                                            linked_to, weak, self._sequential_sigma(c2w, is_new), link_sigma)
        info["global_map"] = {"keyframes": len(keyframes), "loops": [m.summary() for m in update.accepted],
                              "rejected": update.rejected, "dropped": update.dropped,
                              "moved_windows": len(update.corrections), "time_s": update.seconds,
                              "relocated": [r.summary() for r in update.relocations], "weak_frames": sorted(weak)}
        return update

    def _sequential_sigma(self, c2w: np.ndarray, is_new: np.ndarray) -> tuple[float, float, float] | None:
        """The noise of this window's placement at its anchor (the last new frame): the shared frames'
        disagreement (``overlap_noise``), their rotation and scale errors carried over the lever from the
        shared frames to the anchor (``noise_at``, as for a re-attachment link; a loop carries only its
        rotation, ``globalmap._loop_sigma``)."""
        if self._overlap_noise is None or is_new.all():
            return None
        return noise_at(self._overlap_noise, c2w[~is_new, :3, 3].mean(axis=0), c2w[np.flatnonzero(is_new)[-1], :3, 3])

    def _weak_frames(self, pred: WindowPrediction) -> frozenset[int]:
        """Frames the window model placed on few of its triangulated points (None known: no sparse tracks)."""
        if pred.sparse is None or pred.num_frames < 3:
            return frozenset()
        counts = np.bincount(np.asarray(pred.sparse.obs_view, np.int64), minlength=pred.num_frames)
        weak = counts < self.config.loop_closure.weak_frame_fraction * np.median(counts)
        return frozenset(int(f) for f in pred.frame_indices[weak])

    def _remember_keyframe(self, pred, depth, K, c2w, is_new) -> None:
        new = np.flatnonzero(is_new)
        if self._map is not None:
            self._map_window.update((int(pred.frame_indices[k]), self._count) for k in new)
        if self._linking() and len(new):
            inputs = self._keyframe_inputs(pred, depth, K, c2w, int(new[-1]))
            self._pending_keyframe = (self._segment, tuple(a.copy() if isinstance(a, np.ndarray) else a
                                                           for a in inputs))
            if self._map is not None and self._map_per_window > 1:
                picks = np.unique(new[np.linspace(0, len(new) - 1, self._map_per_window).round().astype(int)])[:-1]
                self._pending_map = [(self._segment, tuple(a.copy() if isinstance(a, np.ndarray) else a for a in
                                                           self._keyframe_inputs(pred, depth, K, c2w, int(k))))
                                     for k in picks]

    def follow_adjustment(self, moves: dict[int, Sim3], focal_px: float | None = None) -> int:
        """Recorded map keyframes of this run whose frame a global adjustment moved follow it (``moves``:
        frame index -> the world-frame motion of that frame's pose; ``focal_px``: the one focal length, model
        pixels, the adjustment gave every keyframe, or None when it kept theirs). Returns how many followed."""
        if self._map is None:
            return 0
        self._lift_pending_keyframe()
        followed = 0
        for segment, keyframes in self._map.items():
            kept = []
            for m in keyframes:
                move = None if id(m) in self._map_loaded else moves.get(m.frame_index)
                if move is not None:
                    m = (m.refocused(focal_px / m.K[0, 0]) if focal_px else m).transformed(move)
                    followed += 1
                kept.append(m)
            self._map[segment] = kept
        return followed

    def _move_map_keyframes(self, moved: dict[int, Sim3]) -> None:
        """Recorded map keyframes of windows a loop closure moved follow their windows."""
        if self._map is None or not moved:
            return
        for segment, keyframes in self._map.items():
            self._map[segment] = [m.transformed(moved[w]) if id(m) not in self._map_loaded
                                  and (w := self._map_window.get(m.frame_index)) in moved else m for m in keyframes]

    def _lift_pending_keyframe(self) -> None:
        for segment, inputs in self._pending_map:
            self._map.setdefault(segment, []).append(
                MapKeyframe(lift_keyframe(*inputs), inputs[4].astype(np.float64), inputs[3].astype(np.float64)))
        self._pending_map = []
        if self._pending_keyframe is not None:
            segment, inputs = self._pending_keyframe
            self._pending_keyframe = None
            keyframe = lift_keyframe(*inputs)
            self._linker.remember(segment, keyframe)
            if self._map is not None:
                K, c2w = inputs[3], inputs[4]
                self._map.setdefault(segment, []).append(MapKeyframe(keyframe, c2w.astype(np.float64), K.astype(np.float64)))

    def _name(self, pred: WindowPrediction) -> str:
        return f"window {self._count} (frames {pred.frame_indices[:1].tolist()}..{pred.frame_indices[-1:].tolist()})"

    def _refuse(self, pred: WindowPrediction, reason: str) -> None:
        """Raise UnusableWindowError; the window still takes its place in the count (messages name it)."""
        name = self._name(pred)
        self._count += 1
        raise UnusableWindowError(f"{name} {reason}", self._count - 1, pred.frame_indices.tolist(), reason)

    def _check(self, pred: WindowPrediction) -> None:
        """Refuse what cannot be aligned; the first window of each model size fixes that size's reference K."""
        if not isinstance(pred, WindowPrediction):
            raise TypeError(f"StreamAligner.add needs a WindowPrediction, got {type(pred).__name__}")
        name = self._name(pred)
        if pred.num_frames < 1:
            raise AlignmentError(f"{name} has no frames")
        if len(np.unique(pred.frame_indices)) != pred.num_frames:
            raise AlignmentError(f"{name} lists a frame index twice: {pred.frame_indices.tolist()}")
        reason = unusable_reason(pred)
        if reason is not None:
            self._refuse(pred, reason)
        W, H = pred.model_size
        stream_K = pred.info.get("stream_K") if isinstance(pred.info, dict) else None
        if self._size is None:
            self._size = (W, H)
        if self._state is not None and (W, H) != self._state.size and \
                np.isin(pred.frame_indices, self._state.frame_indices).any():
            raise AlignmentError(
                f"{name} is {W}x{H} but shares frames with a window of {self._state.size[0]}x{self._state.size[1]}: "
                "the aligner compares shared frames pixel by pixel, so they need one model resolution")
        self._K_refs.setdefault((W, H), np.median(pred.K, axis=0))
        if stream_K is not None:
            # A model that estimates the stream's intrinsics across windows (recon/default/calibration.py)
            # knows them better than any one window: its estimate is the reference.
            self._K_refs[(W, H)] = np.asarray(stream_K, np.float64).reshape(3, 3)

    def _start_segment_or_raise(self, pred: WindowPrediction, state: _OverlapState) -> None:
        if not self.config.new_segment_on_gap:
            raise AlignmentError(
                f"window {self._count} (frames {pred.frame_indices.tolist()}) shares no frame with the previous "
                f"window's last {len(state.frame_indices)} frames ({state.frame_indices.tolist()}): consecutive "
                "windows must overlap by >= 1 frame; set AlignConfig.new_segment_on_gap=True to start a new segment")
        if self._last_scale is not None:
            self._bridge_from = (self._segment, self._last_scale)
        self._segment = self._next_segment
        self._next_segment += 1
        self._detached.add(self._segment)

    def _camera_points(self, pred: WindowPrediction, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Camera-frame points ``float32 [S, H, W, 3]``, the intrinsics they use ``[S, 3, 3]``, and which."""
        S, H, W = depth.shape
        K_ref = self._K_refs[(W, H)]
        if self.config.fix_intrinsics and not _intrinsics_agree(pred.K, K_ref, self.config.intrinsics_rtol):
            rays = (pixel_grid(W, H) @ np.linalg.inv(K_ref).T).astype(np.float32)  # [H, W, 3]
            return rays[None] * depth[..., None], np.repeat(K_ref[None], S, axis=0), "fixed"
        w2c = invert_se3(pred.c2w).astype(np.float32)
        points = transform_point_maps(w2c, pred.points.astype(np.float32))
        points[depth <= 0] = 0.0
        return points.astype(np.float32), pred.K.astype(np.float64).copy(), "model"

    def _layers(self, depth: np.ndarray, mask: np.ndarray,
                thresholds: tuple[float, float] | None = None) -> np.ndarray:
        cfg = self.config
        return segment_window(depth, mask, merge_fraction=cfg.layer_merge_fraction,
                              scale=cfg.seg_scale, sigma=cfg.seg_sigma, min_size=cfg.seg_min_size,
                              max_side=cfg.seg_max_side, thresholds=thresholds)

    def _state_labels(self, state: _OverlapState) -> np.ndarray | None:
        """The remembered frames' layers, segmented now if the window that left them did not."""
        if state.labels is None and state.layer_thresholds is not None:
            state.labels = self._layers(state.depth, state.mask, state.layer_thresholds)
            state.layer_thresholds = None
        return state.labels
