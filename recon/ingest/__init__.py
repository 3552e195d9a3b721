"""Frame ingest: every input becomes a lazy, bounded-memory stream of ``Frame``s.

    from recon.ingest import open_source, IngestOptions

    with open_source("clip.mp4", IngestOptions(resize="vggt", keyframes=True)) as src:
        for frame in src:
            ...

Sources: video files and byte streams (PyAV), image folders, datasets with a
``cameras.json``, OpenCV cameras and network streams, and ``PushSource`` for
frames handed over in-process. All bad inputs raise ``IngestError``.
"""

from recon.ingest.base import FrameSource, RawFrame, SourceInfo, SourceStats
from recon.ingest.camera import CameraSource
from recon.ingest.errors import IngestError
from recon.ingest.images import ImageSequenceSource
from recon.ingest.keyframes import KeyframeSelector
from recon.ingest.options import DEFAULT_KEYFRAME_MIN_MOTION, IngestOptions, parse_resize
from recon.ingest.push import DropOldestBuffer, PushSource
from recon.ingest.sources import open_source
from recon.ingest.transforms import ResizePlan, plan_resize
from recon.ingest.video import VideoSource

__all__ = [
    "CameraSource",
    "DEFAULT_KEYFRAME_MIN_MOTION",
    "DropOldestBuffer",
    "FrameSource",
    "ImageSequenceSource",
    "IngestError",
    "IngestOptions",
    "KeyframeSelector",
    "PushSource",
    "RawFrame",
    "ResizePlan",
    "SourceInfo",
    "SourceStats",
    "VideoSource",
    "open_source",
    "parse_resize",
    "plan_resize",
]
