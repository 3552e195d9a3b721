"""VGGT as a :class:`stream4d.contracts.WindowModel`.

Two modes:

- windowed (``streaming=False``): every ``predict`` is one independent VGGT
  forward over the window; the window's frame is its first camera.
- streaming (default, StreamVGGT-style): frames go through the network once,
  in stream order, attending causally to everything cached from earlier
  windows. All windows share one frame (the stream's first camera) and one
  scale. Frames a window shares with the previous one (overlap) are not run
  again: their earlier prediction is returned.

Memory in streaming mode is whatever the KV caches keep: the default
``UnboundedKVCache`` grows with the stream; ``stream4d.pipeline.vggt_stream.load_vggt_backend``
wires the bounded InfiniteVGGT cache in.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from recon.vggt.layers.kv import KVCacheProtocol, UnboundedKVCache
from recon.vggt.models.config import VGGTConfig
from recon.vggt.models.streaming import StreamState
from recon.vggt.models.vggt import VGGT
from recon.vggt.utils.checkpoint import load_vggt
from recon.vggt.utils.geometry import centred_intrinsics, extrinsics_to_c2w
from recon.vggt.utils.pose_encoding import encoding_to_extrinsics_intrinsics
from recon.vggt.utils.preprocess import crop_preprocess, to_model_input
from stream4d.contracts import Frame, WindowPrediction
from stream4d.geometry import unproject_depth

CacheFactory = Callable[[VGGT], KVCacheProtocol]
_PER_FRAME = ("images", "depth", "depth_conf", "c2w", "K", "points", "points_conf", "pixel_maps")
# Fields of view (radians) are clamped into this range so K stays finite: the head's ReLU can
# output 0 (an untrained or confused network), which would make the focal length infinite.
FOV_RANGE = (1e-3, np.pi - 1e-3)


@dataclass(frozen=True)
class VGGTBackendConfig:
    """How the backend runs the network.

    image_width: crop-mode width (VGGT: 518); the height follows the aspect ratio, rounded to
        the patch grid, centre-cropped to at most ``image_width``.
    streaming: causal streaming with KV caches (see the module docstring) instead of
        independent windows.
    points_source: ``"point_head"`` (VGGT's point map) or ``"depth"`` (depth unprojected with
        the predicted camera, which VGGT's authors find slightly more accurate).
    cuda_dtype: autocast precision of the aggregator on CUDA (heads stay fp32); CPU runs fp32.
    """

    image_width: int = 518
    streaming: bool = True
    points_source: str = "point_head"
    cuda_dtype: torch.dtype = torch.bfloat16

    def __post_init__(self) -> None:
        if self.points_source not in ("point_head", "depth"):
            raise ValueError(f"points_source must be 'point_head' or 'depth', got {self.points_source!r}")


def _unbounded(_: VGGT) -> KVCacheProtocol:
    return UnboundedKVCache()


class VGGTBackend:
    """Window model running a loaded :class:`VGGT` network.

    ``kv_cache_factory`` / ``camera_cache_factory`` build the caches of the
    aggregator's global layers and of the camera trunk from the model
    (default: unbounded).
    """

    name = "vggt"

    def __init__(self, model: VGGT, device: str | torch.device | None = None,
                 config: VGGTBackendConfig = VGGTBackendConfig(), kv_cache_factory: CacheFactory = _unbounded,
                 camera_cache_factory: CacheFactory = _unbounded) -> None:
        if model.depth_head is None or model.camera_head is None:
            raise ValueError("the VGGT backend needs the depth and camera heads enabled")
        if config.points_source == "point_head" and model.point_head is None:
            raise ValueError("points_source='point_head' needs the point head enabled")
        if config.image_width % model.config.patch_size:
            raise ValueError(f"image_width {config.image_width} is not a multiple of the patch size "
                             f"{model.config.patch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = config
        self.state = StreamState(kv_cache_factory(model), camera_cache_factory(model))
        self._recent: dict[int, dict] = {}  # frame index -> outputs, for the previous window's frames
        self._last_index: int | None = None

    def reset(self) -> None:
        self.state.reset()
        self._recent.clear()
        self._last_index = None

    def _preprocess(self, frames: Sequence[Frame]) -> tuple[np.ndarray, np.ndarray]:
        images, maps = [], []
        for f in frames:
            image, affine = crop_preprocess(f.image, self.config.image_width, self.model.config.patch_size)
            images.append(image)
            maps.append(affine @ f.pixel_map)
        sizes = {im.shape[:2] for im in images}
        if len(sizes) > 1:
            listing = ", ".join(f"{f.source}: {f.size[0]}x{f.size[1]}" for f in frames)
            raise ValueError(f"VGGT needs one model resolution per window, but these frames crop to "
                             f"{sorted(sizes)} (H, W): {listing}")
        return np.stack(images), np.stack(maps)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.config.cuda_dtype)
        return contextlib.nullcontext()

    def _run(self, images: np.ndarray, maps: np.ndarray, stream: StreamState | None) -> list[dict]:
        """Per-frame outputs for preprocessed frames ``uint8 [S, h, w, 3]``."""
        h, w = images.shape[1:3]
        with torch.inference_mode(), self._autocast():
            out = self.model(to_model_input(images).to(self.device), stream=stream)
        enc = out["pose_enc"][0].float().cpu()
        fov = enc[:, 7:9]
        clamped = ((fov < FOV_RANGE[0]) | (fov > FOV_RANGE[1])).any(dim=1).tolist()
        enc = torch.cat([enc[:, :7], fov.clamp(*FOV_RANGE)], dim=1)
        extrinsics, K = encoding_to_extrinsics_intrinsics(enc, (h, w))
        c2w = extrinsics_to_c2w(extrinsics.double().numpy())
        K = centred_intrinsics(K.double().numpy(), w, h)
        depth = out["depth"][0, ..., 0].float().cpu().numpy()
        depth_conf = out["depth_conf"][0].float().cpu().numpy()
        results = []
        for s in range(len(images)):
            if self.config.points_source == "depth":
                points = unproject_depth(depth[s].astype(np.float64), K[s], c2w[s]).astype(np.float32)
                points_conf = depth_conf[s]
            else:
                points = out["world_points"][0, s].float().cpu().numpy()
                points_conf = out["world_points_conf"][0, s].float().cpu().numpy()
            results.append(dict(images=images[s], depth=depth[s], depth_conf=depth_conf[s], c2w=c2w[s], K=K[s],
                                points=points, points_conf=points_conf, pixel_maps=maps[s], fov_clamped=clamped[s]))
        return results

    def _streamed(self, frames: Sequence[Frame], images: np.ndarray, maps: np.ndarray) -> tuple[list[dict], int]:
        """Outputs in ``frames`` order; new frames are streamed, overlap frames come from the last window."""
        new = [i for i, f in enumerate(frames) if self._last_index is None or f.index > self._last_index]
        old = [i for i in range(len(frames)) if i not in new]
        lost = [frames[i].index for i in old if frames[i].index not in self._recent]
        if lost:
            raise ValueError(f"frames {lost} were streamed before but are not part of the previous window; "
                             f"a streaming window may only repeat frames of the window just before it")
        indices = [frames[i].index for i in new]
        if any(b <= a for a, b in zip(indices, indices[1:])):
            raise ValueError(f"new frames must arrive in increasing Frame.index order, got {indices}")
        fresh = self._run(images[new], maps[new], self.state) if new else []
        by_position = dict(zip(new, fresh))
        results = [by_position[i] if i in by_position else self._recent[frames[i].index] for i in range(len(frames))]
        self._recent = {f.index: r for f, r in zip(frames, results)}
        if indices:
            self._last_index = indices[-1]
        return results, len(new)

    def predict(self, frames: Sequence[Frame]) -> WindowPrediction:
        """Predict depth, cameras and point maps for ``frames`` (see the module docstring for the modes)."""
        if len(frames) == 0:
            raise ValueError("VGGTBackend.predict needs at least one frame, got none")
        start = time.perf_counter()
        images, maps = self._preprocess(frames)
        if self.config.streaming:
            results, num_new = self._streamed(frames, images, maps)
        else:
            results, num_new = self._run(images, maps, None), len(frames)
        arrays = {name: np.stack([r[name] for r in results]) for name in _PER_FRAME}
        info = {"seconds": time.perf_counter() - start, "streaming": self.config.streaming, "new_frames": num_new,
                "frames_streamed": self.state.frames_seen, "device": str(self.device),
                "fov_clamped_frames": sum(bool(r["fov_clamped"]) for r in results)}
        summary = getattr(self.state.kv_cache, "summary", None)
        if self.config.streaming and callable(summary):
            info["kv_cache"] = summary()
        return WindowPrediction(
            frame_indices=np.array([f.index for f in frames], dtype=np.int64),
            timestamps=np.array([f.timestamp for f in frames], dtype=np.float64),
            sources=tuple(f.source for f in frames),
            images=arrays["images"],
            depth=arrays["depth"].astype(np.float32),
            depth_conf=arrays["depth_conf"].astype(np.float32),
            c2w=arrays["c2w"].astype(np.float64),
            K=arrays["K"].astype(np.float64),
            points=arrays["points"].astype(np.float32),
            points_conf=arrays["points_conf"].astype(np.float32),
            pixel_maps=arrays["pixel_maps"].astype(np.float64),
            input_sizes=np.array([f.input_size for f in frames], dtype=np.int64),
            backend=self.name,
            info=info,
        )


def build_vggt_backend(weights: str | Path, device: str | torch.device | None = None, streaming: bool = True, *,
                       model_config: VGGTConfig | None = None, kv_cache_factory: CacheFactory = _unbounded,
                       camera_cache_factory: CacheFactory = _unbounded, **backend_options) -> VGGTBackend:
    """Load ``weights`` (path or ``hf:facebook/VGGT-1B``) into a VGGT network and wrap it.

    ``model_config`` defaults to VGGT-1B without the track head (the backend never
    tracks; its checkpoint keys are skipped explicitly). ``backend_options`` are
    :class:`VGGTBackendConfig` fields. Raises ``CheckpointError`` for a bad checkpoint.
    """
    config = model_config or VGGTConfig(enable_track=False)
    model = load_vggt(weights, config)
    options = VGGTBackendConfig(streaming=streaming, **backend_options)
    return VGGTBackend(model, device, options, kv_cache_factory, camera_cache_factory)
