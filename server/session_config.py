"""A session's options as the run's configuration tree: the one SessionOptions -> ReconstructConfig map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.models import SessionOptions

if TYPE_CHECKING:
    from stream4d.pipeline import ReconstructConfig


def reconstruct_config(options: SessionOptions, vggt_weights: Path | None,
                       max_pixels: int | None = None, save_map: Path | None = None,
                       map_from: Path | None = None, keyframer_lag_s: float | None = None) -> ReconstructConfig:
    """The pipeline's defaults with the session's choices on top, and the server's pixel limit
    (``--max-pixels``) for whatever the run decodes itself (pulled streams, uploads), and its
    ``--live-keyframer-lag`` (``live.keyframer_lag_s``) when given. ``save_map``:
    where the session keeps its map; ``map_from``: the map folder of ``options.map_from``'s session.

    The service never opens a viewer through the config: a served viewer is the service's own
    observer (its URL is needed before the run starts), so ``viz.mode`` stays "none".
    """
    # Imported here: the roof loads torch & co., which the server needs only once a job runs.
    from stream4d.pipeline import ReconstructConfig

    limits = {} if max_pixels is None else {"ingest.max_pixels": max_pixels}
    if keyframer_lag_s is not None:
        limits["live.keyframer_lag_s"] = float(keyframer_lag_s)
    return ReconstructConfig().override({
        **limits,
        "backend": options.backend,
        "weights": str(vggt_weights) if options.backend == "vggt" and vggt_weights else None,
        "align.window": options.window,
        "align.overlap": options.overlap,
        "ingest.resize": options.resolution,
        "ingest.stride": options.stride,
        "ingest.target_fps": options.target_fps,
        "ingest.max_frames": options.max_frames,
        "ingest.keyframes": options.drop_duplicates,
        "ingest.intrinsics": options.intrinsics,
        "ingest.fov_deg": options.fov_deg,
        "ingest.metadata_focal": options.metadata_focal,
        "keyframes.policy": options.keyframes,
        **({} if options.min_parallax is None else {"keyframes.min_parallax": options.min_parallax}),
        "gaussians": options.gaussians,
        "final_ba": options.final_ba,
        "viz.mode": "none",
        "rrd": True,
        "save_map": None if save_map is None else str(save_map),
        "map_from": None if map_from is None else str(map_from),
    })
