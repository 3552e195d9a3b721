"""Typed contracts for every hop of the data flow.

ingest -> recon -> align -> memory -> viz/server exchange only these types.

Conventions (all stages):
- ``c2w`` is camera-to-world, 4x4, OpenCV camera axes (x right, y down, z forward).
  World-to-camera ("extrinsic" in VGGT) is its inverse.
- ``K`` is 3x3 in pixels of the image it is attached to. Pixel centres sit at
  integer coordinates (OpenCV).
- Depth is z-distance along the camera's optical axis, not ray length.
- Confidence: higher is more confident, 0 means invalid. Only the order within
  one backend is meaningful; downstream stages use quantiles, not thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from stream4d.geometry import Sim3

# How a posed frame got its pose (trajectory.json "pose_kind"): "posed" from a window with parallax,
# its depth known; "rotation_only" from a window the model saw no parallax in (static camera or pure
# rotation): only the orientation is known, the camera keeps its place and its depth is unknown.
# Frames between keyframes (recon.keyframes) are not seen by the window model: "tracked" when PnP on
# the aligned window's 3D points posed them, "interpolated" between their keyframes' poses when not.
# Neither has a depth map.
POSE_POSED = "posed"
POSE_ROTATION_ONLY = "rotation_only"
POSE_TRACKED = "tracked"
POSE_INTERPOLATED = "interpolated"
POSE_KINDS = (POSE_POSED, POSE_ROTATION_ONLY, POSE_TRACKED, POSE_INTERPOLATED)


def identity_pixel_map() -> np.ndarray:
    return np.eye(3, dtype=np.float64)


@dataclass(frozen=True)
class Frame:
    """One decoded image of a stream.

    ``pixel_map`` is the 3x3 affine taking pixel coordinates of the original
    input image (``input_size``) to pixel coordinates of ``image`` (identity
    when ingest did not resize or crop). Known intrinsics ``K`` are in pixels
    of ``image``.
    """

    index: int  # position in the stream after stride / keyframe selection
    timestamp: float  # seconds since the stream started
    image: np.ndarray  # uint8 [H, W, 3], RGB
    source: str  # input name: file name of an image, "video.mp4#123", "camera:0#17"
    K: np.ndarray | None = None  # [3, 3] known intrinsics, pixels of `image`
    input_size: tuple[int, int] | None = None  # (W, H) of the original input image
    pixel_map: np.ndarray = field(default_factory=identity_pixel_map)  # [3, 3]
    # time.monotonic() when the frame arrived: received by a live source, else decoded. Latency
    # (arrival to pose) is measured from it.
    arrived: float | None = None
    # A focal length (px of `image`) the input stated without listing intrinsics: a photo's EXIF, an
    # iPhone video's QuickTime tag.
    # A starting point and prior for self-calibration, not known intrinsics.
    focal_hint: float | None = None

    def __post_init__(self) -> None:
        img = self.image
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"Frame.image must be uint8 [H, W, 3], got {img.dtype} {img.shape}")
        if self.input_size is None:
            object.__setattr__(self, "input_size", (img.shape[1], img.shape[0]))

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of ``image``."""
        return self.image.shape[1], self.image.shape[0]

    def K_in_input_pixels(self, K: np.ndarray) -> np.ndarray:
        """Map intrinsics given in pixels of ``image`` back to the original input."""
        return np.linalg.inv(self.pixel_map) @ K


@dataclass
class SparseTracks:
    """Sparse 3D points of a window with the 2D observations they were reconstructed from.

    Backends that triangulate feature tracks (the default backend) fill it in;
    it follows the window's frame: the window model's frame in a
    ``WindowPrediction``, the world in an ``AlignedWindow``. Observations are
    flat arrays, one row per (point, view) pair.
    """

    points: np.ndarray  # float64 [P, 3]
    colors: np.ndarray  # uint8 [P, 3], RGB of the point in the first view that sees it
    obs_point: np.ndarray  # int64 [O], row of ``points``
    obs_view: np.ndarray  # int64 [O], view of the window (position in the WindowPrediction)
    obs_xy: np.ndarray  # float64 [O, 2], pixel (x, y) at the model resolution, centres at integers
    K: np.ndarray  # float64 [S, 3, 3], the intrinsics the observations were measured with (model pixels)
    # The lens they were measured through: one radial coefficient (geometry.radial_distorted of K) for
    # every view; 0 for a pinhole. The points project to the observations through it.
    radial_k1: float = 0.0

    def __post_init__(self) -> None:
        P, O = len(self.points), len(self.obs_point)
        expect = {"points": (P, 3), "colors": (P, 3), "obs_view": (O,), "obs_xy": (O, 2)}
        for name, shape in expect.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"SparseTracks.{name} has shape {got}, expected {shape}")
        if self.K.ndim != 3 or self.K.shape[1:] != (3, 3):
            raise ValueError(f"SparseTracks.K must be [S, 3, 3], got {self.K.shape}")
        if O and (self.obs_point.min() < 0 or self.obs_point.max() >= P):
            raise ValueError("SparseTracks.obs_point refers to a point that does not exist")
        if O and (self.obs_view.min() < 0 or self.obs_view.max() >= len(self.K)):
            raise ValueError("SparseTracks.obs_view refers to a view that does not exist")

    @property
    def num_points(self) -> int:
        return int(len(self.points))

    def transformed(self, sim3: Sim3) -> "SparseTracks":
        """The same tracks with points mapped by ``sim3`` (observations and intrinsics unchanged)."""
        return replace(self, points=sim3.apply(np.asarray(self.points, np.float64)))

    def subset_views(self, keep: np.ndarray) -> "SparseTracks":
        """Observations of views ``keep`` only (renumbered in that order); points seen fewer than
        twice are dropped."""
        keep = np.asarray(keep, np.int64)
        new_view = np.full(len(self.K), -1, np.int64)
        new_view[keep] = np.arange(len(keep))
        rows = new_view[self.obs_view] >= 0
        seen = np.bincount(self.obs_point[rows], minlength=self.num_points)
        rows &= seen[self.obs_point] >= 2
        kept = np.nonzero(seen >= 2)[0]
        new_point = np.full(self.num_points, -1, np.int64)
        new_point[kept] = np.arange(len(kept))
        return SparseTracks(self.points[kept], self.colors[kept], new_point[self.obs_point[rows]],
                            new_view[self.obs_view[rows]], self.obs_xy[rows], self.K[keep], self.radial_k1)


@dataclass
class WindowPrediction:
    """What a window model says about S frames, in the window's own frame and scale.

    The window's frame is arbitrary (typically the first camera's); the aligner
    maps it into the stream's world. Arrays are at the model resolution (H, W).
    """

    frame_indices: np.ndarray  # int64 [S], Frame.index of each view
    timestamps: np.ndarray  # float64 [S]
    sources: tuple[str, ...]  # Frame.source of each view
    images: np.ndarray  # uint8 [S, H, W, 3], what the model saw
    depth: np.ndarray  # float32 [S, H, W], z-depth, 0 where unknown
    depth_conf: np.ndarray  # float32 [S, H, W], >= 0
    c2w: np.ndarray  # float64 [S, 4, 4]
    K: np.ndarray  # float64 [S, 3, 3], pixels of the model resolution
    points: np.ndarray  # float32 [S, H, W, 3], in the window's frame
    points_conf: np.ndarray  # float32 [S, H, W], >= 0
    pixel_maps: np.ndarray  # float64 [S, 3, 3], input pixels -> model pixels
    input_sizes: np.ndarray  # int64 [S, 2], (W, H) of each original input image
    backend: str = ""
    # Free-form, JSON-serialisable diagnostics (timings, match counts, ...).
    info: dict = field(default_factory=dict)
    # bool [S] or None: True where the model saw no parallax (static camera, pure rotation), so the
    # view's pose is a rotation only and its depth is unknown (confidence 0). None: no view is.
    rotation_only: np.ndarray | None = None
    sparse: SparseTracks | None = None  # triangulated tracks, when the backend has them

    def __post_init__(self) -> None:
        S, H, W = self.depth.shape
        expect = {
            "frame_indices": (S,),
            "timestamps": (S,),
            "images": (S, H, W, 3),
            "depth_conf": (S, H, W),
            "c2w": (S, 4, 4),
            "K": (S, 3, 3),
            "points": (S, H, W, 3),
            "points_conf": (S, H, W),
            "pixel_maps": (S, 3, 3),
            "input_sizes": (S, 2),
        }
        for name, shape in expect.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"WindowPrediction.{name} has shape {got}, expected {shape}")
        if len(self.sources) != S:
            raise ValueError(f"WindowPrediction.sources has {len(self.sources)} entries, expected {S}")
        if self.rotation_only is not None:
            flags = np.asarray(self.rotation_only)
            if flags.shape != (S,):
                raise ValueError(f"WindowPrediction.rotation_only has shape {flags.shape}, expected {(S,)}")
            self.rotation_only = flags.astype(bool)
        if self.sparse is not None and len(self.sparse.K) != S:
            raise ValueError(f"WindowPrediction.sparse covers {len(self.sparse.K)} views, expected {S}")

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    @property
    def model_size(self) -> tuple[int, int]:
        """(W, H) the model ran at."""
        return int(self.depth.shape[2]), int(self.depth.shape[1])

    @property
    def rotation_only_views(self) -> np.ndarray:
        """bool [S]: the views whose pose is rotation-only (all False when the model flagged none)."""
        if self.rotation_only is None:
            return np.zeros(self.num_frames, bool)
        return self.rotation_only

    def pose_kind(self, i: int) -> str:
        """``POSE_ROTATION_ONLY`` or ``POSE_POSED`` for view ``i``."""
        return POSE_ROTATION_ONLY if self.rotation_only_views[i] else POSE_POSED

    def K_input(self, i: int) -> np.ndarray:
        """Intrinsics of view ``i`` in pixels of its original input image."""
        return np.linalg.inv(self.pixel_maps[i]) @ self.K[i]

    def subset(self, keep: Sequence[int] | np.ndarray) -> "WindowPrediction":
        """The same prediction restricted to views ``keep`` (in that order)."""
        idx = np.asarray(keep, dtype=np.int64)
        arrays = {
            name: getattr(self, name)[idx]
            for name in (
                "frame_indices", "timestamps", "images", "depth", "depth_conf", "c2w",
                "K", "points", "points_conf", "pixel_maps", "input_sizes",
            )
        }
        flags = None if self.rotation_only is None else self.rotation_only[idx]
        sparse = None if self.sparse is None else self.sparse.subset_views(idx)
        return replace(self, sources=tuple(self.sources[i] for i in idx), rotation_only=flags, sparse=sparse,
                       **arrays)


@dataclass
class Reattachment:
    """A detached world segment found again in an earlier segment's world (align -> memory/viz/server).

    Everything emitted so far with ``segment == from_segment`` is mapped by
    ``sim3`` (from_segment world -> to_segment world) and belongs to
    ``to_segment`` from now on.
    """

    from_segment: int
    to_segment: int
    sim3: Sim3
    inliers: int  # 3D-3D feature pairs that agreed with sim3
    keyframe_index: int  # frame of to_segment that was matched
    frame_index: int  # frame of from_segment that matched it


@dataclass
class AlignedWindow:
    """A window placed in the stream's world frame by the aligner.

    ``prediction`` holds world-frame poses and point maps. ``is_new`` marks the
    views that were not already emitted by an earlier window (the overlap views
    of a later window are the earlier window's business).
    """

    prediction: WindowPrediction
    sim3_scale: float  # the window -> world similarity that was applied
    sim3_R: np.ndarray  # [3, 3]
    sim3_t: np.ndarray  # [3]
    is_new: np.ndarray  # bool [S]
    window_index: int
    segment: int = 0  # increases when tracking was lost and a new world began
    info: dict = field(default_factory=dict)
    reattached: Reattachment | None = None  # set on the window that re-attached its segment (already in
    # the earlier world, with that segment id)
    moved: dict[int, Sim3] = field(default_factory=dict)  # earlier windows a loop closure moved: window_index
    # -> world-frame similarity for everything that window emitted (poses, points, splats); this window
    # already comes corrected


@runtime_checkable
class WindowModel(Protocol):
    """A model that predicts geometry for a window of consecutive frames.

    Both the weight-free default backend and the VGGT backend implement it, so
    every later stage is backend-agnostic.
    """

    name: str

    def predict(self, frames: Sequence[Frame]) -> WindowPrediction:
        """Predict depth, poses, intrinsics and point maps for ``frames`` (S >= 2)."""
        ...

    def reset(self) -> None:
        """Forget any state carried across windows (start of a new stream)."""
        ...


@dataclass
class GaussianSnapshot:
    """A copy of the Gaussian-splat cache for viewers and exporters (memory -> viz/server).

    Static Gaussians have ``timestamps`` NaN; dynamic ones carry the timestamp
    of the one frame they belong to.
    """

    means: np.ndarray  # float32 [N, 3], world frame
    colors: np.ndarray  # float32 [N, 3], RGB in [0, 1]
    opacities: np.ndarray  # float32 [N], in (0, 1)
    scales: np.ndarray  # float32 [N, 3], standard deviations in world units
    quats: np.ndarray  # float32 [N, 4], w-first unit quaternions, local -> world
    timestamps: np.ndarray  # float64 [N], NaN for static Gaussians

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    @property
    def is_dynamic(self) -> np.ndarray:
        return ~np.isnan(self.timestamps)


@dataclass
class StreamStats:
    """Running counters of a stream, reported to observers after every window."""

    frames_received: int = 0
    frames_processed: int = 0  # frames that went through a window model or, between keyframes, tracking
    frames_posed: int = 0
    frames_rotation_only: int = 0  # of frames_posed: rotation-only poses (no parallax, depth unknown)
    frames_without_depth: int = 0  # of frames_posed: keyframes posed from tracks whose window gave no
    # confident depth pixel (wide baselines optical flow cannot follow), all of them when the map is empty
    frames_keyframes: int = 0  # of frames_processed: the ones the window model saw
    frames_tracked: int = 0  # of frames_posed: between keyframes, posed by PnP on the window's points
    frames_interpolated: int = 0  # of frames_posed: between keyframes, pose interpolated (PnP failed)
    frames_depth_from_tracks: int = 0  # of the keyframes posed with depth: depth only from their window's
    # triangulated tracks, where optical flow failed (wide baselines; window info "depth_from_tracks")
    frames_tracked_with_depth: int = 0  # of frames_tracked: a depth map projected from their keyframes'
    # depth covers enough of them (recon.tracked_depth.enough_depth)
    frames_skipped: int = 0  # black / blurred / undecodable
    frames_dropped: int = 0  # live sources dropping under load
    windows: int = 0
    windows_skipped: int = 0  # windows whose model output was unusable (reasons in errors)
    fps: float = 0.0  # processed frames per second, wall clock
    gaussians: int = 0
    segment: int = 0
    reattachments: int = 0  # lost segments found again in an earlier world
    frames_posed_live: int = 0  # frames posed by live tracking as they arrived (re-posed by their window later)
    latency_p50_s: float = 0.0  # arrival to first pose reaching observers, median over the posed frames, s
    latency_p95_s: float = 0.0  # the same, 95th percentile
    loops_found: int = 0  # loop candidates verified geometrically (align.loops)
    loops_accepted: int = 0  # ... and kept by the pose graph, which then moved the windows
    loops_rejected: int = 0  # candidates refused by verification, scale check or the pose graph
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run finished but is not what it seems (empty map)

    def keyframes_posed_from_parallax(self) -> int:
        """Posed frames that are neither rotation-only nor between keyframes (tracked, interpolated)."""
        return self.frames_posed - self.frames_rotation_only - self.frames_tracked - self.frames_interpolated

    def frames_with_depth(self) -> int:
        """Posed frames with a depth map: keyframes with confident depth and tracked frames given one."""
        return self.keyframes_posed_from_parallax() - self.frames_without_depth + self.frames_tracked_with_depth


@dataclass
class FramePose:
    """One frame's pose as observers get it outside a window: tracked live as it arrived
    (``final`` False: its window re-poses it later) or posed between keyframes once the window
    around it was aligned (``final`` True: as written to trajectory.json)."""

    index: int  # Frame.index
    timestamp: float  # s
    c2w: np.ndarray  # [4, 4] camera-to-world, world of ``segment``
    K: np.ndarray  # [3, 3] pixels of an image of ``size``
    size: tuple[int, int]  # (W, H) of the image the pose was solved in (model pixels)
    kind: str  # POSE_TRACKED or POSE_INTERPOLATED
    segment: int
    final: bool


class StreamObserver(Protocol):
    """Receives the stream as it is reconstructed (rerun logging, service progress).

    Implementations must not block: the pipeline calls them inline. An observer may also define
    ``on_pose(pose: FramePose)``: frames posed outside windows (live tracking, frames between
    keyframes), called from the tracking and the alignment threads; and ``on_final(frames:
    list[stream4d.outputs.PosedFrame])``: every frame's final pose once the stream has ended (after loop closures and
    a final bundle adjustment moved what was shown live), called once, just before ``close``.
    """

    def on_window(self, window: AlignedWindow) -> None: ...

    def on_gaussians(self, snapshot: GaussianSnapshot) -> None: ...

    def on_stats(self, stats: StreamStats) -> None: ...

    def close(self) -> None: ...


def publish_pose(observers, pose: FramePose) -> None:
    """``pose`` to every observer that defines the optional ``on_pose``."""
    for obs in observers:
        on_pose = getattr(obs, "on_pose", None)
        if on_pose is not None:
            on_pose(pose)
