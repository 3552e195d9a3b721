"""Keyframes by parallax: which frames of a stream the window model sees.

A video at 25-60 fps moves the camera very little between frames: windows of
consecutive frames span too little parallax to triangulate anything. The
keyframer tracks corners (pyramidal Lucas-Kanade on a small grey copy) from
the last keyframe into every new frame and starts a new keyframe when

- the motion no camera rotation explains (``recon.default.parallax.
  rotation_residual_px``: translation's parallax, focal length free) reaches
  ``min_parallax`` of the image's longest side, or
- fewer than ``min_track_share`` of the keyframe's corners are still tracked
  (the view changed too much: fast rotation, occlusion), or
- the median image motion reaches ``max_flow`` of the longest side (a pan:
  the next keyframe must still overlap this one), or
- ``max_interval_s`` seconds passed (a still camera still gets keyframes, and
  the frames held between keyframes stay bounded).

Of the frame that crosses a threshold and the one before it, the one closer to
the threshold becomes the keyframe (``KeyframeDecision.previous``): at a low
frame rate a threshold crossed early in a large step would otherwise stretch
the spacing by up to a frame. So windows hold a similar motion whatever the
frame rate. The other frames are
not dropped: the pipeline poses them against the aligned window around them
(``recon.tracking``). docs/default_backend.md has the measurements behind the
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from recon.default.parallax import ParallaxConfig, rotation_residual_px
from stream4d.geometry import centred_intrinsics

KEYFRAME_POLICIES = ("auto", "parallax", "all")
STREAM_KINDS = ("video", "camera", "push", "stream")
FOLDER_KINDS = ("images", "dataset")  # sources whose timestamps are positions unless given a frame rate


@dataclass(frozen=True)
class KeyframeConfig:
    """Which frames become keyframes (the window model's input); the others are tracked.

    policy: ``"parallax"`` (the tests above), ``"all"`` (every frame is a keyframe) or ``"auto"``:
        parallax for every source, at ``folder_parallax_share`` of ``min_parallax`` for image
        folders and datasets (``for_source``).
    min_parallax: rotation-unexplained motion since the last keyframe, as a share of the image's
        longest side, that makes a keyframe.
    folder_parallax_share: the share of ``min_parallax`` that makes a keyframe of a folder's frame
        under ``"auto"``. The photos of a collection are spaced far beyond it, so each stays a
        keyframe; frames of a video saved to a folder, or a burst, are not, and windows of them
        alone would hold too little parallax to reconstruct (docs/default_backend.md).
    min_track_share: a keyframe when fewer of the last keyframe's corners survive.
    max_flow: a keyframe when the median corner motion reaches this share of the longest side.
    max_interval_s: a keyframe at least this often (seconds of stream time).
    max_interval_frames: the same for a folder without a frame rate, whose timestamps are
        positions (``IngestOptions.image_fps`` None).
    side: longest side (px) of the grey copy the corners are tracked on.
    corners: corners detected on each keyframe.
    """

    policy: str = "auto"
    min_parallax: float = 0.006
    folder_parallax_share: float = 1 / 3
    min_track_share: float = 0.5
    max_flow: float = 0.08
    max_interval_s: float = 2.0
    max_interval_frames: int = 20
    side: int = 320
    corners: int = 300

    def __post_init__(self) -> None:
        if self.policy not in KEYFRAME_POLICIES:
            raise ValueError(f"keyframes.policy must be one of {KEYFRAME_POLICIES}, got {self.policy!r}")
        for name in ("min_parallax", "folder_parallax_share", "min_track_share", "max_flow"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"keyframes.{name} must be a number in (0, 1], got {value!r}")
        if not isinstance(self.max_interval_s, (int, float)) or self.max_interval_s <= 0:
            raise ValueError(f"keyframes.max_interval_s must be > 0 seconds, got {self.max_interval_s!r}")
        if not isinstance(self.max_interval_frames, int) or self.max_interval_frames < 1:
            raise ValueError(f"keyframes.max_interval_frames must be an integer >= 1, got {self.max_interval_frames!r}")
        if not isinstance(self.side, int) or self.side < 64:
            raise ValueError(f"keyframes.side must be an integer >= 64, got {self.side!r}")
        if not isinstance(self.corners, int) or self.corners < 20:
            raise ValueError(f"keyframes.corners must be an integer >= 20, got {self.corners!r}")

    def for_source(self, kind: str, fps: float | None) -> KeyframeConfig | None:
        """The keyframer's config for a source (``SourceInfo.kind`` and ``.fps``), or None when every
        frame is a keyframe (``"all"``, or ``"auto"`` for a source of another kind). A folder's frames
        (``FOLDER_KINDS``) take ``folder_parallax_share`` of ``min_parallax`` under ``"auto"``, and
        without a frame rate their interval counts positions."""
        if self.policy == "all" or (self.policy == "auto" and kind not in STREAM_KINDS + FOLDER_KINDS):
            return None
        if kind not in FOLDER_KINDS:
            return self
        config = self
        if self.policy == "auto":
            config = replace(config, min_parallax=self.min_parallax * self.folder_parallax_share)
        if fps is None:
            config = replace(config, max_interval_s=float(self.max_interval_frames))
        return config


@dataclass
class KeyframeDecision:
    keyframe: bool
    reason: str  # "first", "parallax", "tracks", "flow", "interval" or "" (not a keyframe)
    parallax: float = 0.0  # rotation-unexplained motion, share of the longest side
    track_share: float = 1.0
    flow: float = 0.0  # median motion, share of the longest side
    progress: float = 0.0  # the largest of the three measures over its threshold (>= 1: a keyframe)
    # The frame before this one is the keyframe instead (it was closer to the thresholds), for
    # ``previous_reason``; this frame was measured again from it (``keyframe`` says whether it is one too).
    previous: bool = False
    previous_reason: str = ""


_LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


class ParallaxKeyframer:
    """Decides frame by frame, in stream order, whether a frame is a keyframe (see the module doc)."""

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._parallax_cfg = ParallaxConfig(max_matches=150)
        self.reset()

    def reset(self) -> None:
        self._grey: np.ndarray | None = None  # uint8 [h, w] of the last keyframe
        self._corners: np.ndarray | None = None  # float32 [N, 1, 2] on it
        self._time = 0.0
        self._previous = None  # (grey, timestamp, decision) of the last frame that was not a keyframe

    def decide(self, image: np.ndarray, timestamp: float) -> KeyframeDecision:
        """Whether ``image`` (uint8 RGB [H, W, 3]) at ``timestamp`` (s) is a keyframe; remembered if so."""
        cfg = self.config
        grey = self._small_grey(image)
        if self._grey is None or grey.shape != self._grey.shape:
            return self._take(grey, timestamp, KeyframeDecision(True, "first"))
        if abs(timestamp - self._time) >= cfg.max_interval_s:  # a reordered folder's positions go back too
            return self._take(grey, timestamp, KeyframeDecision(True, "interval"))
        d = self._judge(self._measure(grey))
        prev = self._previous
        if d.keyframe and prev is not None and 1.0 - prev[2].progress < d.progress - 1.0:
            self._take(prev[0], prev[1], prev[2])  # the previous frame is the closer keyframe
            reason = d.reason
            d = self._judge(self._measure(grey))
            d.previous, d.previous_reason = True, reason
        if d.keyframe:
            return self._take(grey, timestamp, d)
        self._previous = (grey, timestamp, d)
        return d

    def skip(self) -> None:
        """A frame passed without a decision (never a keyframe): the next frame's is not weighed
        against the one before it, which was not this one."""
        self._previous = None

    def _judge(self, d: KeyframeDecision) -> KeyframeDecision:
        cfg = self.config
        scores = {"tracks": (1.0 - d.track_share) / (1.0 - cfg.min_track_share) if cfg.min_track_share < 1 else 0.0,
                  "flow": d.flow / cfg.max_flow, "parallax": d.parallax / cfg.min_parallax}
        reason = max(scores, key=scores.get)
        d.progress = scores[reason]
        if d.progress >= 1.0:
            d.keyframe, d.reason = True, reason
        return d

    def _measure(self, grey: np.ndarray) -> KeyframeDecision:
        side = max(grey.shape)
        p0 = self._corners
        if p0 is None or len(p0) < 8:
            return KeyframeDecision(False, "", track_share=0.0)
        p1, status, _ = cv2.calcOpticalFlowPyrLK(self._grey, grey, p0, None, **_LK)
        ok = status.ravel().astype(bool)
        share = float(ok.sum()) / len(p0)
        if ok.sum() < 8:
            return KeyframeDecision(False, "", track_share=share)
        a, b = p0[ok, 0].astype(np.float64), p1[ok, 0].astype(np.float64)
        flow = float(np.median(np.linalg.norm(b - a, axis=1))) / side
        parallax = 0.0
        # What rotation does not explain is at most about the motion itself: below half the threshold
        # the fit (the keyframer's main cost) cannot matter, nor below a quarter pixel.
        if flow >= 0.5 * self.config.min_parallax and flow * side > 0.25:
            h, w = grey.shape
            # A 60 degree field of view as the prior; the fit frees the focal length.
            K = centred_intrinsics(w, h, 0.87 * w)
            parallax = rotation_residual_px(a, b, K, fit_focal=True, config=self._parallax_cfg) / side
        return KeyframeDecision(False, "", parallax, share, flow)

    def _take(self, grey: np.ndarray, timestamp: float, decision: KeyframeDecision) -> KeyframeDecision:
        self._previous = None
        self._grey = grey
        self._time = timestamp
        self._corners = cv2.goodFeaturesToTrack(grey, self.config.corners, 0.01, max(4, max(grey.shape) // 40))
        return decision

    def _small_grey(self, image: np.ndarray) -> np.ndarray:
        H, W = image.shape[:2]
        s = min(1.0, self.config.side / max(H, W))
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if s < 1.0:
            g = cv2.resize(g, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
        return g
