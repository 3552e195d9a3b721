"""The aligner's configuration, apart from the aligner so a config tree can be built without
loading the alignment code (and its numerical dependencies)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReattachConfig:
    """Knobs of :class:`SegmentLinker`."""

    enabled: bool = True
    keyframes_per_segment: int = 8  # the most recent keyframes (one per window) a segment keeps
    max_segments: int = 8  # earlier segments remembered (the most recent ones)
    frames_per_try: int = 2  # frames of a detached window matched against the keyframes
    max_features: int = 2000
    min_inliers: int = 25  # 3D-3D pairs that must agree with one similarity
    min_inlier_fraction: float = 0.4  # ... and this share of the lifted matches
    inlier_rel: float = 0.1  # a pair agrees when its 3D distance is below this x its depth: dense depth at
    # a keypoint is good to about that much, and a tighter bound drops true matches (docs/default_backend.md)
    ransac_iterations: int = 300
    max_reprojection_px: float = 3.0  # median reprojection (model px) of the inliers into the query frame;
    # 0 turns the check off
    bridge_max_scale_change: float = 3.0  # a bridge (re-attachment of the window right after a gap to the
    # world before it) whose scale differs more than this (either way) from the last window's is refused: a
    # guard against gross jumps only, since a window model's own scale may legitimately change between
    # windows (recon.default sets it by one view's median depth); the multi-view reprojection check of
    # SegmentLinker.bridge is what catches a wrong scale
    seed: int = 0


@dataclass
class LoopClosureConfig:
    """Knobs of the global map (:mod:`align.globalmap`): place recognition, loop verification, pose graph.

    Keyframes: every ``keyframe_stride``-th new frame of a window, counted back from its last new
    frame, is lifted (SIFT, ``ReattachConfig.max_features``) and stored in the database
    (``max_keyframes``, ``vocabulary_size`` VLAD words; bytes in docs/global_map.md).
    Verification (``align.loops``): ``top_k`` retrieved keyframes at least ``min_window_gap``
    windows older or ``min_frame_gap`` frames away; ``min_inliers`` / ``min_inlier_fraction`` / ``inlier_rel`` of the 3D-3D
    similarity as for re-attachment; the median reprojection of its inliers at most
    ``max_reprojection_px`` model pixels; its scale within ``max_scale_change`` (either way) and,
    among one window's loops, within ``scale_agreement`` (log) of their median.
    Pose graph (``align.posegraph``): the noise of one sequential alignment (``sigma_rotation``
    rad, ``sigma_translation`` of the median window step, ``sigma_scale`` log), loop edges weighted
    ``loop_weight`` times a sequential edge, edges whitened above ``chi_limit`` make the graph drop
    its worst loop; with ``estimate_variances`` the graph learns each edge kind's noise from its
    own residuals (variance components; the sigmas above and a loop's own are where it starts).
    A loop whose whitened residual at the current poses is at most ``optimise_above`` (the chain
    already agrees within its noise) joins the graph without a solve: nothing moves, no output is
    rewritten.
    Relocation of one frame: a frame seen in fewer than ``weak_frame_fraction`` x the window's
    median count of triangulated points (the window model's sparse tracks) whose PnP pose on a
    stored keyframe differs from its placed pose is re-posed there: by any amount when the frame makes
    no loop (PnP on many stored points places it better than its window did), by more than
    ``relocate_min_deg`` degrees or ``relocate_min_shift`` x the keyframe's median depth when it makes
    one (less, and the loop corrects the whole window instead).
    Database admission: a keyframe whose place is already stored (a verified match, on a loop the
    pose graph kept, with at least ``cover_fraction`` of its features) is not stored, so the
    database grows with the area explored, not with time (0 stores every keyframe).
    """

    enabled: bool = True
    keyframe_stride: int = 4
    max_keyframes: int = 512
    vocabulary_size: int = 32
    top_k: int = 3
    min_window_gap: int = 3  # 2 lets a short clip with no loop close one across a single window (benchmarks)
    min_frame_gap: int = 20
    min_similarity: float = 0.0
    min_inliers: int = 30
    min_inlier_fraction: float = 0.3
    inlier_rel: float = 0.1
    ransac_iterations: int = 300
    max_reprojection_px: float = 3.0
    max_scale_change: float = 1.5
    scale_agreement: float = 0.1
    sigma_rotation: float = 0.02
    sigma_translation: float = 0.05
    sigma_scale: float = 0.03
    loop_weight: float = 1.0
    # Floors of a loop edge's own noise (a loop is whitened by its PnP covariance and depth-ratio spread,
    # align.loops.verify; see align.posegraph): rad, fraction of the median window step, log scale.
    min_sigma_rotation: float = 1e-4
    min_sigma_translation: float = 1e-3
    min_sigma_scale: float = 1e-3
    chi_limit: float = 5.0
    optimise_above: float = 3.0
    estimate_variances: bool = True
    weak_frame_fraction: float = 0.3
    relocate_min_deg: float = 5.0
    relocate_min_shift: float = 0.1
    cover_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.keyframe_stride < 1 or self.max_keyframes < 1 or self.vocabulary_size < 2:
            raise ValueError("LoopClosureConfig needs keyframe_stride >= 1, max_keyframes >= 1 and "
                             f"vocabulary_size >= 2, got {self.keyframe_stride}, {self.max_keyframes}, "
                             f"{self.vocabulary_size}")
        if self.min_window_gap < 1 or self.max_scale_change <= 1.0:
            raise ValueError(f"LoopClosureConfig needs min_window_gap >= 1 and max_scale_change > 1, got "
                             f"{self.min_window_gap}, {self.max_scale_change}")
        if not 0.0 <= self.cover_fraction <= 1.0:
            raise ValueError(f"LoopClosureConfig.cover_fraction must be within [0, 1], got {self.cover_fraction}")


@dataclass
class AlignConfig:
    """Knobs of :class:`StreamAligner`; defaults follow LASER (arXiv 2512.13680) where it has one.

    Windows:
        window: 20. Frames per window the pipeline cuts the stream into. The
            aligner accepts windows of any length; this is here so one config
            describes the windowing (and ``overlap < window`` is checked).
        overlap: 5. Frames consecutive windows share. The aligner keeps the
            last ``overlap`` frames of the previous window as its only state.
        new_segment_on_gap: False. A window sharing no frame with the previous
            one raises AlignmentError; with True it starts a new world instead
            (``AlignedWindow.segment`` increments, the window is identity-placed).

    Registration:
        conf_quantile: 0.5. A pixel is trusted if its depth confidence is at
            or above this quantile of its window's confidences (LASER keeps the
            top half); on shared frames it must be trusted in both windows.
        irls_iters: 10. Maximum IRLS iterations of every robust scale fit.
        irls_tol: 0.05. IRLS stops once the scale changes by less than this
            fraction between iterations.
        min_overlap_pixels: 100. Fewer mutually trusted pixels on the shared
            frames than this and the Sim(3) scale falls back to the ratio of the
            shared cameras' spread, or to 1 (flagged in ``AlignedWindow.info``).
        fix_intrinsics: True. Use the first window's intrinsics (per-element
            median over its frames) for every later frame and re-unproject
            depth with them (LASER's choice: feed-forward focal lengths jitter
            between windows). A model that estimates the intrinsics across
            the stream's windows says so in ``info["stream_K"]``: then its
            latest estimate is the reference instead. Set False when the stream supplies intrinsics
            the model used: then each window's own points and K are kept.
        intrinsics_rtol: 0.01. A frame whose fx, fy, cx, cy all agree with the
            reference within this fraction keeps the model's own points.

    Layer-wise scale (``layerwise``: True; False gives Sim(3)-only alignment):
        seg_scale: 300.0, seg_sigma: 1.1. Felzenszwalb parameters on the depth
            map (divided by the window's median confident depth).
        seg_min_size: 500. Felzenszwalb minimum segment size in pixels at
            518 x 392; scaled with the model's pixel count.
        seg_max_side: 256. Depth maps larger than this are segmented on a
            decimated copy (layers are large regions; at 512 x 384 this cuts
            the segmentation from ~275 to ~60 ms a frame).
        layer_merge_fraction: 0.1. Adjacent superpixels whose mean depths
            differ by less than this fraction of the window's confident depth
            range (1st-99th percentile) form one layer.
        link_iou: 0.3. IoU linking layers of consecutive frames of a window.
        cross_link_iou: 0.3. IoU linking the two windows' layers on a shared frame.
        layer_min_pixels: 20. Trusted pixels a linked intersection needs to
            give a layer scale ...
        layer_min_fraction: 0.05. ... and the fraction of the new window's
            layer they must cover at least (few trusted pixels must not
            rescale a large layer; not in LASER, which ignores confidence here).
        layer_scale_limit: 2.0. A layer scale outside [1/limit, limit]
            (relative to the global Sim(3) scale) is taken for a mismatched
            link and ignored.
        layer_scale_deadband: 0.005. Layer scales within this of 1 are not
            applied: a correction smaller than the scale fit's own precision
            only adds noise where the windows already agree (not in LASER).
        register_on_layer_depth: False. Which depth of the previous window
            the next window's Sim(3) is registered on. False: its depth before
            layer scales, so camera poses are exactly those of Sim(3)-only
            alignment and layer scales refine only depth and points. True:
            the layer-scaled depth (LASER's choice), which lets layer scales,
            estimated from sparse links and carried through a whole window,
            move every later pose (on kitti_seq1 with 20-frame windows this
            made the ATE 4x worse; see docs/benchmarks.md).

    Segments (with ``new_segment_on_gap``):
        reattach: ReattachConfig(). Each window leaves one keyframe (its
            last new frame's features lifted to world points); while a segment
            started by a gap is detached, each of its windows is matched
            against earlier segments' keyframes and, on a 3D-3D similarity
            with enough inliers, moved into that world (``align.reattach``). With
            loop closure on, a detached segment is matched against every keyframe
            of the database (relocalisation), not only the other segments' last few.
        loop_closure: LoopClosureConfig(). Keyframe database, loop closure and
            the window pose graph (``align.globalmap``); ``enabled=False`` is the
            ablation (``stream4d reconstruct --no-loop-closure``).
    """

    window: int = 20
    overlap: int = 5
    layerwise: bool = True
    conf_quantile: float = 0.5
    irls_iters: int = 10
    irls_tol: float = 0.05
    fix_intrinsics: bool = True
    intrinsics_rtol: float = 0.01
    new_segment_on_gap: bool = False
    min_overlap_pixels: int = 100
    seg_scale: float = 300.0
    seg_sigma: float = 1.1
    seg_min_size: int = 500
    seg_max_side: int | None = 256
    layer_merge_fraction: float = 0.1
    link_iou: float = 0.3
    cross_link_iou: float = 0.3
    layer_min_pixels: int = 20
    layer_min_fraction: float = 0.05
    layer_scale_limit: float = 2.0
    layer_scale_deadband: float = 0.005
    register_on_layer_depth: bool = False
    reattach: ReattachConfig = field(default_factory=ReattachConfig)
    loop_closure: LoopClosureConfig = field(default_factory=LoopClosureConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.overlap < self.window:
            raise ValueError(
                f"AlignConfig needs 1 <= overlap < window, got overlap={self.overlap}, window={self.window}")
        if not 0.0 <= self.conf_quantile < 1.0:
            raise ValueError(f"AlignConfig.conf_quantile must be in [0, 1), got {self.conf_quantile}")
        if self.irls_iters < 0 or self.irls_tol <= 0:
            raise ValueError(
                f"AlignConfig needs irls_iters >= 0 and irls_tol > 0, got {self.irls_iters}, {self.irls_tol}")
        for name in ("link_iou", "cross_link_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"AlignConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.layer_scale_limit <= 1.0:
            raise ValueError(f"AlignConfig.layer_scale_limit must be > 1, got {self.layer_scale_limit}")
        if not 0.0 <= self.layer_scale_deadband < 1.0:
            raise ValueError(f"AlignConfig.layer_scale_deadband must be in [0, 1), got {self.layer_scale_deadband}")
