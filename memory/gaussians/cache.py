"""The stream's geometry as a bounded 3D Gaussian-splat cache with a static and a dynamic layer.

Per view (see :meth:`GaussianCache.add_view`):

1. Confident pixels (at or above the view's ``conf_quantile``, not one-pixel depth
   slivers) are candidates, each a Gaussian-to-be: mean from the point map, in-plane size one pixel footprint
   (depth / focal) x ``scale_factor``, a thin disc facing the camera, colour from the
   image, opacity from the pixel's confidence rank.
2. The static Gaussians in the view frustum (voxel-hash query, so the cost follows the
   view, not the map) are z-buffered by their centres: per pixel the front-most, and
   the one closest to the observed depth.
3. Dynamic pixels: a pixel's point that lies where space was seen empty, either by
   the last views' depth maps or by the view that last confirmed a static Gaussian
   behind it (the point sits on that view's ray, in front of the Gaussian). A static
   scene cannot put a surface there, so it moved in (confident pixels seed the label,
   which then spreads a few pixels over the same surface): it becomes a Gaussian of
   this timestamp in the dynamic layer and is never merged.
4. Static pixels: one whose depth agrees with a Gaussian centred in it
   (``max(merge_rel_tol * z, merge_abs_tol)``) is fused into it by confidence-weighted
   averaging (colour and depth read at the Gaussian's own sub-pixel position); one
   that an agreeing Gaussian centred within ``cover_radius_px`` already explains adds
   nothing; the rest become new static Gaussians.
5. Carving: a front-most static Gaussian in front of everything this view sees around
   it loses support; below zero it leaves the static layer (a moving object cached before it
   moved, or a floater) and, if recent, joins the dynamic layer at the timestamp it was
   last confirmed.
6. Past ``max_gaussians`` the lowest ``weight / (1 + age / eviction_age_views)`` go.

Step 2 lives in ``centres.py``, steps 3 and 5 in ``motion.py``, the voxel hash in
``spatial_index.py``, the columns in ``store.py``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from memory.gaussians.centres import Centres, project_centres
from memory.gaussians.config import GaussianCacheConfig
from memory.gaussians.free_space import ViewHistory, isolated_pixels
from memory.gaussians.motion import split_dynamic
from memory.gaussians.persist import store_from_arrays, store_to_arrays
from memory.gaussians.render import render_gaussians
from memory.gaussians.spatial_index import VoxelHashIndex
from memory.gaussians.store import DynamicLayer, GaussianStore, snapshot_from_columns, transform_columns
from stream4d.contracts import AlignedWindow, GaussianSnapshot, Reattachment
from stream4d.geometry import invert_se3, quat_wxyz, unproject_depth

log = logging.getLogger(__name__)

COUNT_KEYS = ("added", "merged", "covered", "dynamic", "refuted", "evicted", "dropped")


def _zero_counts() -> dict:
    return {k: 0 for k in COUNT_KEYS}


def _check_view(image, depth, conf, points, c2w, K, timestamp):
    """Validate and normalise one view's inputs (see ``GaussianCache.add_view``)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"add_view: image must be [H, W, 3], got shape {image.shape}")
    H, W = image.shape[:2]
    if image.dtype == np.uint8:
        rgb = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        rgb = np.clip(image.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f"add_view: image must be uint8 or float in [0, 1], got {image.dtype}")
    if depth is None and points is None:
        raise ValueError("add_view: needs depth or points (or both)")
    if depth is not None:
        depth = np.asarray(depth, np.float64)
        if depth.shape != (H, W):
            raise ValueError(f"add_view: depth has shape {depth.shape}, expected {(H, W)} like the image")
    if points is not None:
        points = np.asarray(points, np.float64)
        if points.shape != (H, W, 3):
            raise ValueError(f"add_view: points has shape {points.shape}, expected {(H, W, 3)}")
    if conf is None:
        conf = np.ones((H, W))
    conf = np.asarray(conf, np.float64)
    if conf.shape != (H, W):
        raise ValueError(f"add_view: conf has shape {conf.shape}, expected {(H, W)}")
    c2w = np.asarray(c2w, np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise ValueError(f"add_view: c2w must be a finite [4, 4] camera-to-world matrix, got shape {c2w.shape}")
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"add_view: K must be a finite [3, 3] matrix with positive focals, got {K.tolist()}")
    if not np.isfinite(float(timestamp)):
        raise ValueError(f"add_view: timestamp must be finite, got {timestamp}")
    return rgb, depth, conf, points, c2w, K, float(timestamp)


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img [H, W, ...]`` at in-range float pixels ``u, v [M]``."""
    H, W = img.shape[:2]
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    fu = (u - u0).reshape((-1,) + (1,) * (img.ndim - 2))
    fv = (v - v0).reshape((-1,) + (1,) * (img.ndim - 2))
    flat = img.reshape((H * W,) + img.shape[2:])
    at = v0 * W + u0  # one flat gather per corner: cheaper than 2-D fancy indexing
    return ((1 - fu) * (1 - fv) * flat[at] + fu * (1 - fv) * flat[at + 1]
            + (1 - fu) * fv * flat[at + W] + fu * fv * flat[at + W + 1])


class GaussianCache:
    """Accumulates aligned views into static + dynamic Gaussians; snapshots and renders them."""

    def __init__(self, config: GaussianCacheConfig | None = None):
        self.config = config if config is not None else GaussianCacheConfig()
        self._static = GaussianStore()
        self._dynamic = DynamicLayer()
        self._history = ViewHistory(self.config.dynamic_history)
        self._index: VoxelHashIndex | None = None
        self._views = 0  # views processed since the last reset
        self._segment: int | None = None
        self._window = -1  # AlignedWindow.window_index of the views being added (-1: add_view alone)
        self._latest_ts: float | None = None
        # Static maps of earlier segments (tracking was lost), kept until their segment is found
        # again (Reattachment) or the cap pushes them out: segment -> (store, index), oldest first.
        self._shelf: OrderedDict[int, tuple[GaussianStore, VoxelHashIndex | None]] = OrderedDict()

    # --- size -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._static) + len(self._dynamic)

    @property
    def num_static(self) -> int:
        return len(self._static)

    @property
    def num_dynamic(self) -> int:
        return len(self._dynamic)

    @property
    def dynamic_timestamps(self) -> list[float]:
        return self._dynamic.timestamps

    @property
    def voxel_size(self) -> float | None:
        return None if self._index is None else self._index.voxel_size

    def nbytes(self) -> int:
        """Bytes held by the Gaussian columns (static capacity + dynamic layer)."""
        return self._static.nbytes() + self._dynamic.nbytes()

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        self.__init__(self.config)

    @property
    def shelved_segments(self) -> list[int]:
        """Earlier segments whose static maps are kept for a re-attachment."""
        return list(self._shelf)

    @property
    def segment(self) -> int | None:
        """The world segment whose map is being built (None before the first window)."""
        return self._segment

    def largest_segment(self) -> int | None:
        """The segment with the most static Gaussians, the current one on a tie (None: no map at all):
        the world a finished stream's map files should show when tracking was lost along the way."""
        sizes = {seg: len(store) for seg, (store, _) in self._shelf.items()}
        if self._segment is not None:
            sizes[self._segment] = len(self._static)
        if not any(sizes.values()):
            return self._segment
        return max(sizes, key=lambda seg: (sizes[seg], seg == self._segment))

    def _start_segment(self, segment: int) -> None:
        """A new world begins: shelve this one's static map, start empty (the worlds are not comparable)."""
        if self._segment is not None and len(self._static):
            self._shelf[self._segment] = (self._static, self._index)
        shelf, views = self._shelf, self._views
        self.__init__(self.config)
        self._shelf, self._views = shelf, views  # one view counter: shelved rows keep comparable ages
        self._segment = segment
        # Shelved maps count against the cap too: the oldest go first.
        while self._shelf and sum(len(st) for st, _ in self._shelf.values()) > self.config.max_gaussians:
            dropped, _ = self._shelf.popitem(last=False)
            log.info("segment %s's shelved map dropped: over the Gaussian cap", dropped)

    def reattach(self, link: Reattachment) -> None:
        """The current segment was found in ``link.to_segment``'s world: map its Gaussians there and
        merge them into that segment's shelved map (when it is still kept)."""
        if link.from_segment != self._segment:
            raise ValueError(f"the cache holds segment {self._segment}, not {link.from_segment}")
        transform_columns({k: self._static[k] for k in self._static.fields}, link.sim3)
        self._dynamic.transform(link.sim3)
        self._history.clear()  # recent depth maps are in the old frame; free-space tests restart
        target, index = self._shelf.pop(link.to_segment, (None, None))
        if target is None:  # that map was dropped: this one simply moves
            target, index = self._static, None
        else:
            # Where the earlier map already has a Gaussian in the voxel, it stands for that surface:
            # only the rest of this segment's map is added (no doubled surfaces).
            rows = np.arange(len(self._static))
            if index is not None:
                rows = rows[~np.isin(index.keys(self._static["means"]), index.occupied_voxels())]
            ids = target.append(self._static.take(rows))
            if index is not None:
                index.set(ids, target["means"][ids])
        if index is None and len(target):
            index = VoxelHashIndex(self._index.voxel_size * link.sim3.s if self._index else 1.0)
            index.set(np.arange(len(target)), target["means"])
        self._static, self._index, self._segment = target, index, link.to_segment
        self._evict()

    # --- persistent maps (memory.gaussians.persist) ----------------------------------------
    def map_arrays(self) -> dict[str, np.ndarray]:
        """The current segment's static map as arrays (``persist.store_to_arrays``)."""
        return store_to_arrays(self._static, self.voxel_size, self._views)

    def shelve_map(self, segment: int, arrays) -> None:
        """A saved static map as the earlier ``segment``: a stream of another segment that re-attaches
        to it merges into it (``reattach``), one that starts in it continues it."""
        if segment == self._segment:
            raise ValueError(f"segment {segment} is the cache's current segment")
        self._shelf[segment] = _saved_map(arrays)
        self._shelf.move_to_end(segment, last=False)

    def load_map(self, segment: int, arrays) -> None:
        """A saved static map as the current ``segment`` (nothing else kept so far is touched)."""
        self._static, self._index = _saved_map(arrays)
        self._segment = segment

    def move_windows(self, corrections: dict, segment: int | None = None) -> int:
        """A loop closure moved earlier windows (``window_index -> geometry.Sim3``, world frame): their
        static Gaussians follow, and so does the voxel index, in place: only the moved Gaussians are
        re-keyed, and a correction of a few millimetres leaves most of them in their voxel (a long stream
        over mapped ground corrects nearly every window; a new index each time was all transients).
        The dynamic layer holds the last frames only and follows the most recent moved window.
        ``segment``: a shelved segment's map moves instead (None: the current one; a shelved map has no
        dynamic layer). Returns how many Gaussians moved."""
        shelved = segment is not None and segment != self._segment
        if shelved and segment not in self._shelf:
            raise KeyError(f"segment {segment} has no map in the cache (kept: {self.shelved_segments})")
        store, index = self._shelf[segment] if shelved else (self._static, self._index)
        if not corrections or not len(store):
            return 0
        windows = store["window"]
        moved = []
        for w, sim3 in corrections.items():
            sel = np.flatnonzero(windows == w)
            if not sel.size:
                continue
            cols = {k: store[k][sel] for k in ("means", "seen_from", "scales", "quats")}
            transform_columns(cols, sim3)
            for k, v in cols.items():
                store[k][sel] = v
            moved.append(sel)
        if not shelved:
            self._dynamic.transform(corrections[max(corrections)])
            self._history.clear()  # recent depth maps are in the old frame; free-space tests restart
        if not moved:
            return 0
        ids = np.concatenate(moved)
        if index is not None:
            index.set(ids, store["means"][ids])
        return int(ids.size)

    # --- input ------------------------------------------------------------------------
    def add_window(self, window: AlignedWindow) -> dict:
        """Add the ``is_new`` views of an aligned window in order; returns summed counts.

        A window of a new ``segment`` (tracking was lost, a new world began) resets the
        cache first, since the old geometry lives in another frame; ``counts["reset"]``
        says so.
        """
        if not isinstance(window, AlignedWindow):
            raise TypeError(f"add_window needs an AlignedWindow, got {type(window).__name__}")
        pred = window.prediction
        is_new = np.asarray(window.is_new, bool)
        if is_new.shape != (pred.num_frames,):
            raise ValueError(f"AlignedWindow.is_new has shape {is_new.shape}, expected ({pred.num_frames},)")
        totals = _zero_counts()
        link = window.reattached
        totals["reattached"] = link is not None and link.from_segment == self._segment
        if totals["reattached"]:
            log.info("segment %s found again in segment %s's world: maps merged", link.from_segment, link.to_segment)
            self.reattach(link)
        if self._segment is None and window.segment in self._shelf:  # a stream that begins in a shelved map
            self._static, self._index = self._shelf.pop(window.segment)
            self._segment = window.segment
        totals["reset"] = self._segment is not None and window.segment != self._segment
        if totals["reset"]:
            log.info("segment %s -> %s: the Gaussian cache starts a new map", self._segment, window.segment)
            self._start_segment(window.segment)
        self._segment = window.segment
        if window.moved:
            totals["moved"] = self.move_windows(window.moved)
        self._window = int(window.window_index)
        W, H = pred.model_size
        k = 1 if self.config.window_max_side is None else max(1, -(-max(W, H) // self.config.window_max_side))
        every = (slice(None, None, k), slice(None, None, k))
        to_stride = np.diag([1.0 / k, 1.0 / k, 1.0])  # pixel k*u of the model image is pixel u here
        for i in np.flatnonzero(is_new):
            conf = pred.points_conf[i] if np.any(pred.points_conf[i] > 0) else pred.depth_conf[i]
            counts = self.add_view(pred.images[i][every], pred.depth[i][every], conf[every], pred.points[i][every],
                                   pred.c2w[i], to_stride @ pred.K[i], float(pred.timestamps[i]))
            for k in COUNT_KEYS:
                totals[k] += counts[k]
        if self.config.refine_steps > 0:
            self.refine(self.config.refine_steps)
        return totals

    def add_view(self, image, depth, conf, points, c2w, K, timestamp) -> dict:
        """Fuse one world-frame view.

        ``image`` uint8 (or float in [0, 1]) ``[H, W, 3]``; ``depth`` z-depth ``[H, W]`` (0 = unknown)
        and/or ``points`` world ``[H, W, 3]`` (either may be None: points are then unprojected
        from depth, depth read off the points); ``conf [H, W]`` (None = all equal);
        ``c2w [4, 4]``; ``K [3, 3]`` in pixels of the image; ``timestamp`` seconds.

        Returns counts of this view: ``added`` (new static), ``merged`` (pixels fused),
        ``covered`` (pixels already explained), ``dynamic`` (per-timestamp Gaussians),
        ``refuted`` (static Gaussians moved out), ``evicted`` (static, over the cap),
        ``dropped`` (dynamic, over their bound).
        """
        cfg = self.config
        rgb, depth, conf, points, c2w, K, timestamp = _check_view(image, depth, conf, points, c2w, K, timestamp)
        H, W = rgb.shape[:2]
        if points is None:
            points = unproject_depth(np.where(depth > 0, depth, np.nan), K, c2w)
        w2c = invert_se3(c2w)
        z_img = points @ w2c[2, :3] + w2c[2, 3]  # [H, W] z of each point in this camera
        valid = np.isfinite(points).all(-1) & np.isfinite(z_img) & (z_img > 0) & np.isfinite(conf) & (conf > 0)
        if depth is not None:
            valid &= depth > 0
        if valid.any() and cfg.conf_quantile > 0:
            valid &= conf >= np.quantile(conf[valid], cfg.conf_quantile)
        if cfg.drop_isolated:
            valid &= ~isolated_pixels(np.where(valid, z_img, 0.0), cfg.merge_rel_tol)
        counts = _zero_counts()
        z_map = np.where(valid, z_img, 0.0)  # [H, W]
        pix = np.flatnonzero(valid)  # flat pixel ids of the candidates
        if pix.size == 0:
            self._dynamic.add(timestamp, self._new_rows(np.zeros((0, 3)), np.zeros(0), np.zeros(0),
                                                        np.zeros((0, 3)), c2w, K))
            self._finish_view(z_map, c2w, K, rgb, timestamp, counts)
            return counts
        if self._index is None:
            self._index = VoxelHashIndex(self._auto_voxel_size(z_img[valid], K))

        # Confidence rank in (0, 1] (only the order of a backend's confidence means anything).
        c = conf.reshape(-1)[pix]
        rank = np.searchsorted(np.sort(c), c, side="right") / c.size
        P = points.reshape(-1, 3)[pix]  # [M, 3]
        zp = z_img.reshape(-1)[pix]  # [M]

        cz = project_centres(self._static, self._index, cfg, c2w, K, W, H, float(zp.max()), z_map.reshape(-1))
        dynamic = np.zeros(pix.size, bool)
        if cfg.dynamic:
            dynamic = split_dynamic(self._static, self._history, cfg, pix, P, zp, rank, cz, z_map)

        st = np.flatnonzero(~dynamic)  # indices into pix of static candidates
        tol = np.maximum(cfg.merge_rel_tol * zp[st], cfg.merge_abs_tol)
        g = cz.match_id[pix[st]]
        agree = (g >= 0) & (np.abs(zp[st] - cz.match_z[pix[st]]) <= tol)
        fuse = st[agree]
        self._fuse(fuse, g[agree], pix, zp, rank, rgb, z_map, c2w, K, timestamp)
        counts["merged"] = int(fuse.size)

        rest = st[~agree]
        covered = self._covered(pix[rest], zp[rest], tol[~agree], cz, (H, W))
        counts["covered"] = int(covered.sum())
        new = rest[~covered]
        rows = self._new_rows(P[new], zp[new], rank[new], rgb.reshape(-1, 3)[pix[new]], c2w, K)
        ids = self._static.append({**rows, "weight": rank[new], "support": np.ones(new.size, np.int32),
                                   "seen_from": np.broadcast_to(c2w[:3, 3], (new.size, 3)),
                                   "last_view": np.full(new.size, self._views, np.int64),
                                   "last_ts": np.full(new.size, timestamp),
                                   "window": np.full(new.size, self._window, np.int64)})
        self._index.set(ids, rows["means"])
        counts["added"] = int(new.size)

        dyn = np.flatnonzero(dynamic)
        self._dynamic.add(timestamp, self._new_rows(P[dyn], zp[dyn], rank[dyn], rgb.reshape(-1, 3)[pix[dyn]], c2w, K))
        counts["dynamic"] = int(dyn.size)
        if cfg.dynamic:
            counts["refuted"] = self._remove_refuted()
        self._finish_view(z_map, c2w, K, rgb, timestamp, counts)
        return counts

    def _finish_view(self, z_map, c2w, K, rgb, timestamp, counts) -> None:
        cfg = self.config
        counts["evicted"] = self._evict()
        counts["dropped"] = self._dynamic.trim(cfg.dynamic_keep_frames, cfg.max_dynamic_gaussians)
        self._history.push(z_map, c2w, K, (rgb * 255 + 0.5).astype(np.uint8), self._views)
        self._views += 1
        self._latest_ts = timestamp

    def _auto_voxel_size(self, z: np.ndarray, K: np.ndarray) -> float:
        if self.config.voxel_size is not None:
            return float(self.config.voxel_size)
        f = float(np.sqrt(K[0, 0] * K[1, 1]))
        return float(np.median(z)) / f * self.config.voxel_footprints

    # --- per-view steps ---------------------------------------------------------------
    def _fuse(self, sel, ids, pix, zp, rank, rgb, z_map, c2w, K, timestamp) -> None:
        """Confidence-weighted averaging of pixels ``pix[sel]`` into Gaussians ``ids``."""
        if sel.size == 0:
            return
        cfg = self.config
        H, W = z_map.shape
        w2c = invert_se3(c2w)
        means = self._static["means"][ids].astype(np.float64)
        z_g = means @ w2c[2, :3] + w2c[2, 3]
        u = K[0, 0] * (means @ w2c[0, :3] + w2c[0, 3]) / z_g + K[0, 2]
        v = K[1, 1] * (means @ w2c[1, :3] + w2c[1, 3]) / z_g + K[1, 2]
        # Read colour and depth at the Gaussian's own position when its 4 pixels agree.
        z_obs = zp[sel].copy()
        col = rgb.reshape(-1, 3)[pix[sel]].astype(np.float64)
        u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        ok = (u0 >= 0) & (u0 + 1 < W) & (v0 >= 0) & (v0 + 1 < H)
        i = np.flatnonzero(ok)
        z_flat, at = z_map.reshape(-1), v0[i] * W + u0[i]
        c00, c01, c10, c11 = z_flat[at], z_flat[at + 1], z_flat[at + W], z_flat[at + W + 1]
        lo = np.minimum(np.minimum(c00, c01), np.minimum(c10, c11))
        hi = np.maximum(np.maximum(c00, c01), np.maximum(c10, c11))
        smooth = (lo > 0) & (hi <= lo * (1 + cfg.merge_rel_tol))
        i = i[smooth]
        z_obs[i] = _bilinear(z_map, u[i], v[i])
        col[i] = _bilinear(rgb, u[i], v[i])
        # The observation sits on this view's ray through the Gaussian, at the measured depth.
        # Only where the surface is smooth around it: at an edge or a grazing surface, sliding
        # along the ray would drag the Gaussian off its surface (colour still fuses).
        z_pos = z_g.copy()
        z_pos[i] = z_obs[i]
        centre = c2w[:3, 3]
        obs = centre + (means - centre) * (z_pos / z_g)[:, None]
        w = rank[sel]
        wg = self._static["weight"][ids].astype(np.float64)
        a = (wg / (wg + w))[:, None]
        b = 1.0 - a
        s = self._static
        s["means"][ids] = a * means + b * obs
        s["colors"][ids] = a * s["colors"][ids] + b * col
        s["opacities"][ids] = a[:, 0] * s["opacities"][ids] + b[:, 0] * self._opacity(w)
        s["scales"][ids] = a * s["scales"][ids] + b * self._scales(z_pos, K)
        s["weight"][ids] = np.minimum(wg + w, cfg.max_fusion_weight)
        s["support"][ids] = np.minimum(s["support"][ids] + 1, cfg.support_cap)
        s["seen_from"][ids] = c2w[:3, 3]
        s["last_view"][ids] = self._views
        s["last_ts"][ids] = timestamp
        self._index.set(ids, s["means"][ids])

    def _covered(self, flat, zp, tol, cz: Centres, shape) -> np.ndarray:
        """Whether an agreeing Gaussian centre projects within ``cover_radius_px`` of each pixel."""
        r = self.config.cover_radius_px
        H, W = shape
        covered = np.zeros(flat.size, bool)
        reach = int(np.floor(r + 0.5))  # neighbours whose rounded centre can be that close
        if r <= 0 or flat.size == 0:
            return covered
        Wp = W + 2 * reach  # padded width; neighbours are found by flat offsets into the padded maps
        pad = lambda a, fill: np.pad(a, reach, constant_values=fill).reshape(-1)
        z, u, v = (pad(a.reshape(H, W), np.inf) for a in (cz.match_z, cz.match_u, cz.match_v))
        row, col = np.divmod(flat, W)
        centre = (row + reach) * Wp + col + reach
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                at = centre + dy * Wp + dx
                near = (u[at] - col) ** 2 + (v[at] - row) ** 2 <= r * r
                covered |= near & (np.abs(z[at] - zp) <= tol)
        return covered

    def _opacity(self, rank: np.ndarray) -> np.ndarray:
        cfg = self.config
        return cfg.min_opacity + (cfg.max_opacity - cfg.min_opacity) * rank

    def _scales(self, z: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Disc sizes ``[M, 3]`` at depths ``z``: the pixel footprint in x and y, thin along the view axis."""
        cfg = self.config
        sx = cfg.scale_factor * z / K[0, 0]
        sy = cfg.scale_factor * z / K[1, 1]
        return np.stack([sx, sy, cfg.thickness_ratio * np.minimum(sx, sy)], axis=-1)

    def _new_rows(self, P, z, rank, colors, c2w, K) -> dict[str, np.ndarray]:
        """Renderable columns of Gaussians made from pixels (discs facing the camera)."""
        return {
            "means": P,
            "colors": colors,
            "opacities": self._opacity(rank),
            "scales": self._scales(z, K),
            "quats": np.broadcast_to(quat_wxyz(c2w[:3, :3]), (len(P), 4)),
        }

    def _remove(self, ids: np.ndarray) -> None:
        moved_from, moved_to = self._static.remove(ids)
        self._index.remove(np.concatenate([np.asarray(ids, np.int64), moved_from]))
        self._index.set(moved_to, self._static["means"][moved_to])

    def _remove_refuted(self) -> int:
        s = self._static
        ids = np.flatnonzero(s["support"] < 0)
        if ids.size == 0:
            return 0
        rows = s.take(ids)
        for ts in np.unique(rows["last_ts"]):
            sel = rows["last_ts"] == ts
            self._dynamic.add(float(ts), {k: v[sel] for k, v in rows.items()})
        self._remove(ids)
        return int(ids.size)

    def _evict(self) -> int:
        cfg = self.config
        n = len(self._static)
        if n <= cfg.max_gaussians:
            return 0
        k = n - int(cfg.max_gaussians * cfg.evict_to_fraction)
        s = self._static
        age = (self._views - s["last_view"]).astype(np.float64)
        score = s["weight"] / (1.0 + age / cfg.eviction_age_views)
        # Gaussians this view confirmed or created go last.
        score = score + np.where(age <= 0, cfg.max_fusion_weight + 1.0, 0.0)
        ids = np.argpartition(score, k - 1)[:k]
        self._remove(ids)
        return int(k)

    # --- output -----------------------------------------------------------------------
    def snapshot(self, max_points: int | None = None, timestamp: float | None = None,
                 segment: int | None = None) -> GaussianSnapshot:
        """Static Gaussians plus the dynamic ones of the kept timestamp nearest ``timestamp``
        (all kept timestamps when None). ``max_points`` keeps an evenly spaced subset. ``segment``:
        a shelved segment's static map instead (it has no dynamic layer); None: the current one."""
        shelved = segment is not None and segment != self._segment
        if shelved and segment not in self._shelf:
            raise KeyError(f"segment {segment} has no map in the cache (kept: {self.shelved_segments})")
        s = self._shelf[segment][0] if shelved else self._static
        cols = [s.take(slice(None), fields=["means", "colors", "opacities", "scales", "quats"])]
        times = [np.full(len(s), np.nan)]
        if shelved:
            dyn_cols, dyn_times = [], []
        elif timestamp is None:
            dyn_cols, dyn_times = self._dynamic.frames()
        else:
            nearest = self._dynamic.nearest(float(timestamp))
            dyn_cols, dyn_times = self._dynamic.frames([] if nearest is None else [nearest])
        snap = snapshot_from_columns(cols + dyn_cols, times + dyn_times)
        if max_points is not None:
            if max_points < 0:
                raise ValueError(f"snapshot: max_points must be >= 0, got {max_points}")
            if snap.num > max_points:
                keep = np.linspace(0, snap.num - 1, max_points).astype(np.int64) if max_points else \
                    np.zeros(0, np.int64)
                snap = GaussianSnapshot(**{k: getattr(snap, k)[keep] for k in
                                           ("means", "colors", "opacities", "scales", "quats", "timestamps")})
        return snap

    def render(self, c2w, K, width, height, timestamp=None, backend="auto"):
        """Render the cache: ``rgb [H, W, 3]`` in [0, 1] (black background), ``depth [H, W]``, ``alpha [H, W]``.

        Dynamic Gaussians come from the kept timestamp nearest ``timestamp``; None means
        the latest view's time (what the stream sees now).
        """
        if timestamp is None:
            timestamp = self._latest_ts
        snap = self.snapshot(timestamp=timestamp) if timestamp is not None else self.snapshot()
        return render_gaussians(snap, c2w, K, width, height, backend=backend)

    def refine(self, steps: int | None = None) -> dict:
        """A few Adam steps of the static Gaussians against the recent views (CUDA only)."""
        from memory.gaussians.refine import refine_static

        views = list(self._history.views)[-self.config.refine_views:]
        return refine_static(self._static, self._index, views,
                             steps if steps is not None else max(self.config.refine_steps, 1))


def _saved_map(arrays):
    """A saved map's store and index. Its window numbers are the saving run's; a loop closure of this
    run moves windows by this run's numbers, so the saved Gaussians get none (-1) and stay put."""
    store, index = store_from_arrays(arrays)
    store["window"][:] = -1
    return store, index
