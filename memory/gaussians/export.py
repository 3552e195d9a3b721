"""Files of the Gaussian cache: ``splats.ply`` (3DGS layout) and ``points.ply`` (coloured points).

``splats.ply`` follows the layout of the reference 3DGS implementation that
gsplat-, Inria- and SuperSplat-style tools load: binary little-endian float32
``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3``
with colour as the degree-0 SH coefficient ``(rgb - 0.5) / C0``, opacity as a logit,
scales as logs and ``rot`` a w-first quaternion (normals are zero). When the
snapshot holds dynamic Gaussians an extra float64 ``timestamp`` column (NaN =
static) keeps them apart; viewers ignore properties they do not know.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from stream4d.contracts import GaussianSnapshot

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
_OPACITY_EPS = 1e-6  # logit() of exactly 0 or 1 is infinite
_FLOAT_NAMES = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
                + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def write_splats_ply(path: str | Path, snapshot: GaussianSnapshot) -> Path:
    """Write a snapshot as a standard 3DGS ``.ply``; returns the path."""
    if not isinstance(snapshot, GaussianSnapshot):
        raise TypeError(f"write_splats_ply needs a GaussianSnapshot, got {type(snapshot).__name__}")
    path = Path(path)
    n = snapshot.num
    opacity = np.clip(np.asarray(snapshot.opacities, np.float64), _OPACITY_EPS, 1.0 - _OPACITY_EPS)
    if np.any(np.asarray(snapshot.scales) <= 0):
        raise ValueError("write_splats_ply: snapshot.scales must be positive (they are stored as logs)")
    columns = {
        "x": snapshot.means[:, 0], "y": snapshot.means[:, 1], "z": snapshot.means[:, 2],
        "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n),
        **{f"f_dc_{i}": (snapshot.colors[:, i] - 0.5) / SH_C0 for i in range(3)},
        "opacity": np.log(opacity / (1.0 - opacity)),
        **{f"scale_{i}": np.log(snapshot.scales[:, i]) for i in range(3)},
        **{f"rot_{i}": snapshot.quats[:, i] for i in range(4)},
    }
    dtype = [(name, "<f4") for name in _FLOAT_NAMES]
    if snapshot.is_dynamic.any():
        dtype.append(("timestamp", "<f8"))
        columns["timestamp"] = snapshot.timestamps
    vertex = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        vertex[name] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(path))
    return path


def read_splats_ply(path: str | Path) -> GaussianSnapshot:
    """Read a 3DGS ``.ply`` (ours, or any with the standard names; SH bands above 0 are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_splats_ply: no such file {path}")
    ply = PlyData.read(str(path))
    if "vertex" not in ply:
        raise ValueError(f"read_splats_ply: {path} has no 'vertex' element")
    v = ply["vertex"].data
    names = set(v.dtype.names)
    needed = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + [f"scale_{i}" for i in range(3)] \
        + [f"rot_{i}" for i in range(4)]
    missing = [k for k in needed if k not in names]
    if missing:
        raise ValueError(f"read_splats_ply: {path} is not a 3DGS splat file, it lacks {missing}")

    def col(*keys):
        return np.stack([np.asarray(v[k], np.float64) for k in keys], axis=-1)

    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    quats /= np.maximum(np.linalg.norm(quats, axis=-1, keepdims=True), 1e-12)
    timestamps = np.asarray(v["timestamp"], np.float64) if "timestamp" in names else np.full(len(v), np.nan)
    return GaussianSnapshot(
        means=col("x", "y", "z").astype(np.float32),
        colors=np.clip(col("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5, 0.0, 1.0).astype(np.float32),
        opacities=(1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float64)))).astype(np.float32),
        scales=np.exp(col("scale_0", "scale_1", "scale_2")).astype(np.float32),
        quats=quats.astype(np.float32),
        timestamps=timestamps,
    )


def write_points_ply(path: str | Path, snapshot_or_points: GaussianSnapshot | np.ndarray,
                     colors: np.ndarray | None = None) -> Path:
    """Write a coloured point cloud (Open3D, binary): Gaussian means and colours, or ``points [N, 3]``
    with optional ``colors [N, 3]`` (float in [0, 1] or uint8)."""
    import open3d as o3d

    path = Path(path)
    if isinstance(snapshot_or_points, GaussianSnapshot):
        points = snapshot_or_points.means
        colors = snapshot_or_points.colors if colors is None else colors
    else:
        points = snapshot_or_points
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"write_points_ply: points must be [N, 3], got shape {points.shape}")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape:
            raise ValueError(f"write_points_ply: colors has shape {colors.shape}, expected {points.shape}")
        colors = colors / 255.0 if colors.dtype == np.uint8 else colors
        pcd.colors = o3d.utility.Vector3dVector(np.clip(colors.astype(np.float64), 0.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), pcd, write_ascii=False):
        raise OSError(f"write_points_ply: Open3D could not write {path}")
    return path
