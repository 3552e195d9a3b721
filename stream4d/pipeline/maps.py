"""Persistent maps: the folder a run saves (``--save-map``) and a later run continues (``--map``).

A map folder (docs/output_format.md, "Map folder") holds ``map.json`` (format name, version,
the runs it was built from, and one named section per component) and one file per section:

- ``keyframes``: ``keyframes.npz`` (``align.mapfile``): the re-attachment keyframes with their views;
- ``trajectory``: ``trajectory.json``: every posed frame of every run, in the map's world;
- ``gaussians``: ``gaussians.npz`` (``memory.gaussians.persist``): the static splat map;
- ``intrinsics``: in map.json itself: the model resolution and the median keyframe K.

Readers ignore sections they do not know, so a later component (a place-recognition index)
adds a section without breaking older readers; a section a reader needs and cannot find is an
error that names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from align.mapfile import MapKeyframe

MAP_FORMAT = "stream4d-map"
MAP_VERSION = 1
MAP_JSON = "map.json"
KEYFRAMES_NPZ = "keyframes.npz"
TRAJECTORY_JSON = "trajectory.json"
GAUSSIANS_NPZ = "gaussians.npz"


MERGE_PROBES = 4  # keyframes of B matched against all of A's to find the overlap


class MapError(ValueError):
    """A map folder that cannot be read or written (the message says which file and why)."""


@dataclass
class SavedMap:
    """A map folder in memory. ``frames``: trajectory.json entries (dicts with ``run``, ``index``,
    ``c2w``, ...); ``gaussians``: ``persist.store_to_arrays`` output or None; ``runs``: map.json's."""

    keyframes: list[MapKeyframe]
    frames: list[dict]
    gaussians: dict[str, np.ndarray] | None = None
    runs: list[dict] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)  # map.json "sections", unknown ones included

    @property
    def model_size(self) -> list[int] | None:
        return (self.sections.get("intrinsics") or {}).get("model_size")


def read_map(path: str | Path) -> SavedMap:
    """The map folder at ``path``; MapError when it is not one, or of a newer version."""
    from align.mapfile import load_keyframes
    from memory.gaussians.persist import load_arrays

    folder = Path(path)
    meta_path = folder / MAP_JSON
    if not meta_path.is_file():
        raise MapError(f"{folder} is not a map folder: it has no {MAP_JSON} (save one with --save-map)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MapError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != MAP_FORMAT:
        raise MapError(f"{meta_path} is not a stream4d map (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > MAP_VERSION:
        raise MapError(f"{meta_path} has map version {meta.get('version')!r}; this stream4d reads up to {MAP_VERSION}")
    sections = meta.get("sections") or {}
    for needed in ("keyframes", "trajectory"):
        if needed not in sections:
            raise MapError(f"{meta_path} has no {needed!r} section")
    try:
        keyframes = load_keyframes(folder / sections["keyframes"]["file"])
        traj = json.loads((folder / sections["trajectory"]["file"]).read_text(encoding="utf-8"))
        frames = traj["frames"]
        gaussians = load_arrays(folder / sections["gaussians"]["file"]) if "gaussians" in sections else None
    except (OSError, KeyError, TypeError, json.JSONDecodeError, ValueError) as exc:
        raise MapError(f"map {folder}: {type(exc).__name__}: {exc}") from None
    return SavedMap(keyframes, frames, gaussians, list(meta.get("runs") or []), sections)


def write_map(path: str | Path, saved: SavedMap) -> Path:
    """Write ``saved`` as a map folder at ``path`` (created; the map's own files are replaced)."""
    from align.mapfile import save_keyframes, stored_bytes
    from memory.gaussians.persist import save_store

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise MapError(f"map folder {folder} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    sections: dict[str, Any] = {k: v for k, v in saved.sections.items()
                                if k not in ("keyframes", "trajectory", "gaussians", "intrinsics")}
    save_keyframes(folder / KEYFRAMES_NPZ, saved.keyframes)
    n_features = sum(len(m.keyframe.points) for m in saved.keyframes)
    sections["keyframes"] = {"file": KEYFRAMES_NPZ, "count": len(saved.keyframes), "features": n_features,
                             "bytes_uncompressed": stored_bytes(saved.keyframes),
                             "bytes_on_disk": (folder / KEYFRAMES_NPZ).stat().st_size}
    _write_json(folder / TRAJECTORY_JSON, {"version": MAP_VERSION, "frames": saved.frames})
    sections["trajectory"] = {"file": TRAJECTORY_JSON, "frames": len(saved.frames)}
    if saved.gaussians is not None:
        save_store(folder / GAUSSIANS_NPZ, saved.gaussians)
        sections["gaussians"] = {"file": GAUSSIANS_NPZ, "count": int(len(saved.gaussians["means"]))}
    elif (folder / GAUSSIANS_NPZ).exists():
        (folder / GAUSSIANS_NPZ).unlink()
    sections["intrinsics"] = _intrinsics(saved)
    meta = {"format": MAP_FORMAT, "version": MAP_VERSION, "runs": saved.runs, "sections": sections}
    _write_json(folder / MAP_JSON, meta)
    return folder


def _intrinsics(saved: SavedMap) -> dict:
    out: dict[str, Any] = {"model_size": saved.model_size}
    if saved.keyframes:
        out["K"] = np.median(np.array([m.K for m in saved.keyframes]), axis=0).tolist()
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def run_frames(out_dir: Path, segment: int, run: int) -> list[dict]:
    """The frames of a finished output folder's ``segment`` (trajectory.json entries), tagged with ``run``."""
    data = json.loads((Path(out_dir) / "trajectory.json").read_text(encoding="utf-8"))
    return [{**f, "run": run} for f in data["frames"] if f.get("segment", 0) == segment]


# ---- a run that starts from a map and/or saves one -------------------------------------------------

@dataclass
class MapRun:
    """What a run needs to know about maps between its start and its record."""

    loaded: SavedMap | None = None
    loaded_from: str | None = None


def start_run(config, aligner, cache) -> MapRun:
    """Before the stream: record keyframes for ``save_map``; with ``map_from``, begin inside that map
    (its keyframes segment 0 of ``aligner``, its Gaussians segment 0 of ``cache``)."""
    state = MapRun()
    if config.save_map:
        aligner.record_map()
    if config.map_from:
        saved = read_map(config.map_from)
        if not saved.keyframes:
            raise MapError(f"map {config.map_from} has no keyframes to relocalise against")
        aligner.start_from_map(saved.keyframes)
        if cache is not None and saved.gaussians is not None:
            cache.shelve_map(0, saved.gaussians)
        state.loaded, state.loaded_from = saved, str(config.map_from)
    return state


def relocalisation(state: MapRun, aligner) -> dict | None:
    """run.json's account of ``map_from``: found or not, and by which match."""
    if state.loaded is None:
        return None
    link = aligner.map_link
    found = link is not None and aligner.segment == 0
    out: dict[str, Any] = {"map": state.loaded_from, "relocalised": found}
    if link is not None:
        out.update(frame_index=link.frame_index, map_keyframe=link.keyframe_index, inliers=link.inliers,
                   scale=float(link.sim3.s))
    if not found:
        out["note"] = ("the input never matched the map's keyframes: its outputs are in its own world and "
                       "the map was not extended")
    return out


def finish_run(state: MapRun, config, out_dir: Path, aligner, cache, source: str) -> dict | None:
    """After the stream: write ``save_map`` (the loaded map's runs plus this one when the stream was
    relocalised, else this run alone) and return run.json's account of it."""
    if not config.save_map:
        return None
    found = bool((relocalisation(state, aligner) or {}).get("relocalised"))
    keyframes = aligner.map_keyframes()
    old = state.loaded if found else None
    run_id = len(old.runs) if old is not None else 0
    known = {id(m) for m in old.keyframes} if old is not None else set()
    for m in keyframes:
        if id(m) not in known:
            m.run = run_id
    frames = run_frames(out_dir, aligner.segment, run_id)
    this_run = {"run": run_id, "input": source, "frames": len(frames),
                "keyframes": sum(id(m) not in known for m in keyframes)}
    saved = SavedMap(
        keyframes=keyframes, frames=(old.frames if old is not None else []) + frames,
        gaussians=cache.map_arrays() if cache is not None else None,
        runs=(old.runs if old is not None else []) + [this_run])  # sections this code does not know
    # are dropped: it could not keep them consistent with the new keyframes
    model_size = aligner.model_size
    if model_size is not None:
        saved.sections["intrinsics"] = {"model_size": [int(model_size[0]), int(model_size[1])]}
    write_map(config.save_map, saved)
    return {"path": str(config.save_map), "runs": len(saved.runs), "keyframes": len(keyframes),
            "frames": len(saved.frames), "includes_loaded_map": found}


# ---- two maps into one --------------------------------------------------------------------------

@dataclass
class MergeResult:
    merged: SavedMap
    link: Any  # contracts.Reattachment: B's world -> A's world (from_segment 1 = B, to_segment 0 = A)


def merge_maps(a: SavedMap, b: SavedMap, reattach=None) -> MergeResult:
    """B moved into A's world and united with it: keyframes, trajectory (B's runs numbered after A's)
    and the static Gaussians (B's only where A has none in the voxel). B's keyframes are matched
    against A's with the same 3D-3D RANSAC similarity as a re-attachment (``align.reattach``);
    MapError when no pair of keyframes agrees (the maps do not overlap)."""
    from align.config import ReattachConfig
    from align.reattach import SegmentLinker
    from memory.gaussians import GaussianCache

    if not a.keyframes or not b.keyframes:
        raise MapError("both maps need keyframes to be merged")
    if a.model_size and b.model_size and list(a.model_size) != list(b.model_size):
        raise MapError(f"the maps were made at different model resolutions ({a.model_size} and {b.model_size}): "
                       "their keypoints are not comparable")
    linker = SegmentLinker(reattach or ReattachConfig())
    linker.add_segment(0, [m.keyframe for m in a.keyframes])
    # A few of B's keyframes find the overlap; all of them then refine the similarity.
    probes = np.unique(np.linspace(0, len(b.keyframes) - 1, min(len(b.keyframes), MERGE_PROBES)).round().astype(int))
    link = linker.try_link(1, [b.keyframes[k].keyframe for k in probes])
    if link is None:
        raise MapError(f"the maps do not overlap: none of B's {len(b.keyframes)} keyframes matched one of A's "
                       f"{len(a.keyframes)} keyframes with a consistent similarity")
    link = linker.refine_link(link, [m.keyframe for m in b.keyframes], [(m.c2w, m.K) for m in b.keyframes])
    shift = len(a.runs)
    moved = []
    for m in b.keyframes:
        t = m.transformed(link.sim3)
        t.run = m.run + shift
        moved.append(t)
    frames = list(a.frames) + [{**f, "c2w": link.sim3.apply_c2w(np.asarray(f["c2w"], np.float64)).tolist(),
                                "run": int(f.get("run", 0)) + shift} for f in b.frames]
    runs = list(a.runs) + [{**r, "run": int(r.get("run", 0)) + shift} for r in b.runs]
    gaussians = a.gaussians
    if b.gaussians is not None:
        cache = GaussianCache()
        cache.load_map(1, b.gaussians)
        if a.gaussians is not None:
            cache.shelve_map(0, a.gaussians)
        cache.reattach(link)
        gaussians = cache.map_arrays()
    merged = SavedMap(list(a.keyframes) + moved, frames, gaussians, runs,
                      {"intrinsics": {"model_size": a.model_size or b.model_size}})
    return MergeResult(merged, link)
