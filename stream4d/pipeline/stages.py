"""The stages of a run, built from its ``ReconstructConfig``: input, window model, aligner, observers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from stream4d.contracts import StreamObserver, WindowModel
from stream4d.pipeline.config import ReconstructConfig


def build_model(config: ReconstructConfig) -> WindowModel:
    if config.backend == "vggt":
        if not config.weights:
            raise ValueError("the vggt backend needs --weights (a .pt/.safetensors file or hf:facebook/VGGT-1B)")
        from stream4d.pipeline.vggt_stream import load_vggt_backend

        return load_vggt_backend(config.weights, device=config.device)
    from recon.default.model import DefaultWindowModel

    return DefaultWindowModel(config.model)


def open_input(source: Any, config: ReconstructConfig):
    """A ``recon.ingest.FrameSource`` for ``source`` (a path, URL, ``camera:N``, or a source as is)."""
    from recon.ingest import FrameSource, open_source

    if isinstance(source, FrameSource):
        return source
    return open_source(source, config.ingest)


def build_aligner(config: ReconstructConfig, source) -> Any:
    """The ``align.StreamAligner`` of a run; intrinsics a dataset folder supplies are trusted,
    otherwise every window is re-unprojected with the first window's."""
    from align import StreamAligner

    known_K = getattr(source.info, "kind", "") == "dataset"
    return StreamAligner(replace(config.align, new_segment_on_gap=True,
                                 fix_intrinsics=config.align.fix_intrinsics and not known_K))


def build_observers(config: ReconstructConfig, out_dir: Path) -> list[StreamObserver]:
    """The run's own viewer / recording (the caller may bring more observers)."""
    if config.viz.mode == "none" and not config.rrd:
        return []
    from viz import RerunObserver

    rrd = rrd_path(config, out_dir) if config.rrd else None
    return [RerunObserver(replace(config.viz, rrd_path=rrd))]


def rrd_path(config: ReconstructConfig, out_dir: Path) -> Path:
    return Path(config.viz.rrd_path) if config.viz.rrd_path else out_dir / "recording.rrd"
