"""A map's keyframes on disk: the re-attachment keyframes of ``align.reattach`` plus their view.

A saved map keeps, per keyframe, what :class:`align.reattach.SegmentLinker` matches a new
stream against (SIFT keypoints and RootSIFT descriptors, each feature's world point and its
camera z-depth) and the view it was lifted from (frame index, the run it came from, pose
and intrinsics). They are stored in one ``.npz`` (no pickle): per-keyframe arrays of length
``K`` and per-feature arrays concatenated over the keyframes, cut by ``offsets [K + 1]``.

Storage per feature (see :func:`bytes_per_feature`): keypoint 2 x float32, descriptor
128 x float16 (RootSIFT components lie in [0, 1]; half precision keeps them to ~5e-4),
world point 3 x float32 and depth float32: 280 bytes. A keyframe keeps at most
``ReattachConfig.max_features`` features (those with a usable depth), plus 224 bytes of
view (frame index, run, c2w, K).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from align.reattach import Keyframe
from recon.features import Features
from stream4d.geometry import Sim3

_FEATURE_ARRAYS = {"keypoints": (np.float32, 2), "descriptors": (np.float16, 128), "points": (np.float32, 3),
                   "depth": (np.float32, 0)}
_VIEW_BYTES = 8 + 8 + 16 * 8 + 9 * 8  # frame index, run, c2w, K


@dataclass
class MapKeyframe:
    """A re-attachment keyframe with the view it came from, in the map's world."""

    keyframe: Keyframe
    c2w: np.ndarray  # float64 [4, 4], camera-to-world
    K: np.ndarray  # float64 [3, 3], model pixels (those of the keypoints)
    run: int = 0  # which run of the map (map.json "runs") the frame belongs to

    @property
    def frame_index(self) -> int:
        return self.keyframe.frame_index

    def transformed(self, sim3: Sim3) -> "MapKeyframe":
        """The keyframe in another world (``x -> s R x + t``): points, depth and pose follow."""
        kf = self.keyframe
        moved = Keyframe(kf.frame_index, kf.features, sim3.apply(kf.points), kf.depth * sim3.s)
        return MapKeyframe(moved, sim3.apply_c2w(self.c2w), self.K.copy(), self.run)

    def refocused(self, factor: float) -> "MapKeyframe":
        """The keyframe through a camera whose fx and fy are ``factor`` times this one's (a global adjustment
        refined the stream's focal length): each point keeps its depth on its keypoint's new ray."""
        K = self.K.copy()
        K[0, 0] *= factor
        K[1, 1] *= factor
        kf = self.keyframe
        uv1 = np.column_stack([kf.features.keypoints, np.ones(len(kf.features.keypoints))])
        cam = np.linalg.solve(K, uv1.T).T * kf.depth[:, None]
        points = cam @ self.c2w[:3, :3].T + self.c2w[:3, 3]
        return MapKeyframe(Keyframe(kf.frame_index, kf.features, points, kf.depth.copy()), self.c2w.copy(), K,
                           self.run)


def bytes_per_feature() -> int:
    """Bytes one stored feature takes in keyframes.npz (before npz's own small headers)."""
    return sum(np.dtype(dtype).itemsize * max(width, 1) for dtype, width in _FEATURE_ARRAYS.values())


def keyframes_to_arrays(keyframes: list[MapKeyframe]) -> dict[str, np.ndarray]:
    """The npz arrays of ``keyframes`` (see the module docstring)."""
    counts = [len(m.keyframe.points) for m in keyframes]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def stacked(get, dtype, width):
        parts = [np.asarray(get(m.keyframe), np.float64).reshape(-1, width) if width else
                 np.asarray(get(m.keyframe), np.float64).reshape(-1) for m in keyframes]
        shape = (0, width) if width else (0,)
        return (np.concatenate(parts) if parts else np.zeros(shape)).astype(dtype)

    getters = {"keypoints": lambda k: k.features.keypoints, "descriptors": lambda k: k.features.descriptors,
               "points": lambda k: k.points, "depth": lambda k: k.depth}
    arrays = {name: stacked(getters[name], dtype, width) for name, (dtype, width) in _FEATURE_ARRAYS.items()}
    arrays.update(
        offsets=offsets,
        frame_index=np.array([m.frame_index for m in keyframes], np.int64),
        run=np.array([m.run for m in keyframes], np.int64),
        c2w=np.array([m.c2w for m in keyframes], np.float64).reshape(-1, 4, 4),
        K=np.array([m.K for m in keyframes], np.float64).reshape(-1, 3, 3),
    )
    return arrays


def keyframes_from_arrays(arrays, where: str = "keyframes") -> list[MapKeyframe]:
    """Inverse of :func:`keyframes_to_arrays`; a clear ValueError on missing or inconsistent arrays."""
    needed = list(_FEATURE_ARRAYS) + ["offsets", "frame_index", "run", "c2w", "K"]
    missing = [n for n in needed if n not in arrays]
    if missing:
        raise ValueError(f"{where} lacks the arrays {missing}")
    offsets = np.asarray(arrays["offsets"], np.int64)
    n_kf = len(arrays["frame_index"])
    n_feat = len(arrays["points"])
    if len(offsets) != n_kf + 1 or offsets[0] != 0 or offsets[-1] != n_feat or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{where}: offsets do not cut {n_feat} features into {n_kf} keyframes")
    for name in ("keypoints", "descriptors", "depth"):
        if len(arrays[name]) != n_feat:
            raise ValueError(f"{where}: {name} has {len(arrays[name])} rows, expected {n_feat}")
    keypoints = np.asarray(arrays["keypoints"], np.float64)
    descriptors = np.asarray(arrays["descriptors"], np.float32)
    points = np.asarray(arrays["points"], np.float64)
    depth = np.asarray(arrays["depth"], np.float64)
    out = []
    for k in range(n_kf):
        a, b = offsets[k], offsets[k + 1]
        kf = Keyframe(int(arrays["frame_index"][k]), Features(keypoints[a:b], descriptors[a:b]), points[a:b], depth[a:b])
        out.append(MapKeyframe(kf, np.asarray(arrays["c2w"][k], np.float64), np.asarray(arrays["K"][k], np.float64),
                               int(arrays["run"][k])))
    return out


def save_keyframes(path: str | Path, keyframes: list[MapKeyframe]) -> Path:
    """Write ``keyframes`` to ``path`` (npz, compressed; written whole, then renamed into place)."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(buf, **keyframes_to_arrays(keyframes))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def load_keyframes(path: str | Path) -> list[MapKeyframe]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the map keyframes {path}: {exc}") from None
    return keyframes_from_arrays(arrays, str(path))


def stored_bytes(keyframes: list[MapKeyframe]) -> int:
    """Uncompressed bytes ``keyframes`` take in keyframes.npz."""
    return sum(len(m.keyframe.points) for m in keyframes) * bytes_per_feature() + len(keyframes) * (_VIEW_BYTES + 8)
