"""The output folder of a reconstruction run: writer and readers.

Layout (documented in docs/output_format.md)::

    out_dir/
      trajectory.json   posed frames (index, timestamp, image, c2w, K, size, segment, pose_kind), and
                        the lens' radial coefficient per segment when the final adjustment found one
      trajectory.tum    the same poses as TUM lines, appended as frames arrive
      points.ply        fused coloured point cloud (binary little-endian)
      splats.ply        Gaussian cache export (written by memory/, not here)
      recording.rrd     rerun recording (written by viz/, not here)
      run.json          configuration, versions, timings, counts
      depth/000042.npz  optional per-frame depth at model resolution (keyframes': the model's; tracked
                        frames': projected from their keyframes', compact)
      frames/000042.jpg the frames the model saw (model resolution), frames/frames.jsonl their pixel maps
      sparse/000003.npz one window's sparse points and their 2D observations (world frame)

``OutputWriter`` streams: ``trajectory.tum`` is appended and flushed per frame,
so a crashed run still leaves its poses; ``trajectory.json`` is written once,
atomically, on ``close()``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from plyfile import PlyData, PlyElement

from stream4d.contracts import POSE_KINDS, POSE_POSED
from stream4d.geometry import quat_wxyz, rotation_from_quat_wxyz

FORMAT_VERSION = 1
TRAJECTORY_JSON = "trajectory.json"
TRAJECTORY_TUM = "trajectory.tum"
POINTS_PLY = "points.ply"
SPLATS_PLY = "splats.ply"
RECORDING_RRD = "recording.rrd"
RUN_JSON = "run.json"
DEPTH_DIR = "depth"
FRAMES_DIR = "frames"
FRAMES_JSONL = "frames.jsonl"
SPARSE_DIR = "sparse"
DEPTH_FROM_MODEL = "model"  # depth/<index>.npz "source": the window model's depth of a keyframe
DEPTH_FROM_KEYFRAMES = "keyframes"  # ... a tracked frame's depth projected from its keyframes' depth
DERIVED_DEPTH_BITS = 12  # significant bits kept in maps derived from keyframes (relative step 2.4e-4)
# 3DGS stores colour as the degree-0 spherical-harmonic coefficient: rgb = 0.5 + SH_C0 * f_dc.
SH_C0 = 0.28209479177387814


@dataclass
class PosedFrame:
    """One input frame that received a pose.

    ``index = -1`` means the source did not record frame indices (a TUM file);
    ``K`` is all-NaN and ``width``/``height`` are 0 when intrinsics are unknown.
    """

    index: int  # Frame.index of the input frame
    timestamp: float  # seconds since the stream started
    image: str  # Frame.source ("000123.png", "video.mp4#123", ...)
    c2w: np.ndarray  # [4, 4] camera-to-world, OpenCV axes
    K: np.ndarray  # [3, 3] in pixels of the original input image
    width: int  # of the original input image
    height: int
    segment: int = 0  # world segment (a new one starts when tracking is lost)
    pose_kind: str = POSE_POSED  # "posed" or "rotation_only" (contracts.POSE_KINDS)

    def __post_init__(self) -> None:
        self.c2w = np.asarray(self.c2w, dtype=np.float64)
        self.K = np.asarray(self.K, dtype=np.float64)
        if self.c2w.shape != (4, 4):
            raise ValueError(f"PosedFrame {self.index}: c2w must be [4, 4], got {self.c2w.shape}")
        if not np.all(np.isfinite(self.c2w)):
            raise ValueError(f"PosedFrame {self.index}: c2w has non-finite entries")
        if self.K.shape != (3, 3):
            raise ValueError(f"PosedFrame {self.index}: K must be [3, 3], got {self.K.shape}")
        self.index = int(self.index)
        self.timestamp = float(self.timestamp)
        self.image = str(self.image)
        self.width = int(self.width)
        self.height = int(self.height)
        self.segment = int(self.segment)
        if self.pose_kind not in POSE_KINDS:
            raise ValueError(f"PosedFrame {self.index}: pose_kind must be one of {POSE_KINDS}, got {self.pose_kind!r}")

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "timestamp": self.timestamp,
            "image": self.image,
            "c2w": self.c2w.tolist(),
            "K": None if np.isnan(self.K).any() else self.K.tolist(),
            "width": self.width,
            "height": self.height,
            "segment": self.segment,
            "pose_kind": self.pose_kind,
        }


def c2w_to_tum(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation ``[3]`` and unit quaternion ``[4]`` (x, y, z, w; w >= 0) of a c2w pose."""
    return np.asarray(c2w[:3, 3], np.float64), quat_wxyz(c2w[:3, :3])[[1, 2, 3, 0]]


def tum_to_c2w(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 c2w from a TUM translation ``[3]`` and quaternion ``[4]`` (x, y, z, w)."""
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_from_quat_wxyz(np.asarray(q_xyzw)[[3, 0, 1, 2]])
    c2w[:3, 3] = t
    return c2w


TUM_HEADER = "# timestamp tx ty tz qx qy qz qw (camera-to-world, OpenCV axes)\n"


def _tum_line(timestamp: float, c2w: np.ndarray) -> str:
    t, q = c2w_to_tum(c2w)
    values = [timestamp, *t, *q]
    return " ".join(repr(float(v)) for v in values) + "\n"


def json_default(obj: Any) -> Any:
    """``json.dump`` fallback for numpy values, paths and dataclasses."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=1, default=json_default, allow_nan=False)
    return _atomic_write(path, lambda f: f.write(text.encode()))


def _as_colors_uint8(colors: np.ndarray, n: int) -> np.ndarray:
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise ValueError(f"colors must be [{n}, 3] to match points, got {colors.shape}")
    if colors.dtype == np.uint8:
        return colors
    if not np.issubdtype(colors.dtype, np.floating):
        raise ValueError(f"colors must be uint8 or float in [0, 1], got dtype {colors.dtype}")
    if colors.size and (not np.all(np.isfinite(colors)) or colors.min() < -1e-6 or colors.max() > 1 + 1e-6):
        raise ValueError("float colors must be finite and in [0, 1]")
    return np.round(np.clip(colors, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_points_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """Write a binary little-endian PLY (x, y, z float32; red, green, blue uint8), atomically.

    points: [N, 3] float, finite; colors: [N, 3] uint8, or float in [0, 1].
    """
    path = Path(path)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points contain NaN or infinite coordinates")
    rgb = _as_colors_uint8(colors, len(points))
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                          ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, name in enumerate("xyz"):
        vertex[name] = points[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, i]
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    return _atomic_write(path, ply.write)


def read_points_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Points ``float64 [N, 3]`` and colours ``uint8 [N, 3]`` of a PLY's vertices.

    Colours come from red/green/blue, else from 3DGS ``f_dc_0..2`` (so ``splats.ply``
    reads as its centres), else are black.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point cloud {path} does not exist")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"].data
    except Exception as exc:  # plyfile raises several types for malformed files
        raise ValueError(f"point cloud {path} is not a readable PLY with vertices: {exc}") from exc
    names = vertex.dtype.names or ()
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"point cloud {path} has no x, y, z vertex properties (has {names})")
    points = np.stack([vertex[c] for c in "xyz"], axis=1).astype(np.float64)
    if {"red", "green", "blue"} <= set(names):
        colors = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1)
        if colors.dtype != np.uint8:  # some writers store float colours in [0, 1]
            colors = _as_colors_uint8(colors.astype(np.float64), len(points))
    elif {"f_dc_0", "f_dc_1", "f_dc_2"} <= set(names):
        sh = np.stack([vertex[f"f_dc_{i}"] for i in range(3)], axis=1).astype(np.float64)
        colors = _as_colors_uint8(np.clip(0.5 + SH_C0 * sh, 0.0, 1.0), len(points))
    else:
        colors = np.zeros((len(points), 3), np.uint8)
    return points, colors


# One packed record per posed frame (~230 bytes + the name) until trajectory.json is written.
_RECORD = np.dtype([("index", "<i8"), ("timestamp", "<f8"), ("c2w", "<f8", (4, 4)), ("K", "<f8", (3, 3)),
                    ("width", "<i4"), ("height", "<i4"), ("segment", "<i4"), ("pose_kind", "u1")])


class OutputWriter:
    """Writes a run's output folder incrementally.

    Memory holds only one packed record per posed frame (for trajectory.json);
    depth maps and points go to disk as soon as they are given.
    """

    def __init__(self, out_dir: str | Path, overwrite: bool = True) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise NotADirectoryError(f"output folder {self.out_dir} exists and is not a directory")
        own = [self.out_dir / n for n in (TRAJECTORY_JSON, TRAJECTORY_TUM, POINTS_PLY, RUN_JSON)]
        stale = [p for d, pattern in ((DEPTH_DIR, "*.npz"), (FRAMES_DIR, "*.jpg"), (FRAMES_DIR, FRAMES_JSONL),
                                      (SPARSE_DIR, "*.npz")) if self.out_dir.is_dir()
                 for p in sorted((self.out_dir / d).glob(pattern))]
        existing = [p for p in own if p.exists()] + stale
        if existing and not overwrite:
            raise FileExistsError(f"output folder {self.out_dir} already holds {existing[0].name}; "
                                  "pass overwrite=True or choose another folder")
        # Only the files this writer owns are removed: splats.ply / recording.rrd may already
        # be open by their own writers.
        for p in existing:
            p.unlink()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._records = np.zeros(64, _RECORD)  # grows by doubling
        self._images: list[str] = []
        self._seen: set[int] = set()
        self._tum = open(self.out_dir / TRAJECTORY_TUM, "w", encoding="utf-8")
        self._tum.write(TUM_HEADER)
        self._tum.flush()
        self._frames_jsonl = None  # frames/frames.jsonl, opened by the first write_frame_image
        self._sparse_segment: dict[int, int] = {}  # window index -> segment of sparse/<window>.npz
        self._radial: dict[int, float] = {}  # segment -> radial coefficient the final adjustment found
        self._closed = False

    @property
    def num_frames(self) -> int:
        return len(self._images)

    def add_frame(self, frame: PosedFrame) -> None:
        """Record a posed frame: appended (and flushed) to trajectory.tum now, to trajectory.json on close."""
        self._check_open()
        if frame.index in self._seen:
            raise ValueError(f"frame index {frame.index} was already added to {self.out_dir}")
        n = len(self._images)
        if n == len(self._records):
            self._records = np.concatenate([self._records, np.zeros(n, _RECORD)])
        self._records[n] = (frame.index, frame.timestamp, frame.c2w, frame.K, frame.width, frame.height,
                            frame.segment, POSE_KINDS.index(frame.pose_kind))
        self._images.append(frame.image)
        self._seen.add(frame.index)
        self._tum.write(_tum_line(frame.timestamp, frame.c2w))
        self._tum.flush()

    def remap_segment(self, from_segment: int, to_segment: int, sim3) -> int:
        """Frames recorded in ``from_segment`` move into ``to_segment``'s world by ``sim3``
        (a ``stream4d.geometry.Sim3``; see ``contracts.Reattachment``); trajectory.tum is rewritten,
        depth/<index>.npz follow.
        Returns how many frames moved."""
        self._check_open()
        rec = self._records[: len(self._images)]
        moved = rec["segment"] == from_segment
        if moved.any():
            rec["c2w"][moved] = sim3.apply_c2w(rec["c2w"][moved])
            rec["segment"][moved] = to_segment
            for index in rec["index"][moved].tolist():  # depth files follow, as after a loop closure
                self._move_depth(index, sim3)
            self._tum.close()
            lines = "".join(_tum_line(float(r["timestamp"]), r["c2w"]) for r in rec)
            _atomic_write(self.out_dir / TRAJECTORY_TUM, lambda f: f.write((TUM_HEADER + lines).encode()))
            self._tum = open(self.out_dir / TRAJECTORY_TUM, "a", encoding="utf-8")
        for window, segment in self._sparse_segment.items():  # the sparse points follow their frames
            if segment == from_segment:
                path = self.out_dir / SPARSE_DIR / f"{window:06d}.npz"
                with np.load(path) as data:
                    arrays = {k: data[k] for k in data.files}
                arrays["points"] = sim3.apply(arrays["points"])
                arrays["segment"] = np.int64(to_segment)
                self._save_npz(path, arrays)
                self._sparse_segment[window] = to_segment
        return int(moved.sum())

    def move_frames(self, moves: dict[int, Any], sparse_moves: dict[int, Any] | None = None) -> int:
        """Frames already recorded move by a similarity each (``moves``: frame index -> ``geometry.Sim3``;
        a loop closure corrected the windows they came from); trajectory.tum is rewritten, depth/<index>.npz
        poses follow, and so do ``sparse/<window>.npz`` points (``sparse_moves``: window -> Sim3).
        Returns how many frames moved."""
        self._check_open()
        rec = self._records[: len(self._images)]
        moved = 0
        for k in range(len(rec)):
            sim3 = moves.get(int(rec["index"][k]))
            if sim3 is None:
                continue
            rec["c2w"][k] = sim3.apply_c2w(rec["c2w"][k])
            moved += 1
            self._move_depth(int(rec["index"][k]), sim3)
        if moved:
            self._tum.close()
            lines = "".join(_tum_line(float(r["timestamp"]), r["c2w"]) for r in rec)
            _atomic_write(self.out_dir / TRAJECTORY_TUM, lambda f: f.write((TUM_HEADER + lines).encode()))
            self._tum = open(self.out_dir / TRAJECTORY_TUM, "a", encoding="utf-8")
        for window, sim3 in (sparse_moves or {}).items():
            path = self._sparse_path(window)
            if int(window) in self._sparse_segment and path.exists():
                with np.load(path) as data:
                    arrays = {k: data[k] for k in data.files}
                arrays["points"] = sim3.apply(arrays["points"])
                self._save_npz(path, arrays)
        return moved

    def set_radial(self, segment: int, k1: float) -> None:
        """Record that the frames of ``segment`` see through a lens with radial coefficient ``k1``
        (``geometry.radial_distorted`` of their K): trajectory.json's ``radial_k1``."""
        self._check_open()
        self._radial[int(segment)] = float(k1)

    def scale_focal(self, segment: int, factor: float, window_factors: dict[int, float] | None = None,
                    frame_window: dict[int, int] | None = None) -> int:
        """Multiply fx and fy of every frame of ``segment`` by ``factor`` (a global adjustment refined the
        stream's focal length): the records, depth/<index>.npz and sparse/<window>.npz follow. A window of
        ``window_factors`` (window -> factor) takes its own factor instead, for its sparse file and for the
        frames ``frame_window`` (frame index -> window) says it posed: windows that self-calibrated apart
        all end at the one focal length the adjustment found. Returns how many frames changed."""
        self._check_open()
        window_factors = window_factors or {}
        frame_window = frame_window or {}
        rec = self._records[: len(self._images)]
        rows = np.flatnonzero(rec["segment"] == int(segment))
        for k in rows.tolist():
            index = int(rec["index"][k])
            own = window_factors.get(frame_window.get(index), factor)
            rec["K"][k] = _focal_scaled(rec["K"][k], own)
            depth_file = self.out_dir / DEPTH_DIR / f"{index:06d}.npz"
            if depth_file.exists():
                with np.load(depth_file) as data:
                    arrays = {name: data[name] for name in data.files}
                arrays["K"] = _focal_scaled(arrays["K"], own)
                self._save_depth(depth_file, arrays)
        for window, seg in self._sparse_segment.items():
            path = self._sparse_path(window)
            if seg == int(segment) and path.exists():
                with np.load(path) as data:
                    arrays = {k: data[k] for k in data.files}
                arrays["K"] = _focal_scaled(arrays["K"], window_factors.get(int(window), factor))
                self._save_npz(path, arrays)
        return len(rows)

    def drop_held_tracks(self) -> int:
        """Remove the tracked frames' observations (``held_*``) from every sparse file: the final
        adjustment has used them. Returns how many files changed."""
        self._check_open()
        changed = 0
        for window in self._sparse_segment:
            path = self._sparse_path(window)
            if not path.exists():
                continue
            with np.load(path) as data:
                if "held_frame" not in data.files:
                    continue
                arrays = {k: data[k] for k in data.files if not k.startswith("held_")}
            self._save_npz(path, arrays)
            changed += 1
        return changed

    def sparse_focals(self, segment: int) -> dict[int, float]:
        """Per window of ``segment`` with a sparse file, the focal length (model pixels, the median of its
        views' fx) its tracks were measured with."""
        out = {}
        for window, seg in self._sparse_segment.items():
            path = self._sparse_path(window)
            if seg == int(segment) and path.exists():
                with np.load(path) as data:
                    out[int(window)] = float(np.median(data["K"][:, 0, 0]))
        return out

    def posed_frames(self) -> list[PosedFrame]:
        """The frames recorded so far, in the order they were added (copies)."""
        rec = self._records[: len(self._images)]
        return [PosedFrame(int(r["index"]), float(r["timestamp"]), self._images[k], r["c2w"].copy(), r["K"].copy(),
                           int(r["width"]), int(r["height"]), int(r["segment"]), POSE_KINDS[int(r["pose_kind"])])
                for k, r in enumerate(rec)]

    def set_sparse_points(self, window: int, points: np.ndarray) -> Path:
        """Replace the points [P, 3] of ``sparse/<window>.npz`` (a global bundle adjustment moved them)."""
        self._check_open()
        path = self._sparse_path(window)
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        if np.shape(points) != arrays["points"].shape:
            raise ValueError(f"sparse window {window}: {np.shape(points)} points for {arrays['points'].shape}")
        arrays["points"] = np.asarray(points, np.float64)
        return self._save_npz(path, arrays)

    def write_frame_image(self, index: int, image: np.ndarray, pixel_map: np.ndarray) -> Path:
        """Write ``frames/<index:06d>.jpg`` (the model-resolution frame, uint8 RGB [H, W, 3]) and append
        its record (``index``, ``file``, ``width``, ``height``, ``pixel_map``: input pixels -> these
        pixels) to ``frames/frames.jsonl``."""
        import cv2

        self._check_open()
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"frame {index}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        folder = self.out_dir / FRAMES_DIR
        folder.mkdir(exist_ok=True)
        name = f"{int(index):06d}.jpg"
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise ValueError(f"frame {index}: JPEG encoding failed")
        path = _atomic_write(folder / name, lambda f: f.write(data.tobytes()))
        if self._frames_jsonl is None:
            self._frames_jsonl = open(folder / FRAMES_JSONL, "a", encoding="utf-8")
        record = {"index": int(index), "file": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                  "pixel_map": np.asarray(pixel_map, np.float64).tolist()}
        self._frames_jsonl.write(json.dumps(record) + "\n")
        self._frames_jsonl.flush()
        return path

    def write_sparse(self, window: int, segment: int, frame_indices: np.ndarray, sparse, held=()) -> Path:
        """Write ``sparse/<window:06d>.npz`` from a world-frame ``contracts.SparseTracks`` whose views are
        the frames ``frame_indices`` [S], and ``held``: (frame index, rows of the points [n], pixels [n, 2])
        of the frames tracked between the window's views; see docs/output_format.md for the keys."""
        self._check_open()
        frame_indices = np.asarray(frame_indices, np.int64)
        if len(frame_indices) != len(sparse.K):
            raise ValueError(f"window {window}: {len(frame_indices)} frame indices for {len(sparse.K)} sparse views")
        (self.out_dir / SPARSE_DIR).mkdir(exist_ok=True)
        arrays = {"points": np.asarray(sparse.points, np.float64), "colors": np.asarray(sparse.colors, np.uint8),
                  "obs_point": np.asarray(sparse.obs_point, np.int64),
                  "obs_frame": frame_indices[np.asarray(sparse.obs_view, np.int64)],
                  "obs_xy": np.asarray(sparse.obs_xy, np.float64), "frame_indices": frame_indices,
                  "K": np.asarray(sparse.K, np.float64), "segment": np.int64(segment)}
        if sparse.radial_k1:
            arrays["radial_k1"] = np.float64(sparse.radial_k1)
        if held:
            arrays.update(held_frame=np.concatenate([np.full(len(ids), i, np.int32) for i, ids, _ in held]),
                          held_point=np.concatenate([np.asarray(ids, np.int32) for _, ids, _ in held]),
                          held_xy=np.concatenate([np.asarray(xy, np.float32).reshape(-1, 2) for *_, xy in held]))
        self._sparse_segment[int(window)] = int(segment)
        return self._save_npz(self._sparse_path(window), arrays)

    def _sparse_path(self, window: int) -> Path:
        return self.out_dir / SPARSE_DIR / f"{int(window):06d}.npz"

    @staticmethod
    def _save_npz(path: Path, arrays: dict) -> Path:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return _atomic_write(path, lambda f: f.write(buf.getvalue()))

    def write_depth(self, index: int, depth: np.ndarray, conf: np.ndarray, K: np.ndarray,
                    c2w: np.ndarray, keyframes: Sequence[int] | None = None) -> Path:
        """Write ``depth/<index:06d>.npz``: depth, conf float32 [H, W]; K [3, 3] model pixels; c2w [4, 4];
        ``source`` "model" (the window model's own depth). With ``keyframes`` (Frame.index of the keyframes
        it was derived from: a tracked frame's map, ``recon.tracked_depth``), ``source`` is "keyframes",
        ``keyframes`` int64 [n], and the file is compact (see ``_save_depth``)."""
        self._check_open()
        depth = np.asarray(depth, np.float32)
        conf = np.asarray(conf, np.float32)
        K = np.asarray(K, np.float64)
        c2w = np.asarray(c2w, np.float64)
        if depth.ndim != 2:
            raise ValueError(f"depth of frame {index} must be [H, W], got {depth.shape}")
        if conf.shape != depth.shape:
            raise ValueError(f"conf of frame {index} must match depth {depth.shape}, got {conf.shape}")
        if K.shape != (3, 3) or c2w.shape != (4, 4):
            raise ValueError(f"frame {index}: K must be [3, 3] and c2w [4, 4], got {K.shape} and {c2w.shape}")
        folder = self.out_dir / DEPTH_DIR
        folder.mkdir(exist_ok=True)
        arrays = {"depth": depth, "conf": conf, "K": K, "c2w": c2w}
        if keyframes is None:
            arrays["source"] = np.array(DEPTH_FROM_MODEL)
        else:
            arrays["source"] = np.array(DEPTH_FROM_KEYFRAMES)
            arrays["keyframes"] = np.asarray(keyframes, np.int64)
        return self._save_depth(folder / f"{int(index):06d}.npz", arrays)

    def _save_depth(self, path: Path, arrays: dict) -> Path:
        """A depth file; one derived from keyframes is stored compact: depth and conf rounded to
        ``DERIVED_DEPTH_BITS`` significant bits (far below the map's own error) in a deflated zip."""
        if str(arrays.get("source", "")) != DEPTH_FROM_KEYFRAMES:
            return self._save_npz(path, arrays)
        arrays = {**arrays, "depth": _round_mantissa(arrays["depth"], DERIVED_DEPTH_BITS),
                  "conf": _round_mantissa(arrays["conf"], DERIVED_DEPTH_BITS)}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            for name, value in arrays.items():
                with z.open(f"{name}.npy", "w") as f:
                    np.lib.format.write_array(f, np.asanyarray(value))
        return _atomic_write(path, lambda f: f.write(buf.getvalue()))

    def _move_depth(self, index: int, sim3) -> None:
        """depth/<index>.npz (if written) follows its frame moved by ``sim3``: pose and depth scale."""
        depth_file = self.out_dir / DEPTH_DIR / f"{int(index):06d}.npz"
        if depth_file.exists():
            with np.load(depth_file) as data:
                arrays = {name: data[name] for name in data.files}
            arrays["c2w"] = sim3.apply_c2w(arrays["c2w"])
            arrays["depth"] = (arrays["depth"] * np.float32(sim3.s)).astype(np.float32)
            self._save_depth(depth_file, arrays)

    def write_points(self, points: np.ndarray, colors: np.ndarray) -> Path:
        """Write ``points.ply``; points [N, 3] float, colors [N, 3] uint8 or float in [0, 1]."""
        return write_points_ply(self.out_dir / POINTS_PLY, points, colors)

    def write_run(self, run: dict) -> Path:
        """Write ``run.json`` (numpy values allowed); adds the stream4d and format versions."""
        from stream4d import __version__

        body = {"stream4d_version": __version__, "format_version": FORMAT_VERSION, **run}
        return _write_json(self.out_dir / RUN_JSON, body)

    def close(self) -> None:
        """Write trajectory.json (atomically) and close trajectory.tum. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._tum.close()
        if self._frames_jsonl is not None:
            self._frames_jsonl.close()
        rec = self._records[: len(self._images)]
        order = np.argsort(rec["index"], kind="stable")  # input order, also for reordered collections
        if np.any(order != np.arange(len(order))):
            lines = "".join(_tum_line(float(rec[k]["timestamp"]), rec[k]["c2w"]) for k in order)
            _atomic_write(self.out_dir / TRAJECTORY_TUM, lambda f: f.write((TUM_HEADER + lines).encode()))
        frames = [
            PosedFrame(int(r["index"]), float(r["timestamp"]), self._images[k], r["c2w"], r["K"], int(r["width"]),
                       int(r["height"]), int(r["segment"]), POSE_KINDS[int(r["pose_kind"])]).to_json()
            for k, r in ((int(k), rec[k]) for k in order)
        ]
        body = {"version": FORMAT_VERSION, "frames": frames}
        if self._radial:
            body["radial_k1"] = {str(segment): k1 for segment, k1 in sorted(self._radial.items())}
        _write_json(self.out_dir / TRAJECTORY_JSON, body)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"OutputWriter for {self.out_dir} is closed")

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on errors: the poses so far are the useful part of a failed run


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _frames_list(data: Any, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise ValueError(f"{path} has no top-level \"frames\" list")
    return data["frames"]


def _frame_from_dict(entry: Any, path: Path, pos: int, index: int, timestamp: float) -> PosedFrame:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: frame {pos} is not an object")
    if "c2w" not in entry:
        raise ValueError(f"{path}: frame {pos} lacks \"c2w\"")
    K = entry.get("K")
    try:
        return PosedFrame(
            index=index,
            timestamp=timestamp,
            image=entry.get("image", ""),
            c2w=np.asarray(entry["c2w"], np.float64),
            K=np.full((3, 3), np.nan) if K is None else np.asarray(K, np.float64),
            width=entry.get("width", 0),
            height=entry.get("height", 0),
            segment=entry.get("segment", 0),
            pose_kind=entry.get("pose_kind", POSE_POSED),
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: frame {pos}: {exc}") from exc


def read_trajectory_json(path: str | Path) -> list[PosedFrame]:
    """Frames of a ``trajectory.json`` written by ``OutputWriter``."""
    path = Path(path)
    frames = _frames_list(_load_json(path), path)
    out = []
    for pos, entry in enumerate(frames):
        if not isinstance(entry, dict) or "index" not in entry:
            raise ValueError(f"{path}: frame {pos} has no \"index\" (is this a cameras.json?)")
        out.append(_frame_from_dict(entry, path, pos, entry["index"], entry.get("timestamp", entry["index"])))
    return out


def read_radial(path: str | Path) -> dict[int, float]:
    """Segment -> radial coefficient of its lens from a ``trajectory.json`` (or the output folder holding
    it); empty when the run's cameras are pinholes."""
    path = Path(path)
    data = _load_json(path / TRAJECTORY_JSON if path.is_dir() else path)
    radial = data.get("radial_k1") if isinstance(data, dict) else None
    try:
        return {int(segment): float(k1) for segment, k1 in (radial or {}).items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: \"radial_k1\" is not a map of segment to number") from exc


def read_tum(path: str | Path) -> list[PosedFrame]:
    """Frames of a TUM trajectory file (index -1, unknown K, image "")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values = np.array([float(v) for v in line.replace(",", " ").split()], np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: not a TUM line ({exc})") from exc
        if values.shape != (8,) or not np.all(np.isfinite(values)):
            raise ValueError(f"{path}:{lineno}: expected 8 finite numbers "
                             f"'timestamp tx ty tz qx qy qz qw', got {values.size}")
        if np.linalg.norm(values[4:]) < 1e-12:
            raise ValueError(f"{path}:{lineno}: zero quaternion")
        out.append(PosedFrame(index=-1, timestamp=values[0], image="", c2w=tum_to_c2w(values[1:4], values[4:]),
                              K=np.full((3, 3), np.nan), width=0, height=0))
    return out


def read_trajectory(path: str | Path) -> list[PosedFrame]:
    """Posed frames from an output folder, a ``trajectory.json`` or a ``.tum`` file.

    For a folder, ``trajectory.json`` is used, or ``trajectory.tum`` when the run
    did not get to close its writer.
    """
    path = Path(path)
    if path.is_dir():
        if (path / TRAJECTORY_JSON).is_file():
            return read_trajectory_json(path / TRAJECTORY_JSON)
        if (path / TRAJECTORY_TUM).is_file():
            return read_tum(path / TRAJECTORY_TUM)
        raise FileNotFoundError(f"output folder {path} has neither {TRAJECTORY_JSON} nor {TRAJECTORY_TUM}")
    if not path.exists():
        raise FileNotFoundError(f"trajectory {path} does not exist")
    if path.suffix.lower() in (".tum", ".txt"):
        return read_tum(path)
    return read_trajectory_json(path)


def read_cameras_json(path: str | Path) -> list[PosedFrame]:
    """Reference cameras in the ../shared/data ``cameras.json`` format.

    index = position in the list; timestamp = the frame's "timestamp" if present, else index.
    """
    path = Path(path)
    frames = _frames_list(_load_json(path), path)
    out = []
    for pos, entry in enumerate(frames):
        ts = entry.get("timestamp", pos) if isinstance(entry, dict) else pos
        frame = _frame_from_dict(entry, path, pos, pos, ts)
        if np.isnan(frame.K).any():
            raise ValueError(f"{path}: frame {pos} lacks \"K\"")
        out.append(frame)
    return out


def read_depth(out_dir: str | Path, index: int) -> dict[str, np.ndarray]:
    """``depth/<index:06d>.npz`` of an output folder: depth, conf float32 [H, W], K [3, 3], c2w [4, 4];
    ``source`` (0-d str array: "model", or "keyframes" with ``keyframes`` int64 [n]; absent in files
    from before it existed)."""
    path = Path(out_dir) / DEPTH_DIR / f"{int(index):06d}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no depth for frame {index}: {path} does not exist")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@dataclass
class FrameImage:
    """A record of ``frames/frames.jsonl``: where a model-resolution frame is and how it maps to the input."""

    index: int
    path: Path  # frames/<index:06d>.jpg
    width: int  # of the written image
    height: int
    pixel_map: np.ndarray  # [3, 3], input pixels -> pixels of the written image


def read_frame_images(out_dir: str | Path) -> dict[int, FrameImage]:
    """The frames saved in ``out_dir/frames`` by frame index (empty when the run saved none)."""
    folder = Path(out_dir) / FRAMES_DIR
    path = folder / FRAMES_JSONL
    if not path.is_file():
        return {}
    out: dict[int, FrameImage] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rec = FrameImage(int(r["index"]), folder / str(r["file"]), int(r["width"]), int(r["height"]),
                             np.asarray(r["pixel_map"], np.float64).reshape(3, 3))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if n == len(lines) - 1:
                break  # a crash mid-line leaves the last record torn: the frames before it stand
            raise ValueError(f"{path} line {n + 1} is not a frame record: {exc}") from exc
        out[rec.index] = rec
    return out


@dataclass
class SparseMap:
    """Every sparse point of one segment of a run (``sparse/*.npz`` concatenated), world frame.

    Points of different windows stay separate points, even where they are the same scene point.
    """

    points: np.ndarray  # float64 [P, 3]
    colors: np.ndarray  # uint8 [P, 3]
    obs_point: np.ndarray  # int64 [O], row of points
    obs_frame: np.ndarray  # int64 [O], Frame.index of the observing frame
    obs_xy: np.ndarray  # float64 [O, 2], model pixels, centres at integers
    K: dict[int, np.ndarray]  # frame index -> [3, 3] intrinsics the observations were measured with
    point_window: np.ndarray | None = None  # int64 [P], the window (sparse/<window>.npz) of each point
    # frame index -> radial coefficient of the lens its window measured the observations through, for
    # the frames whose window found one (``contracts.SparseTracks.radial_k1``); absent: a pinhole
    radial: dict[int, float] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(len(self.points))


def _round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 ``values`` rounded to ``bits`` significant bits (zeros stay zero): the low mantissa bits
    are noise for a derived map and cost most of its compressed size."""
    v = np.ascontiguousarray(values, np.float32).view(np.uint32)
    drop = 23 - bits
    rounded = (v + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return rounded.view(np.float32)


def _focal_scaled(K: np.ndarray, factor: float) -> np.ndarray:
    """``K`` [..., 3, 3] with fx, fy (and skew) multiplied by ``factor``; the principal point kept."""
    out = np.array(K, copy=True)
    out[..., 0, :2] *= factor
    out[..., 1, 1] *= factor
    return out


def _sparse_files(out_dir: str | Path, segment: int | None):
    """(window, the file's arrays, row of its first point in ``read_sparse``'s points) of each sparse file
    of ``segment`` (all when None), in window order."""
    offset = 0
    for path in sorted((Path(out_dir) / SPARSE_DIR).glob("*.npz")):
        try:
            with np.load(path) as data:
                d = {k: data[k] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - numpy raises several types for broken files
            raise ValueError(f"{path} is not a readable sparse file: {exc}") from exc
        if segment is not None and int(d["segment"]) != segment:
            continue
        yield int(path.stem), d, offset
        offset += len(d["points"])


def read_sparse(out_dir: str | Path, segment: int | None = None) -> SparseMap:
    """The sparse points of ``out_dir`` (of ``segment`` only when given); empty when the run wrote none
    (a backend without feature tracks). A frame seen by several windows keeps the first window's K."""
    parts, K, windows, radial = [], {}, [], {}
    for window, d, offset in _sparse_files(out_dir, segment):
        parts.append((d["points"], d["colors"], d["obs_point"] + offset, d["obs_frame"], d["obs_xy"]))
        windows.append(np.full(len(d["points"]), window, np.int64))
        k1 = float(d["radial_k1"]) if "radial_k1" in d else 0.0
        for f, k in zip(d["frame_indices"].tolist(), d["K"]):
            if int(f) not in K and k1:
                radial[int(f)] = k1
            K.setdefault(int(f), k)
    if not parts:
        return SparseMap(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64),
                         np.zeros(0, np.int64), np.zeros((0, 2)), {}, np.zeros(0, np.int64))
    cols = list(zip(*parts))
    return SparseMap(*(np.concatenate(c) for c in cols), K, np.concatenate(windows), radial)


def read_held_tracks(out_dir: str | Path, segment: int | None = None) -> Iterator[dict[int, tuple]]:
    """Per sparse file of ``segment``, one dict: tracked frame index -> (rows of ``read_sparse(out_dir,
    segment).points`` int64 [n], where the frame sees them float64 [n, 2] model pixels, the K [3, 3] of the
    window that tracked it), the observations its tracking kept (``held_*`` keys; runs before they were
    written have none). One window's at a time: they are most of a long run's sparse bytes."""
    for _, d, offset in _sparse_files(out_dir, segment):
        if "held_frame" not in d:
            continue
        frames = d["held_frame"]
        order = np.argsort(frames, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(frames[order]) != 0])
        yield {int(frames[order[a]]): (d["held_point"][rows].astype(np.int64) + offset,
                                       d["held_xy"][rows].astype(np.float64), d["K"][0])
               for a, rows in zip(starts, np.split(order, starts[1:]))}


__all__ = [
    "FORMAT_VERSION", "PosedFrame", "OutputWriter", "read_radial", "read_trajectory", "read_trajectory_json", "read_tum",
    "read_cameras_json", "read_points_ply", "write_points_ply", "read_depth", "c2w_to_tum", "tum_to_c2w",
    "json_default", "FrameImage", "read_frame_images", "SparseMap", "read_sparse", "read_held_tracks",
]
