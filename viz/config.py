"""Configuration of a rerun viewer session (built once by the CLI or the service)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIEWER_MODES = ("none", "spawn", "serve")
GAUSSIAN_STYLES = ("points", "ellipsoids", "splats")


@dataclass
class VizConfig:
    """How a stream is logged to rerun and where the recording goes.

    Sinks:
        mode: ``"none"`` (only the ``.rrd``, if any), ``"spawn"`` (native viewer; falls back
            to ``"serve"`` with a message when no viewer binary or display exists) or
            ``"serve"`` (gRPC server + web viewer on 127.0.0.1; see ``RerunObserver.viewer_url``).
        rrd_path: save the recording here (the pipeline passes ``out_dir/recording.rrd``).
        app_id: rerun application id; sessions of one app share the viewer's blueprint.
        recording_id: rerun recording id; ``None`` draws a fresh UUID per session.
        grpc_port: port of the served gRPC server; ``None`` picks a free port.
        web_port: port of the web viewer; ``None`` shares one free port per process.
        spawn_port: port of the native viewer (rerun's default 9876: one viewer, many streams).
        server_memory_limit: data the gRPC server buffers for late viewers (oldest dropped).
        serve_after_close: in serve mode, keep serving the finished recording after
            ``close()`` until ``shutdown()`` or process exit (False: ``close()`` stops it).
        announce: print the viewer URL / fallback messages to stderr.

    What is logged (the defaults keep a recording near or under 2 MB per second of
    25 fps input; docs/benchmarks.md):
        point_budget: at most this many static Gaussians per live cache refresh.
        final_point_budget: at most this many in the last snapshot, drawn on close.
        dynamic_point_budget: at most this many dynamic Gaussians per timestamp.
        keyframe_every: every this many posed frames (from the first) is a keyframe: its
            depth, confidence and point map are logged; every posed frame gets its camera
            and image.
        depth_max_side: keyframe depth and confidence are decimated (every k-th pixel, the
            intrinsics scaled alike) to at most this many pixels a side; None: model size.
        frame_point_budget: at most this many points of a keyframe's point map.
        conf_quantile: drop a frame's points below this quantile of its confidence.
        cache_every: log the Gaussian cache at most once per this many windows
            (the newest snapshot is always logged on close, with ``final_point_budget``).
        gaussian_style: ``"points"`` (Points3D, radius = mean std), ``"ellipsoids"``
            (Ellipsoids3D, 1-sigma half sizes) or ``"splats"`` (GaussianSplats3D).
        log_images / log_depth: log each frame's image / keyframes' depth and confidence.
        jpeg_quality: JPEG quality of logged images (``EncodedImage``; ~15x smaller than raw
            RGB); ``None`` logs raw RGB.
        trajectory_budget: at most this many vertices in the logged camera path.
        pose_path_every: the path of the tracked frames is logged again every this many of them.

    Back-pressure:
        queue_size: pending items between the pipeline and the logging thread; when
            full, stale items are dropped (a window keeps its cameras, loses its pixels).
        close_timeout: seconds ``close()`` waits for the logging thread to drain.
    """

    mode: str = "none"
    rrd_path: Path | None = None
    app_id: str = "stream4d"
    recording_id: str | None = None
    grpc_port: int | None = None
    web_port: int | None = None
    spawn_port: int = 9876
    server_memory_limit: str = "1GiB"
    serve_after_close: bool = True
    announce: bool = True

    point_budget: int = 50_000
    final_point_budget: int = 200_000
    dynamic_point_budget: int = 20_000
    keyframe_every: int = 8
    depth_max_side: int | None = 128
    frame_point_budget: int = 10_000
    conf_quantile: float = 0.3
    cache_every: int = 4
    gaussian_style: str = "points"
    log_images: bool = True
    log_depth: bool = True
    jpeg_quality: int | None = 80
    trajectory_budget: int = 2_000
    pose_path_every: int = 30

    queue_size: int = 8
    close_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in VIEWER_MODES:
            raise ValueError(f"VizConfig.mode must be one of {VIEWER_MODES}, got {self.mode!r}")
        if self.gaussian_style not in GAUSSIAN_STYLES:
            raise ValueError(
                f"VizConfig.gaussian_style must be one of {GAUSSIAN_STYLES}, got {self.gaussian_style!r}")
        if self.rrd_path is not None:
            self.rrd_path = Path(self.rrd_path)
        for name in ("point_budget", "final_point_budget", "dynamic_point_budget", "frame_point_budget",
                     "cache_every", "queue_size", "trajectory_budget", "keyframe_every", "pose_path_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"VizConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.conf_quantile < 1.0:
            raise ValueError(f"VizConfig.conf_quantile must be in [0, 1), got {self.conf_quantile}")
        if self.depth_max_side is not None and self.depth_max_side < 1:
            raise ValueError(f"VizConfig.depth_max_side must be >= 1 or None, got {self.depth_max_side}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"VizConfig.jpeg_quality must be in [1, 100] or None, got {self.jpeg_quality}")
        for name in ("grpc_port", "web_port"):
            port = getattr(self, name)
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"VizConfig.{name} must be a TCP port (1..65535) or None, got {port}")

    @property
    def enabled(self) -> bool:
        """Whether anything is logged at all (a viewer or a file)."""
        return self.mode != "none" or self.rrd_path is not None
