"""One configuration tree for a run: the stage configs nested, each default stated once, in its stage.

``run.json`` records the whole tree under ``"config"`` (``ReconstructConfig.to_dict``) and
``ReconstructConfig.from_dict`` / ``load_config`` read it back, so a run can be repeated
exactly (``stream4d reconstruct INPUT --config run.json --out DIR``).
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from align.config import AlignConfig
from align.windows import default_tail_merge
from memory.gaussians.config import GaussianCacheConfig
from recon.default.model import DefaultModelConfig
from recon.ingest.options import IngestOptions
from recon.keyframes import KeyframeConfig
from recon.tracked_depth import TrackedDepthConfig
from stream4d.pipeline.final_ba import MAX_OBSERVATIONS as FINAL_BA_MAX_OBSERVATIONS
from stream4d.pipeline.resolve_tracked import OBSERVATIONS_IN_ADJUSTMENT as FINAL_BA_TRACKED_OBSERVATIONS
from viz.config import VizConfig

BACKENDS = ("default", "vggt")
RUN_RESIZE = 512  # a run's ingest resize (longest side, px); IngestOptions alone keeps the input size


def _run_ingest() -> IngestOptions:
    return IngestOptions(resize=RUN_RESIZE)


LIVE_TRACKING = ("auto", "on", "off")


@dataclass
class LiveConfig:
    """Live tracking (stream4d/pipeline/live.py): every frame posed as it arrives against the newest
    aligned window, before the window around it is reconstructed.

    tracking: ``"auto"`` (live sources: cameras, RTSP/HTTP streams, WebSocket push), ``"on"`` or ``"off"``.
    map_queue: keyframes that may wait for the window model while tracking goes on (then tracking
        waits too, and a live source drops its oldest frames).
    repose_points: points of each keyframe followed when a live run's frames between keyframes are
        posed again in their aligned window (files: ``recon.tracking.TrackingConfig.max_points``);
        fewer leave the CPU to tracking.
    mapping_nice: a live run's mapping threads (window model, preparation, alignment) run this much
        nicer than tracking (Linux thread priorities; 0: the same), so that on a busy machine frames
        are dropped only when tracking itself cannot keep up.
    first_window: keyframes in a live stream's first window (0: ``align.window``), so that tracking
        has a map a few keyframes into the stream rather than a whole window in; later windows have
        ``align.window``. At most ``align.overlap`` + 1 is useless, so such values mean ``align.window``.
    bootstrap: before the first window's map, a two-view map from the stream's first frames
        (recon/live_bootstrap.py) that tracking poses frames on, provisionally, once they have parallax.
    keyframe_queue: frames tracked live that may wait for the keyframer, the quality check and the
        holding of frames between keyframes, which then run on a thread of their own (when it is
        full, tracking waits and a live source drops its oldest frames); 0: they run on the
        tracking thread, after each frame's live pose.
    model_process: a live run's default window model runs in a process of its own
        (stream4d/pipeline/model_process.py), on spare cores only (``SCHED_IDLE``) until the input
        ends, so that tracking neither waits for its GIL nor for a core it holds; False: on a
        thread of the run's process.
    keyframer_lag_s: with ``keyframe_queue``, once frames reach the keyframer this long (s) after
        their arrival, it judges only every third frame (the others are held as frames between
        keyframes) until it has caught up: run.json ``keyframes.unjudged`` counts them.
    """

    tracking: str = "auto"
    map_queue: int = 256
    repose_points: int = 300
    mapping_nice: int = 10
    first_window: int = 8
    bootstrap: bool = True
    keyframe_queue: int = 64
    keyframer_lag_s: float = 0.5
    model_process: bool = True

    def first_window_for(self, align) -> int | None:
        """The first window's size for ``align`` (an AlignConfig), None when it is ``align.window``."""
        if self.first_window and align.overlap + 1 < self.first_window < align.window:
            return self.first_window
        return None

    def __post_init__(self) -> None:
        if self.tracking not in LIVE_TRACKING:
            raise ValueError(f"live.tracking must be one of {LIVE_TRACKING}, got {self.tracking!r}")
        if not isinstance(self.map_queue, int) or self.map_queue < 1:
            raise ValueError(f"live.map_queue must be an integer >= 1, got {self.map_queue!r}")
        if not isinstance(self.repose_points, int) or self.repose_points < 20:
            raise ValueError(f"live.repose_points must be an integer >= 20, got {self.repose_points!r}")
        if not isinstance(self.mapping_nice, int) or not 0 <= self.mapping_nice <= 19:
            raise ValueError(f"live.mapping_nice must be an integer in [0, 19], got {self.mapping_nice!r}")
        if not isinstance(self.keyframe_queue, int) or self.keyframe_queue < 0:
            raise ValueError(f"live.keyframe_queue must be an integer >= 0, got {self.keyframe_queue!r}")
        if not isinstance(self.keyframer_lag_s, (int, float)) or self.keyframer_lag_s < 0:
            raise ValueError(f"live.keyframer_lag_s must be a number of seconds >= 0, got {self.keyframer_lag_s!r}")
        if not isinstance(self.first_window, int) or self.first_window < 0:
            raise ValueError(f"live.first_window must be an integer >= 0, got {self.first_window!r}")
        if not isinstance(self.model_process, bool):
            raise ValueError(f"live.model_process must be true or false, got {self.model_process!r}")
        if not isinstance(self.bootstrap, bool):
            raise ValueError(f"live.bootstrap must be true or false, got {self.bootstrap!r}")


@dataclass
class ReconstructConfig:
    """Everything a run needs, built once from the CLI, a service request or a run.json.

    backend: ``"default"`` (weight-free) or ``"vggt"`` (needs ``weights``; its ingest resize is
        always ``"vggt"``, VGGT's own crop preprocessing).
    weights: VGGT checkpoint (.pt / .safetensors / hf:facebook/VGGT-1B).
    device: torch device of the VGGT backend (None: CUDA when present).
    tail_merge: a finite input ending at most this many frames after a full window ends in it
        (``sliding_windows``; None: ``min(overlap, window - overlap - 1)``); live inputs (camera,
        push) never wait for frames to come.
    gaussians: keep the Gaussian-splat cache (``cache``) and write splats.ply.
    rrd: save a rerun recording, at ``viz.rrd_path`` or else OUT/recording.rrd.
    save_depth: write depth/<index>.npz per posed frame.
    save_frames: write frames/<index>.jpg (the model-resolution image) per posed frame, which the
        COLMAP and nerfstudio exports need.
    map_from: a saved map folder (``save_map`` of an earlier run) the stream starts in: it is
        relocalised into the map's world and extends it (stream4d/pipeline/maps.py).
    save_map: write a map folder here at the end (with ``map_from``, the union of both once the
        stream was relocalised).
    final_ba: after a finite input ends, one bundle adjustment (pycolmap, the ``ba`` extra) of every
        keyframe and sparse track of the final segment; every output follows the adjusted poses
        (stream4d/pipeline/final_ba.py). Live inputs ignore it. None (the default): on for a finite
        input when pycolmap is installed and the run does not start in a saved map (whose world the
        adjustment does not see; a map the run saves follows the adjustment); otherwise run.json's
        ``final_ba.skipped`` says why not. True: asked for (an error up front without pycolmap);
        False: off.
    final_ba_max_observations: the final adjustment's budget (time and memory grow with the
        observations it holds): beyond it the loops' matches and each keyframe's 50 longest tracks are
        held, then the longest tracks; run.json ``final_ba.budget`` says how many. Points left out
        follow their window.
    final_ba_tracked_observations: how many of each tracked frame's observations (those its tracking
        kept) join the final adjustment, so that the points are solved from the tracked frames'
        viewpoints too; every frame is then solved again on all of its own. 0: the tracked frames stay
        out of the adjustment and are only solved again after it. Within ``final_ba_max_observations``.
    final_ba_lens: whether the final adjustment may estimate the lens' radial distortion (one
        coefficient, kept when it bends the image corner by 1.5 px or more: run.json ``final_ba.lens``).
        False: the cameras stay pinholes (images known to be undistorted).

    Stage configs: ``ingest`` (frame selection and resize), ``keyframes`` (which frames the window
        model sees, by parallax; the others are tracked: recon/keyframes.py), ``tracked_depth`` (the
        tracked frames' depth maps, projected from their keyframes' depth: recon/tracked_depth.py), ``live`` (tracking each frame as
        it arrives), ``model`` (the default backend's
    knobs), ``align`` (windowing: ``align.window`` frames per window sharing ``align.overlap``;
    Sim(3) and layer-wise alignment), ``cache`` (the splat cache), ``viz`` (viewer mode and
    logging). Two alignment settings are the run's, not the config's: ``new_segment_on_gap`` is
    always on (a window the model fails leaves a gap), and ``fix_intrinsics`` is off for dataset
    folders, whose intrinsics are trusted.
    """

    backend: str = "default"
    weights: str | None = None
    device: str | None = None
    tail_merge: int | None = None
    gaussians: bool = True
    rrd: bool = True
    save_depth: bool = False
    save_frames: bool = True
    map_from: str | None = None
    save_map: str | None = None
    final_ba: bool | None = None
    final_ba_max_observations: int = FINAL_BA_MAX_OBSERVATIONS
    final_ba_tracked_observations: int = FINAL_BA_TRACKED_OBSERVATIONS
    final_ba_lens: bool = True
    ingest: IngestOptions = field(default_factory=_run_ingest)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    tracked_depth: TrackedDepthConfig = field(default_factory=TrackedDepthConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    model: DefaultModelConfig = field(default_factory=DefaultModelConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    cache: GaussianCacheConfig = field(default_factory=GaussianCacheConfig)
    viz: VizConfig = field(default_factory=VizConfig)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be default or vggt, got {self.backend!r}")
        if self.backend == "vggt" and self.ingest.resize != "vggt":
            self.ingest = replace(self.ingest, resize="vggt")
        window, overlap = self.align.window, self.align.overlap
        if self.tail_merge is None:
            self.tail_merge = default_tail_merge(window, overlap)
        if not 0 <= self.tail_merge < window - overlap:
            raise ValueError(f"tail_merge must be in [0, window - overlap), got {self.tail_merge} with window "
                             f"{window} and overlap {overlap}")
        if not isinstance(self.final_ba_max_observations, int) or self.final_ba_max_observations < 1000:
            raise ValueError(f"final_ba_max_observations must be an integer of at least 1000, got "
                             f"{self.final_ba_max_observations!r}")
        if not isinstance(self.final_ba_lens, bool):
            raise ValueError(f"final_ba_lens must be true or false, got {self.final_ba_lens!r}")
        if not isinstance(self.final_ba_tracked_observations, int) or self.final_ba_tracked_observations < 0:
            raise ValueError(f"final_ba_tracked_observations must be an integer of at least 0, got "
                             f"{self.final_ba_tracked_observations!r}")

    # ---- the tree as plain data ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole tree as JSON-ready nested dicts (what run.json records under ``"config"``)."""
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReconstructConfig:
        """The tree from nested dicts; absent keys take their defaults, unknown keys are an error."""
        return _build(cls, data, "config")

    def override(self, values: dict[str, Any]) -> ReconstructConfig:
        """A copy with dotted keys set, e.g. ``{"align.window": 8, "ingest.max_frames": 24}``.

        ``tail_merge`` follows a new window or overlap unless it is set itself or was not the
        automatic value of the old windowing.
        """
        tree = self.to_dict()
        windowing = {"align.window", "align.overlap"} & values.keys()
        if windowing and "tail_merge" not in values and \
                self.tail_merge == default_tail_merge(self.align.window, self.align.overlap):
            tree["tail_merge"] = None
        for key, value in values.items():
            *parents, leaf = key.split(".")
            node = tree
            for name in parents:
                if not isinstance(node.get(name), dict):
                    raise ValueError(f"unknown config key {key!r}")
                node = node[name]
            if leaf not in node:
                raise ValueError(f"unknown config key {key!r}")
            node[leaf] = str(value) if isinstance(value, Path) else value
        return self.from_dict(tree)


def load_config(path: str | Path) -> ReconstructConfig:
    """The tree in a JSON file: a run.json (its ``"config"``) or the tree itself."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the config {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "format_version" in data:
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a JSON object (the tree, or a run.json with a \"config\")")
    return ReconstructConfig.from_dict(data)


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` with nested dataclasses built from their dicts and JSON lists back to tuples."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) in {where}: {', '.join(unknown)}")
    defaults = {f.name: f.default_factory for f in fields(cls) if f.default_factory is not MISSING}
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if is_dataclass(hint) and isinstance(hint, type):
            default = defaults[name]() if name in defaults else None
            if isinstance(value, dict) and default is not None and default != hint():
                # A section given in part keeps its field's default for the rest (a run's ingest resizes
                # to RUN_RESIZE, which IngestOptions alone does not), not the section class's own.
                value = {**asdict(default), **value}
            value = _build(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None
