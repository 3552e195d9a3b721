"""Live rerun viewer of a stream (the last stage: it may import every other one).

``RerunObserver(VizConfig(...))`` is the pipeline's ``StreamObserver``: it logs
cameras, images, depth, point maps, the Gaussian cache and stream statistics to
a dedicated rerun recording, saved as ``.rrd`` and/or shown live in a native
viewer (``spawn``) or the web viewer on 127.0.0.1 (``serve``).
"""

from viz.blueprint import build_blueprint
from viz.config import VizConfig
from viz.observer import RerunObserver
from viz.recorder import StreamRecorder
from viz.session import RerunSession, serve_recording

__all__ = ["VizConfig", "RerunObserver", "RerunSession", "StreamRecorder", "build_blueprint", "serve_recording"]
