"""The layout the viewer opens on: the 3D scene large, the current image and depth beside it, plots below."""

from __future__ import annotations

import rerun.blueprint as rrb

from viz import paths
from viz.config import VizConfig


def build_blueprint(config: VizConfig) -> rrb.Blueprint:
    # The keyframe's depth and confidence would also be back-projected into the 3D view (with a
    # second frustum); the keyframe's point map already shows that geometry, so keep them 2D only.
    scene = rrb.Spatial3DView(
        name="Scene", origin=paths.WORLD,
        contents=["+ $origin/**", f"- /{paths.KEYFRAME}/**"],
    )
    side = []
    if config.log_images:
        side.append(rrb.Spatial2DView(name="Image", origin=paths.PINHOLE, contents=f"+ /{paths.IMAGE}"))
    if config.log_depth:
        side.append(rrb.Tabs(
            rrb.Spatial2DView(name="Depth", origin=paths.KEYFRAME_PINHOLE, contents=f"+ /{paths.DEPTH}"),
            rrb.Spatial2DView(name="Confidence", origin=paths.KEYFRAME_PINHOLE, contents=f"+ /{paths.CONFIDENCE}"),
        ))
    top = rrb.Horizontal(scene, rrb.Vertical(*side), column_shares=[3, 1]) if side else scene
    plots = rrb.Horizontal(
        rrb.TimeSeriesView(name="Frames per second", origin=paths.FPS),
        rrb.TimeSeriesView(name="Gaussians in cache", origin=paths.CACHE_SIZE),
        rrb.TimeSeriesView(name="Alignment scale", origin=paths.ALIGN_SCALE),
        rrb.TimeSeriesView(name="Dropped", origin=paths.DROPPED),
    )
    return rrb.Blueprint(
        rrb.Vertical(top, plots, row_shares=[4, 1]),
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
        rrb.TimePanel(state="collapsed", timeline=paths.FRAME_TIMELINE),
    )
