"""The streaming run: ingest -> sliding windows -> alignment -> Gaussian cache -> outputs/observers.

Three threads share the work so both cores stay busy: a reader decodes frames
ahead into a bounded queue, the caller's thread runs the window model, and the
alignment worker places each window in the world and feeds the cache, the
output folder and the observers. Nothing that grows with the stream is kept,
except the small per-frame trajectory records the output folder needs.
"""

from __future__ import annotations

import json
import logging
import platform
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from stream4d import __version__
from stream4d.contracts import AlignedWindow, Frame, StreamObserver, StreamStats, WindowModel
from stream4d.outputs import OutputWriter, PosedFrame

log = logging.getLogger("stream4d.pipeline")


@dataclass
class ReconstructConfig:
    """Everything a run needs, built once from the CLI or a service request."""

    backend: str = "default"  # "default" (weight-free) | "vggt"
    weights: str | None = None  # VGGT checkpoint (.pt / .safetensors / hf:facebook/VGGT-1B)
    window: int = 20  # frames per window
    overlap: int = 5  # frames shared by consecutive windows
    tail_merge: int | None = None  # a finite input ending <= this many frames after a full window ends
    # in it (pipeline.sliding_windows; None: min(overlap, window - overlap - 1)); live inputs (camera,
    # push) never wait for frames to come
    layerwise: bool = True  # LASER layer-wise scale alignment on top of Sim(3)
    resize: int | str | None = 512  # ingest resize: max side in px, "vggt", or None
    stride: int = 1
    target_fps: float | None = None
    max_frames: int | None = None
    keyframes: bool = False
    viewer: str = "none"  # "none" | "spawn" | "serve"
    rrd: bool = True  # save a rerun recording
    rrd_path: str | None = None  # where; default OUT/recording.rrd
    gaussians: bool = True  # keep the Gaussian-splat cache and write splats.ply
    max_gaussians: int = 2_000_000
    splat_max_side: int | None = 256  # the cache takes every k-th pixel to fit this (None: every pixel)
    save_depth: bool = False  # write depth/<index>.npz per posed frame
    save_frames: bool = True  # write frames/<index>.jpg (model resolution) per posed frame, for exports
    points_voxel: float = 0.0  # voxel size of points.ply in world units; 0 = from the scene's scale
    device: str | None = None  # torch device for the VGGT backend

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2 frames, got {self.window}")
        if not 1 <= self.overlap < self.window:
            raise ValueError(f"overlap must be in [1, window), got {self.overlap} with window {self.window}")
        if self.tail_merge is None:
            self.tail_merge = min(self.overlap, self.window - self.overlap - 1)
        if not 0 <= self.tail_merge < self.window - self.overlap:
            raise ValueError(f"tail_merge must be in [0, window - overlap), got {self.tail_merge} with window "
                             f"{self.window} and overlap {self.overlap}")
        if self.viewer not in ("none", "spawn", "serve"):
            raise ValueError(f"viewer must be none, spawn or serve, got {self.viewer!r}")
        if self.splat_max_side is not None and self.splat_max_side < 1:
            raise ValueError(f"splat_max_side must be >= 1 px or None (every pixel), got {self.splat_max_side}")
        if self.backend not in ("default", "vggt"):
            raise ValueError(f"backend must be default or vggt, got {self.backend!r}")


@dataclass
class RunSummary:
    out_dir: Path
    stats: StreamStats
    timings: dict[str, float]
    outputs: dict[str, Path]
    viewer_url: str | None = None
    skipped: list[dict] = field(default_factory=list)


# ---- building the stages -------------------------------------------------------------

def build_model(config: ReconstructConfig) -> WindowModel:
    if config.backend == "vggt":
        if not config.weights:
            raise ValueError("the vggt backend needs --weights (a .pt/.safetensors file or hf:facebook/VGGT-1B)")
        from memory.vggt_stream import load_vggt_backend  # the streaming cache lives in memory/

        return load_vggt_backend(config.weights, device=config.device)
    from recon.default.model import DefaultWindowModel

    return DefaultWindowModel()


def open_input(source: Any, config: ReconstructConfig):
    from recon.ingest import FrameSource, IngestOptions, open_source

    if isinstance(source, FrameSource):
        return source
    resize = "vggt" if config.backend == "vggt" else config.resize
    options = IngestOptions(stride=config.stride, target_fps=config.target_fps,
                            max_frames=config.max_frames, resize=resize, keyframes=config.keyframes)
    return open_source(source, options)


# ---- frame reading ahead -----------------------------------------------------------------

_END = object()


def read_ahead(frames: Iterator[Frame], maxsize: int, stop: threading.Event,
               prepare: Callable[[Frame], None] | None = None, workers: int = 2) -> Iterator[Frame]:
    """Decode in a background thread and ``prepare`` on ``workers`` threads; frames come out in
    order. An error (decoding or preparing) is re-raised in the consumer after the frames before it."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader():
        pending: deque = deque()  # (frame, Future of prepare or None) in stream order

        def release() -> bool:  # the oldest frame, once prepared; False when stopped
            frame, done = pending.popleft()
            if done is not None:
                done.result()
            return put(frame)

        try:
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="stream4d-prepare") as pool:
                for f in frames:
                    pending.append((f, pool.submit(prepare, f) if prepare is not None else None))
                    while len(pending) >= max(1, workers) or (pending and pending[0][1] is None):
                        if not release():
                            return
                while pending:
                    if not release():
                        return
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=reader, name="stream4d-reader", daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def sliding_windows(frames: Iterator[Frame], window: int, overlap: int,
                    tail_merge: int = 0) -> Iterator[list[Frame]]:
    """Windows of ``window`` frames, consecutive ones sharing exactly ``overlap`` (the aligner keeps
    only that much of the previous window); the stream's tail becomes one shorter last window.

    With ``tail_merge`` > 0 a full window first reads up to ``tail_merge + 1`` further frames: if
    the stream ends among them they join it (one last window of at most ``window + tail_merge``
    frames), instead of a last window that would spend a whole reconstruction mostly on frames
    already done (23 frames in windows of 20 sharing 5: frames 0-22 at once, not 0-19 and 15-22).
    """
    if not 0 <= tail_merge < window - overlap:
        raise ValueError(f"tail_merge must be in [0, {window - overlap}), got {tail_merge}")
    it = iter(frames)
    buf: list[Frame] = []
    fresh = 0  # frames in buf that no window has covered yet
    for f in it:
        buf.append(f)
        fresh += 1
        while len(buf) == window and fresh >= window - overlap:
            extra = list(islice(it, tail_merge + 1)) if tail_merge else []
            if tail_merge and len(extra) <= tail_merge:
                yield buf + extra  # the stream ended: its last frames join this window
                return
            yield list(buf)
            buf = buf[-overlap:] + extra
            fresh = len(extra)
    if fresh and len(buf) >= 2:
        yield buf


# ---- the run --------------------------------------------------------------------------

class _Sink:
    """Receives aligned windows in the alignment thread: outputs, cache, observers."""

    def __init__(self, writer: OutputWriter, config: ReconstructConfig, observers: Sequence[StreamObserver],
                 stats: StreamStats, timings: dict[str, float]):
        self.writer = writer
        self.config = config
        self.observers = list(observers)
        self.stats = stats
        self.timings = timings
        self.cache = None
        if config.gaussians:
            from memory.gaussians import GaussianCache, GaussianCacheConfig

            self.cache = GaussianCache(GaussianCacheConfig(max_gaussians=config.max_gaussians,
                                                           window_max_side=config.splat_max_side))
        self.fallback_points = _VoxelCloud()
        self.window_scales: list[float] = []
        self.started = time.perf_counter()

    def __call__(self, window: AlignedWindow) -> None:
        pred = window.prediction
        link = window.reattached
        if link is not None:  # frames written in the lost segment move into the world it was found in
            moved = self.writer.remap_segment(link.from_segment, link.to_segment, link.sim3)
            if self.cache is None:  # the cache follows on its own in add_window
                self.fallback_points.reattach(link)
            self.stats.reattachments += 1
            log.info("segment %d re-attached to segment %d (%d frames moved, %d inliers)",
                     link.from_segment, link.to_segment, moved, link.inliers)
        for k in np.nonzero(window.is_new)[0]:
            W, H = (int(v) for v in pred.input_sizes[k])
            self.writer.add_frame(PosedFrame(
                index=int(pred.frame_indices[k]), timestamp=float(pred.timestamps[k]), image=pred.sources[k],
                c2w=pred.c2w[k], K=pred.K_input(k), width=W, height=H, segment=window.segment))
            if self.config.save_depth:
                self.writer.write_depth(int(pred.frame_indices[k]), pred.depth[k], pred.depth_conf[k], pred.K[k], pred.c2w[k])
            if self.config.save_frames:
                self.writer.write_frame_image(int(pred.frame_indices[k]), pred.images[k], pred.pixel_maps[k])
        if pred.sparse is not None:
            self.writer.write_sparse(window.window_index, window.segment, pred.frame_indices, pred.sparse)
        self.stats.frames_posed += int(window.is_new.sum())
        self.stats.windows += 1
        self.stats.segment = window.segment
        self.window_scales.append(float(window.sim3_scale))
        t = time.perf_counter()
        if self.cache is not None:
            self.cache.add_window(window)
            self.stats.gaussians = len(self.cache)
        else:
            self.fallback_points.add(window)
        self.timings["cache"] = self.timings.get("cache", 0.0) + time.perf_counter() - t
        elapsed = time.perf_counter() - self.started
        self.stats.fps = self.stats.frames_processed / elapsed if elapsed > 0 else 0.0
        for obs in self.observers:
            obs.on_window(window)
            obs.on_stats(self.stats)
        if self.cache is not None and self.stats.windows % 2 == 0:
            snap = self.cache.snapshot()
            for obs in self.observers:
                obs.on_gaussians(snap)

    def finish(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        if self.cache is not None:  # written even when empty: the folder always has the same files
            from memory.gaussians import write_splats_ply

            snap = self.cache.snapshot()
            for obs in self.observers:
                obs.on_gaussians(snap)
            out["splats.ply"] = write_splats_ply(self.writer.out_dir / "splats.ply", snap)
            colors = np.clip(snap.colors * 255.0 + 0.5, 0, 255).astype(np.uint8)
            out["points.ply"] = self.writer.write_points(snap.means[~snap.is_dynamic], colors[~snap.is_dynamic])
        else:
            pts, cols = self.fallback_points.points()
            out["points.ply"] = self.writer.write_points(pts, cols)
        return out


class _VoxelCloud:
    """Confident points fused on a voxel grid (used when the Gaussian cache is off): bounded by the scene.

    Points are kept per world segment; points.ply gets the current segment's, as splats.ply does.
    """

    def __init__(self, max_points: int = 2_000_000):
        self.voxel: float | None = None
        self.max_points = max_points
        self.segment = 0
        self._pts = np.zeros((0, 3), np.float32)
        self._cols = np.zeros((0, 3), np.uint8)
        self._seg = np.zeros(0, np.int64)

    def add(self, window: AlignedWindow) -> None:
        pred = window.prediction
        self.segment = window.segment
        # Every other pixel each way: the voxel (1/250 of the median depth, ~1.7 px at 512 px and a
        # 60 degree field of view) would keep only one of each 2 x 2 block anyway.
        conf, points, images = pred.points_conf[:, ::2, ::2], pred.points[:, ::2, ::2], pred.images[:, ::2, ::2]
        keep = window.is_new[:, None, None] & (conf > np.quantile(conf, 0.5))
        pts = points[keep]
        if len(pts) == 0:
            return
        if self.voxel is None:
            self.voxel = float(np.median(pred.depth[:, ::2, ::2][keep])) / 250.0 or 1e-3
        self._pts = np.concatenate([self._pts, pts])
        self._cols = np.concatenate([self._cols, images[keep]])
        self._seg = np.concatenate([self._seg, np.full(len(pts), window.segment, np.int64)])
        cell = np.floor(self._pts / self.voxel).astype(np.int64)
        # One int64 per (segment, cell) (20 bits an axis, 4 for the segment) so the dedup is a 1-D unique.
        key = ((self._seg & 0xF) << 60) | ((cell[:, 0] & 0xFFFFF) << 40) | ((cell[:, 1] & 0xFFFFF) << 20) \
            | (cell[:, 2] & 0xFFFFF)
        _, first = np.unique(key, return_index=True)
        self._pts, self._cols, self._seg = self._pts[first], self._cols[first], self._seg[first]
        if len(self._pts) > self.max_points:
            self.voxel *= 1.5

    def reattach(self, link) -> None:
        moved = self._seg == link.from_segment
        self._pts[moved] = link.sim3.apply(self._pts[moved].astype(np.float64)).astype(np.float32)
        self._seg[moved] = link.to_segment

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        mine = self._seg == self.segment
        return self._pts[mine], self._cols[mine]


def _make_observers(config: ReconstructConfig, out_dir: Path) -> list:
    if config.viewer == "none" and not config.rrd:
        return []
    from viz import RerunObserver, VizConfig

    rrd = (Path(config.rrd_path) if config.rrd_path else out_dir / "recording.rrd") if config.rrd else None
    return [RerunObserver(VizConfig(mode=config.viewer, rrd_path=rrd))]


def reconstruct(source: Any, out_dir: str | Path, config: ReconstructConfig | None = None,
                observers: Sequence[StreamObserver] = (), stop: threading.Event | None = None,
                progress: bool = True, model: WindowModel | None = None,
                on_stats: Callable[[StreamStats], None] | None = None) -> RunSummary:
    """Reconstruct ``source`` into ``out_dir`` (see docs/output_format.md)."""
    from align import AlignConfig, AlignmentWorker, StreamAligner
    from recon.ingest import IngestError
    from recon.quality import FrameQualityFilter
    from tqdm import tqdm

    config = config or ReconstructConfig()
    out_dir = Path(out_dir)
    stop = stop or threading.Event()
    stats = StreamStats()
    timings: dict[str, float] = {}
    skipped: list[dict] = []
    t_start = time.perf_counter()

    src = open_input(source, config)
    model = model or build_model(config)
    model.reset()
    writer = OutputWriter(out_dir)
    own_observers = _make_observers(config, out_dir)
    all_observers = list(observers) + own_observers
    viewer_url = next((getattr(o, "viewer_url", None) for o in own_observers if getattr(o, "viewer_url", None)), None)
    if viewer_url:
        log.info("viewer at %s", viewer_url)
    sink = _Sink(writer, config, all_observers, stats, timings)
    # Intrinsics the input supplies (dataset folders) are trusted; otherwise the first window's win.
    known_K = getattr(src.info, "kind", "") == "dataset"
    aligner = StreamAligner(AlignConfig(window=config.window, overlap=config.overlap, layerwise=config.layerwise,
                                        new_segment_on_gap=True, fix_intrinsics=not known_K))
    quality = FrameQualityFilter()
    error: BaseException | None = None
    bar = tqdm(desc="reconstruct", unit="frame", disable=not progress, total=getattr(src.info, "frame_count", None))

    ingest_error: list[BaseException] = []
    reader_stop = threading.Event()

    def usable(frames: Iterator[Frame]) -> Iterator[Frame]:
        """Good frames only; an input that breaks mid-stream ends it, keeping what came before."""
        try:
            for f in frames:
                stats.frames_received += 1
                bar.update(1)
                reason = quality.check(f)
                if reason:
                    stats.frames_skipped += 1
                    skipped.append({"index": f.index, "source": f.source, "reason": reason})
                    continue
                stats.frames_processed += 1
                yield f
        except IngestError as exc:
            stats.errors.append(str(exc))
            ingest_error.append(exc)

    try:
        with src, AlignmentWorker(aligner, maxsize=2, on_aligned=sink) as worker:
            # Decoding and per-frame preparation run a window ahead in the reader thread.
            ahead = read_ahead(iter(src), config.window, reader_stop, getattr(model, "prepare", None))
            live = getattr(src.info, "kind", "") in ("camera", "push")
            tail_merge = 0 if live else config.tail_merge
            for frames in sliding_windows(usable(ahead), config.window, config.overlap, tail_merge):
                if stop.is_set():
                    break
                t = time.perf_counter()
                try:
                    pred = model.predict(frames)
                except Exception as exc:  # noqa: BLE001 - one bad window must not end the stream
                    msg = f"window {frames[0].index}-{frames[-1].index}: {exc}"
                    log.warning(msg)
                    stats.errors.append(msg)
                    continue
                timings["model"] = timings.get("model", 0.0) + time.perf_counter() - t
                stats.frames_dropped = getattr(src.stats, "dropped", 0)
                worker.submit(pred)
                bar.set_postfix(posed=stats.frames_posed, windows=stats.windows, gauss=stats.gaussians)
                if on_stats:
                    on_stats(stats)
        if ingest_error:
            error = ingest_error[0]
    except BaseException as exc:
        error = exc
    finally:
        reader_stop.set()
        bar.close()
        outputs = {}
        try:
            outputs = sink.finish()
        finally:
            writer.close()
            for obs in all_observers:
                obs.close()
    timings["total"] = time.perf_counter() - t_start
    stats.fps = stats.frames_received / timings["total"] if timings["total"] > 0 else 0.0
    outputs.update({"trajectory.json": out_dir / "trajectory.json", "trajectory.tum": out_dir / "trajectory.tum"})
    if config.rrd:
        outputs["recording.rrd"] = Path(config.rrd_path) if config.rrd_path else out_dir / "recording.rrd"
    run = {
        "version": __version__,
        "config": asdict(config),
        "input": str(source) if not hasattr(source, "read") else "<stream>",
        "source_info": _jsonable(getattr(src, "info", None)),
        "ingest_stats": _jsonable(getattr(src, "stats", None)),
        "stats": asdict(stats),
        "timings_s": timings,
        "skipped_frames": skipped,
        "alignment_scales": sink.window_scales,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
    }
    outputs["run.json"] = writer.write_run(run)
    if error is not None:
        raise error
    return RunSummary(out_dir, stats, timings, outputs, viewer_url, skipped)


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    try:
        d = asdict(obj)
    except TypeError:
        d = dict(vars(obj)) if hasattr(obj, "__dict__") else str(obj)
    return json.loads(json.dumps(d, default=str))
