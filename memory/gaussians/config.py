"""Every knob of the Gaussian-splat geometry cache, with its default and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GaussianCacheConfig:
    """Policy of :class:`memory.gaussians.cache.GaussianCache`.

    Accumulation follows the online 3DGS caches of WorldWarp and M3 (one Gaussian per
    confident pixel), merging follows FreeSplat / StreamGS (fuse a pixel into the
    Gaussian the new view sees there when the depths agree), the static / dynamic
    split follows Mem4D (surfaces that appear in space earlier views saw as empty are
    kept per timestamp instead of being merged).

    Sizing of ``max_gaussians`` (4M) for a 24 GiB budget: a static Gaussian costs about
    120 B on the host (means 12, colour 12, opacity 4, scales 12, quaternion 16, fusion
    weight 4, support 4, last confirming camera 12, last-seen view 8 and timestamp 8,
    voxel key 8 and its slot in the sorted voxel index 16), so 4M take ~0.45 GiB (x1.5
    while the columns grow). On a GPU, gsplat's per-Gaussian projection buffers (~100 B)
    and the optional refinement (parameters, gradients and two Adam moments of 14
    floats: 224 B) add ~1.3 GiB at 4M, with a few hundred MB of tile-intersection
    buffers at 512x384. That leaves ~20 GiB for the
    window model (VGGT-1B needs ~5 GB of weights plus activations), and 4M is the size
    of a large, fully optimised 3DGS scene, well above what a stream at model
    resolution produces before its oldest parts are worth evicting.
    """

    # --- input resolution ---------------------------------------------------------------
    window_max_side: int | None = 256
    """``add_window`` takes every k-th pixel each way (k the smallest stride that brings the
    longest side to at most this; None: every pixel). One Gaussian per pixel at 512 x 384
    costs ~0.4 s a view on 2 CPU cores, 4x the window model's share, and its footprint is
    below a pixel of a viewer's render anyway; at stride 2 each Gaussian covers 2 x 2 model
    pixels (its scale follows the decimated focal length). ``add_view`` is never decimated."""

    # --- size bound -------------------------------------------------------------------
    max_gaussians: int = 4_000_000
    """Cap on static Gaussians. Reaching it evicts down to ``evict_to_fraction`` of it."""
    evict_to_fraction: float = 0.9
    """Eviction goes below the cap by this margin so it does not run after every view."""
    eviction_age_views: float = 200.0
    """Eviction score is ``fusion weight / (1 + views since last seen / this)``: the
    least-confident, least-observed and longest-unseen Gaussians go first, so an
    endless stream keeps its recent surroundings instead of freezing its first views."""

    # --- which pixels become Gaussians ------------------------------------------------
    conf_quantile: float = 0.1
    """Per view, pixels below this quantile of the (positive) confidence are dropped.
    Confidence scales differ between backends, so only its order within a view is used."""
    drop_isolated: bool = True
    """Drop pixels whose depth agrees with none of their 4 neighbours (within
    ``merge_rel_tol``): one-pixel slivers at depth edges, flying pixels of depth networks."""
    min_opacity: float = 0.5
    """Opacity of a pixel at the bottom of its view's confidence ranking."""
    max_opacity: float = 0.98
    """Opacity of a pixel at the top of its view's confidence ranking. Kept under 0.99:
    gsplat stops a pixel before the Gaussian that would take its transmittance to 1e-4,
    so near-opaque splats behind a few neighbours' tails would drop out of their own pixel."""
    scale_factor: float = 0.35
    """In-plane standard deviation in pixel footprints (footprint = depth / focal). gsplat's
    0.3 px^2 low-pass comes on top (0.35 -> 0.65 px on screen): enough to close the gaps
    between splats one pixel apart, small enough not to blur the image (measured on the
    synthetic room: 0.2 / 0.35 / 0.5 give 26.5 / 26.0 / 24.6 dB at held-out views, with
    mean alpha 0.96 / 0.98 / 0.99)."""
    thickness_ratio: float = 0.1
    """Standard deviation along the viewing axis relative to the in-plane one: the splats
    are discs facing the camera that made them."""

    # --- merging ----------------------------------------------------------------------
    merge_rel_tol: float = 0.05
    """A pixel fuses into a Gaussian centred in it when their depths differ by at most
    ``max(merge_rel_tol * depth, merge_abs_tol)``; also the depth-continuity threshold
    of the sliver, edge and growth tests."""
    merge_abs_tol: float = 1e-3
    """Floor of the depth tolerance in world units (only matters very close to a camera)."""
    cover_radius_px: float = 0.75
    """A pixel that no agreeing Gaussian is centred in, but whose centre lies within this
    many pixels of an agreeing Gaussian's projected centre, is already explained and adds
    nothing. Keeps the density near one Gaussian per pixel of the finest view (0 = off)."""
    max_fusion_weight: float = 20.0
    """Cap on a Gaussian's accumulated confidence weight, so it keeps adapting."""

    # --- spatial index ----------------------------------------------------------------
    voxel_size: float | None = None
    """Edge of a hash voxel in world units; None picks ``voxel_footprints`` pixel
    footprints at the median depth of the first view."""
    voxel_footprints: float = 16.0
    """Voxel edge in pixel footprints when ``voxel_size`` is None."""

    # --- static / dynamic split -------------------------------------------------------
    dynamic: bool = True
    """Detect moving surfaces (free-space tests) and carve static Gaussians that views see
    through. False merges everything into one static map."""
    dynamic_history: int = 8
    """How many recent views' depth maps the free-space test looks back on."""
    dynamic_rel_tol: float = 0.1
    """A point violates an earlier view's free space when it lies in front of what that
    view saw by more than this fraction of the depth (plus ``merge_abs_tol``)."""
    dynamic_min_votes: int = 2
    """Earlier views that must see through a point for it to be dynamic (fewer when fewer
    earlier views see it at all)."""
    witness_radius_px: float = 1.0
    """A point lies in the empty space a static Gaussian's last confirming view saw when it
    is on that view's ray to the Gaussian, in front of it, within this many pixel
    footprints of the ray. This test reaches back to whenever the background was seen;
    the depth-map history only to the last ``dynamic_history`` views."""
    dynamic_min_rank: float = 0.75
    """Only pixels at or above this confidence rank in their view (0..1] can start a dynamic
    region (growth then follows the surface): depth noise, which violates free space by
    chance, concentrates in the less confident pixels. Equal confidences all rank 1."""
    dynamic_grow_px: int = 4
    """Dynamic labels spread this many pixels over depth-continuous surface (the witness
    test skips a band along depth edges, where its rays may graze a near surface)."""
    support_cap: int = 4
    """Support starts at 1, +1 per confirming view up to this cap, -1 per view that sees
    through the Gaussian; below 0 it leaves the static layer (a moving object cached
    before it moved, or a floater). The cap bounds how long a once-static surface that
    left stays: ``support_cap + 1`` views seeing through it."""
    dynamic_keep_frames: int = 30
    """The dynamic layer keeps the Gaussians of this many most recent timestamps."""
    max_dynamic_gaussians: int = 1_000_000
    """Cap on dynamic Gaussians over all kept timestamps (oldest timestamps go first)."""

    # --- photometric refinement (CUDA only) -------------------------------------------
    refine_steps: int = 0
    """Adam steps on the recent views after each window; 0 disables, CPU always skips."""
    refine_views: int = 4
    """How many of the most recent views the refinement fits."""

    def __post_init__(self) -> None:
        checks = {
            "window_max_side": self.window_max_side is None or self.window_max_side >= 1,
            "max_gaussians": self.max_gaussians > 0,
            "evict_to_fraction": 0.0 < self.evict_to_fraction <= 1.0,
            "eviction_age_views": self.eviction_age_views > 0,
            "conf_quantile": 0.0 <= self.conf_quantile < 1.0,
            "min_opacity": 0.0 < self.min_opacity <= self.max_opacity,
            "max_opacity": self.max_opacity < 1.0,
            "scale_factor": self.scale_factor > 0,
            "thickness_ratio": self.thickness_ratio > 0,
            "merge_rel_tol": self.merge_rel_tol >= 0,
            "merge_abs_tol": self.merge_abs_tol >= 0,
            "cover_radius_px": 0 <= self.cover_radius_px <= 4,
            "max_fusion_weight": self.max_fusion_weight > 0,
            "voxel_size": self.voxel_size is None or self.voxel_size > 0,
            "voxel_footprints": self.voxel_footprints > 0,
            "dynamic_history": self.dynamic_history >= 1,
            "dynamic_rel_tol": self.dynamic_rel_tol >= 0,
            "dynamic_min_votes": self.dynamic_min_votes >= 1,
            "witness_radius_px": self.witness_radius_px >= 0,
            "dynamic_min_rank": 0.0 <= self.dynamic_min_rank <= 1.0,
            "dynamic_grow_px": self.dynamic_grow_px >= 0,
            "support_cap": self.support_cap >= 1,
            "dynamic_keep_frames": self.dynamic_keep_frames >= 1,
            "max_dynamic_gaussians": self.max_dynamic_gaussians >= 0,
            "refine_steps": self.refine_steps >= 0,
            "refine_views": self.refine_views >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"GaussianCacheConfig: out of range: {values}")
