"""Exports of a finished output folder that other tools open: COLMAP sparse models, nerfstudio
``transforms.json`` (3DGS trainers read either). See docs/output_format.md, "Exports"."""

from __future__ import annotations

from pathlib import Path

from stream4d.export.colmap import write_colmap
from stream4d.export.nerfstudio import transforms_json, write_nerfstudio
from stream4d.export.scene import ExportError, ExportScene, ExportView, load_scene

FORMATS = ("colmap", "nerfstudio")


def export(out_dir: str | Path, fmt: str, dst: str | Path | None = None, text: bool = False,
           segment: int | None = None, max_reproj_px: float = 4.0) -> Path:
    """Export ``out_dir`` as ``fmt`` (colmap | nerfstudio) into ``dst`` (default ``out_dir/<fmt>``);
    returns the folder written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    dst = Path(dst) if dst is not None else out_dir / fmt
    scene = load_scene(out_dir, segment=segment, max_reproj_px=max_reproj_px)
    if fmt == "colmap":
        write_colmap(scene, dst, text=text)
    else:
        write_nerfstudio(scene, dst)
    return dst


__all__ = ["FORMATS", "ExportError", "ExportScene", "ExportView", "export", "load_scene", "transforms_json",
           "write_colmap", "write_nerfstudio"]
