"""Live rerun viewer of a stream (the last stage: it may import every other one).

``RerunObserver(VizConfig(...))`` is the pipeline's ``StreamObserver``: it logs
cameras, images, depth, point maps, the Gaussian cache and stream statistics to
a dedicated rerun recording, saved as ``.rrd`` and/or shown live in a native
viewer (``spawn``) or the web viewer on 127.0.0.1 (``serve``).
"""

from stream4d.lazy import lazy_exports

__all__ = ["VizConfig", "RerunObserver", "RerunSession", "StreamRecorder", "build_blueprint", "serve_recording"]
__getattr__ = lazy_exports(__name__, {
    "VizConfig": "viz.config",
    "RerunObserver": "viz.observer",
    "RerunSession": "viz.session",
    "StreamRecorder": "viz.recorder",
    "build_blueprint": "viz.blueprint",
    "serve_recording": "viz.session",
})
