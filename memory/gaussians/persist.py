"""The static Gaussian map on disk (a saved map's ``gaussians.npz``), so a later run continues it.

Only the static layer is a map: dynamic Gaussians belong to the timestamps of the run that saw
them. Every column of ``store.STATIC_FIELDS`` is kept (the fusion weight, support and last
confirming camera decide how later views merge into a Gaussian), plus the voxel size of the
spatial index. ``last_view`` is stored relative to the saving run's view counter (its last view is -1), so a
loading run, whose view counter starts at 0, sees the map's Gaussians as that many views old.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from memory.gaussians.spatial_index import VoxelHashIndex
from memory.gaussians.store import STATIC_FIELDS, GaussianStore

VERSION = 1


def store_to_arrays(store: GaussianStore, voxel_size: float | None, views: int) -> dict[str, np.ndarray]:
    """The columns of ``store`` (``views``: the cache's view counter, to make ``last_view`` relative)."""
    arrays = {name: np.ascontiguousarray(store[name]) for name in STATIC_FIELDS}
    arrays["last_view"] = arrays["last_view"] - np.int64(views)
    arrays["voxel_size"] = np.float64(np.nan if voxel_size is None else voxel_size)
    arrays["version"] = np.int64(VERSION)
    return arrays


def store_from_arrays(arrays, where: str = "gaussians") -> tuple[GaussianStore, VoxelHashIndex | None]:
    """A store and its spatial index from :func:`store_to_arrays` output; ValueError when malformed."""
    missing = [n for n in STATIC_FIELDS if n not in arrays] + [n for n in ("voxel_size", "version") if n not in arrays]
    if missing:
        raise ValueError(f"{where} lacks the arrays {missing}")
    if int(arrays["version"]) != VERSION:
        raise ValueError(f"{where} has Gaussian format version {int(arrays['version'])}; this stream4d reads {VERSION}")
    n = len(arrays["means"])
    rows = {}
    for name, (dtype, shape) in STATIC_FIELDS.items():
        col = np.asarray(arrays[name])
        if col.shape != (n,) + shape:
            raise ValueError(f"{where}: column {name} has shape {col.shape}, expected {(n,) + shape}")
        rows[name] = col.astype(dtype)
    if n and not np.isfinite(rows["means"]).all():
        raise ValueError(f"{where}: non-finite Gaussian means")
    store = GaussianStore()
    ids = store.append(rows)
    voxel = float(arrays["voxel_size"])
    index = None
    if n and np.isfinite(voxel) and voxel > 0:
        index = VoxelHashIndex(voxel)
        index.set(ids, store["means"])
    return store, index


def save_store(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the Gaussian map {path}: {exc}") from None
