"""Pydantic models for every request and response of the service (and its messages)."""

from __future__ import annotations

import math
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SESSION_ID_PATTERN = r"^[0-9a-f]{32}$"


class SessionOptions(BaseModel):
    """How a session's stream is reconstructed. Every field has a default.

    Strict types: ``{"viewer": 0}`` or ``{"overlap": true}`` are refused, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    backend: Literal["default", "vggt"] = Field(
        "default", description='"default" (weight-free) or "vggt" (needs weights configured on the server)')
    window: int = Field(20, ge=2, le=128, description="frames per window")
    overlap: int = Field(5, ge=1, le=127, description="frames shared by consecutive windows (< window)")
    target_fps: float | None = Field(
        None, gt=0, le=240, description="subsample the input to this frame rate (None: every frame)")
    resolution: int = Field(512, ge=64, le=4096, description="longest image side the model sees, in pixels")
    stride: int = Field(1, ge=1, le=1000, description="keep every stride-th frame")
    max_frames: int | None = Field(None, ge=2, le=1_000_000, description="stop after this many frames")
    keyframes: Literal["auto", "parallax", "all"] = Field(
        "auto", description='which frames the window model sees: "parallax" (a new keyframe once the camera has '
                            'moved enough; every other frame is tracked), "all", or "auto" (parallax for videos '
                            'and live streams)')
    min_parallax: float | None = Field(
        None, gt=0, le=1, description="rotation-unexplained motion since the last keyframe, as a share of the "
                                      "image's longest side, that makes a keyframe (None: the pipeline's default)")
    intrinsics: list[float] | None = Field(
        None, min_length=4, max_length=4,
        description="fx, fy, cx, cy in pixels of the input's frames, for an input that lists none: its frames are "
                    "posed with them instead of self-calibrating (all frames must have the first one's size)")
    fov_deg: float | None = Field(
        None, ge=1, le=179, description="the camera's field of view in degrees across the frames' longest side "
                                        "(principal point at the centre), for an input that lists no intrinsics")
    metadata_focal: bool = Field(
        True, description="start self-calibration from the focal length the upload's metadata states (an iPhone "
                          "video's QuickTime tag) and keep it as a prior the windows refine; false ignores it (a "
                          "video cropped or zoomed after capture)")
    drop_duplicates: bool = Field(False, description="drop near-duplicate frames before anything else; "
                                                     "dropped frames get no pose")
    gaussians: bool = Field(True, description="keep the Gaussian-splat cache and write splats.ply")
    final_ba: bool | None = Field(
        None, description="after an upload or a pulled file ends, one bundle adjustment of every keyframe and "
                          "track, the outputs and the saved map following it. None: done when the server has "
                          "pycolmap and the session does not start in a saved map (run.json final_ba.skipped says "
                          "why not); true: asked for (400 unless the server has pycolmap); false: off. Live "
                          "streams ignore it")
    viewer: bool = Field(True, description="serve a live rerun web viewer for this session (when the server "
                                           "has viewers enabled: stream4d serve --viewer serve)")
    map_from: str | None = Field(
        None, pattern=SESSION_ID_PATTERN,
        description="start from the saved map of this earlier, ended session: the stream is relocalised in "
                    "its world and extends it. The request must carry that session's token (Authorization: "
                    "Bearer <token>), the proof that both sessions belong to the same client")

    chunks: int | None = Field(
        None, ge=2, le=64,
        description="an upload only: reconstruct the video as this many overlapping chunks, run in parallel on "
                    "the Ray runner's nodes (one after another with the local runner), then joined into one "
                    "world. Needs every frame: 400 with stride, target_fps, max_frames, drop_duplicates, "
                    "final_ba true or map_from; 400 at the upload when the video is too short for the chunks")
    chunk_overlap: int = Field(16, ge=3, le=10_000, description="frames shared by consecutive chunks (with chunks)")
    chunk_anchor_stride: int | None = Field(
        10, ge=2, le=10_000,
        description="with chunks: one more run reconstructs every n-th frame of the whole video and ties every "
                    "chunk to its world; None: chunks are tied by their overlaps alone (less accurate)")

    @model_validator(mode="after")
    def _overlap_below_window(self) -> "SessionOptions":
        if self.overlap >= self.window:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than window ({self.window})")
        if self.intrinsics is not None and self.fov_deg is not None:
            raise ValueError("give intrinsics or fov_deg, not both")
        if self.intrinsics is not None and (min(self.intrinsics[:2]) <= 0 or not all(map(math.isfinite, self.intrinsics))):
            raise ValueError("intrinsics must be four finite numbers with fx, fy > 0")
        return self


class SessionKind(str, Enum):
    none = ""  # no input yet
    upload = "upload"
    live = "live"
    pull = "pull"


class SessionState(str, Enum):
    created = "created"
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class SessionLinks(BaseModel):
    status: str
    upload: str
    live: str
    source: str
    stop: str
    events: str
    results: str


class SessionCreated(BaseModel):
    id: str = Field(description="session id (32 hex digits)")
    token: str = Field(description="bearer token for every call on this session; shown only once")
    state: SessionState
    options: SessionOptions
    links: SessionLinks


class Progress(BaseModel):
    """The pipeline's running counters (StreamStats) as of its last window."""

    frames_received: int = 0
    frames_processed: int = 0
    frames_posed: int = 0
    frames_skipped: int = 0
    frames_dropped: int = 0
    windows: int = 0
    fps: float = 0.0
    gaussians: int = 0
    segment: int = 0
    reattachments: int = Field(default=0, description="lost world segments found again in an earlier world")
    frames_posed_live: int = Field(default=0, description="frames posed by live tracking as they arrived")
    latency_p50_s: float = Field(default=0.0, description="arrival to first pose reaching observers, median, s")
    latency_p95_s: float = Field(default=0.0, description="arrival to first pose, 95th percentile, s")
    errors: list[str] = Field(default_factory=list)


class LiveCounters(BaseModel):
    """What happened to the frames a live client sent."""

    received: int = 0  # messages carrying a frame
    accepted: int = 0  # decoded and queued for the pipeline
    dropped: int = 0  # queued but dropped (oldest first) because the pipeline fell behind
    invalid: int = 0  # malformed messages / undecodable images
    pending: int = 0  # queued, not yet taken by the pipeline (at most the server's live queue size)
    connected: bool = False


class VideoProbeInfo(BaseModel):
    container: str
    codec: str
    width: int
    height: int
    frames: int
    declared_frames: int
    fps: float | None
    duration_s: float | None


class UploadInfo(BaseModel):
    bytes: int
    filename: str | None
    probe: VideoProbeInfo


class SessionStatus(BaseModel):
    id: str
    kind: SessionKind
    state: SessionState
    options: SessionOptions
    source: str | None = Field(None, description="pulled URL / device, or the stored upload's name")
    upload: UploadInfo | None = None
    progress: Progress
    live: LiveCounters | None = None
    error: str | None = Field(None, description="why the session failed")
    notes: list[str] = Field(default_factory=list, description="restarts, early stops, warnings")
    viewer_url: str | None = None
    attempts: int = 0
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None


class UploadAccepted(BaseModel):
    id: str
    state: SessionState
    bytes: int
    filename: str | None
    probe: VideoProbeInfo


class PullRequest(BaseModel):
    """A stream for the server to read: rtsp(s)://, http(s)://, or camera:N (a device on the server)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=1, max_length=2048, examples=["rtsp://camera.local:554/stream", "camera:0"])


class ResultName(str, Enum):
    trajectory_json = "trajectory.json"
    trajectory_tum = "trajectory.tum"
    points_ply = "points.ply"
    splats_ply = "splats.ply"
    recording_rrd = "recording.rrd"
    run_json = "run.json"


class ResultFile(BaseModel):
    name: ResultName
    bytes: int
    url: str


class ResultsIndex(BaseModel):
    id: str
    state: SessionState
    files: list[ResultFile] = Field(description="result files present now (partial outputs of a failed job included)")
    viewer_url: str | None = Field(None, description="live rerun web viewer for this session, when served")


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(description="machine-readable reason, e.g. session_not_found, upload_too_large")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    workers: int
    active_jobs: int


# WebSocket messages sent by the server on /sessions/{id}/live (documented in docs/api.md).
class LiveAck(BaseModel):
    type: Literal["ack"] = "ack"
    seq: int = Field(description="sequence number of the frame message this answers (0-based)")
    accepted: int
    dropped: int
    invalid: int
    pending: int


class LiveError(BaseModel):
    type: Literal["error"] = "error"
    seq: int | None
    code: str
    message: str


class LiveClosed(BaseModel):
    type: Literal["closed"] = "closed"
    accepted: int
    dropped: int
    invalid: int
    state: SessionState
