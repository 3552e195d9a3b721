"""Honest degeneracy: rotation-only poses are marked and counted, unusable windows are skipped and reported."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from synthetic_clips import panning_room, sideways_room, write_images

from recon.default.model import DefaultWindowModel
from stream4d.contracts import POSE_POSED, POSE_ROTATION_ONLY, StreamObserver
from stream4d.outputs import read_trajectory, read_trajectory_json
from stream4d.pipeline import ReconstructConfig, reconstruct


class FaultOnWindow:
    """The real default model; only window ``bad`` (0-based call count) is broken: its output gets NaN
    poses (``fault="nan"``) or the model raises (``fault="raise"``)."""

    name = "default"

    def __init__(self, bad: int, fault: str = "nan"):
        self.inner = DefaultWindowModel()
        self.bad = bad
        self.fault = fault
        self.calls = 0
        self.prepare = self.inner.prepare

    def reset(self) -> None:
        self.inner.reset()
        self.calls = 0

    def predict(self, frames):
        pred = self.inner.predict(frames)
        self.calls += 1
        if self.calls - 1 != self.bad:
            return pred
        if self.fault == "raise":
            raise RuntimeError("bundle adjustment diverged")
        c2w = pred.c2w.copy()
        c2w[len(c2w) // 2, :3, :3] = np.nan
        return replace(pred, c2w=c2w)


class Placements(StreamObserver):
    """A StreamObserver that keeps where each aligned window was placed."""

    def __init__(self):
        self.windows = []

    def on_window(self, window):
        self.windows.append((window.prediction.frame_indices.tolist(), window.info.get("placement"), window.segment))


def light_config(**kw) -> ReconstructConfig:
    """Small windows of every frame (no parallax keyframes: the windows below are counted in frames),
    no splat cache or recording, frames as rendered; ``kw`` in dotted keys."""
    base = {"gaussians": False, "rrd": False, "align.window": 8, "align.overlap": 3, "ingest.resize": None,
            "keyframes.policy": "all"}
    base.update(kw)
    return ReconstructConfig().override(base)


def test_a_window_with_non_finite_poses_is_skipped_reported_and_the_stream_goes_on(tmp_path):
    folder = write_images(tmp_path / "in", sideways_room(28))
    seen = Placements()
    model = FaultOnWindow(bad=1)  # windows: 0-7, 5-12 (broken), 10-17, 15-22, 20-27
    summary = reconstruct(folder, tmp_path / "out", light_config(), progress=False, model=model, observers=[seen])

    assert model.calls == 5
    assert summary.stats.windows_skipped == 1 and summary.stats.windows == 4
    [skip] = summary.skipped_windows
    assert skip["window"] == 1 and skip["frames"][0] == 5 and skip["frames"][-1] == 12
    assert "non-finite camera poses" in skip["reason"]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["error"] is None and run["skipped_windows"] == [skip]
    assert run["stats"]["windows_skipped"] == 1
    assert any("window 1 (frames 5-12) skipped" in e for e in run["stats"]["errors"])
    assert any("1 window was skipped" in w for w in run["stats"]["warnings"])

    # Tracking starts again after the broken window, and every later window is posed.
    placements = [p for _, p, _ in seen.windows]
    assert placements == ["first window", "new segment", "registered", "registered"]
    posed = {f.index for f in read_trajectory(tmp_path / "out")}
    assert set(range(10, 28)) <= posed and set(range(0, 8)) <= posed
    assert not posed & {8, 9}  # only the broken window had them
    assert all(f.pose_kind == POSE_POSED for f in read_trajectory(tmp_path / "out"))


def test_pure_rotation_is_posed_rotation_only_and_the_empty_map_is_reported(tmp_path):
    folder = write_images(tmp_path / "in", panning_room(12))
    summary = reconstruct(folder, tmp_path / "out", light_config(gaussians=True), progress=False)

    s = summary.stats
    assert s.frames_posed == s.frames_rotation_only == 12
    frames = read_trajectory_json(tmp_path / "out" / "trajectory.json")
    assert [f.pose_kind for f in frames] == [POSE_ROTATION_ONLY] * 12
    raw = json.loads((tmp_path / "out" / "trajectory.json").read_text())
    assert {f["pose_kind"] for f in raw["frames"]} == {"rotation_only"}
    # The orientations are still recovered: the camera turns about 0.6 degrees a frame.
    turn = Rotation.from_matrix(frames[-1].c2w[:3, :3].T @ frames[0].c2w[:3, :3]).magnitude()
    assert np.degrees(turn) == pytest.approx(0.6 * 11, abs=1.5)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["stats"]["frames_rotation_only"] == 12
    [warning] = run["stats"]["warnings"]
    assert warning.startswith("map is empty: no window had parallax: all 12 posed frames are rotation-only")
    assert summary.outputs["points.ply"].is_file()


def test_a_window_whose_model_raises_is_skipped_and_reported_too(tmp_path):
    folder = write_images(tmp_path / "in", sideways_room(18))
    model = FaultOnWindow(bad=1, fault="raise")  # windows: 0-7, 5-12 (raises), 10-17
    summary = reconstruct(folder, tmp_path / "out", light_config(), progress=False, model=model)
    assert summary.skipped_windows == [{"window": None, "frames": list(range(5, 13)),
                                        "reason": "the window model failed: RuntimeError: bundle adjustment diverged"}]
    assert summary.stats.windows_skipped == 1 and summary.stats.windows == 2
    assert {f.index for f in read_trajectory(tmp_path / "out")} == set(range(8)) | set(range(10, 18))


def test_keyframes_posed_from_tracks_without_confident_depth_are_counted_apart(tmp_path):
    """room.mp4: eight views a second apart; the window SfM poses some from their tracks, but optical flow
    gives no confident depth across such baselines. With the tracks' depth turned off (it is on by default:
    tests/core/test_pipeline.py) those frames are not called "posed with depth"."""
    from stream4d.pipeline.report import pose_summary
    from stream4d.testdata import SHARED_DATA

    video = SHARED_DATA / "videos" / "room.mp4"
    if not video.is_file():
        pytest.skip(f"shared data not found: {video}")
    config = light_config(**{"gaussians": True, "model.sparse_depth.below_share": 0.0})
    summary = reconstruct(video, tmp_path / "out", config, progress=False)
    s = summary.stats
    posed_from_tracks = [f for f in read_trajectory_json(tmp_path / "out" / "trajectory.json")
                         if f.pose_kind == POSE_POSED]
    # One view has no confident pixel at all; the others a few, which reach the map.
    assert s.frames_without_depth >= 1
    assert s.frames_with_depth() + s.frames_without_depth == len(posed_from_tracks)
    line = pose_summary(s)
    assert f"{s.frames_with_depth()} posed with depth" in line
    assert f"{s.frames_without_depth} posed without confident depth" in line
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["stats"]["frames_without_depth"] == s.frames_without_depth


def test_a_map_left_empty_by_posed_frames_says_why():
    from stream4d.contracts import StreamStats
    from stream4d.pipeline.report import run_warnings

    from_tracks = StreamStats(frames_received=8, frames_processed=8, frames_posed=4, frames_without_depth=4)
    assert run_warnings(from_tracks, map_points=0) == [
        "map is empty: no window gave confident depth; points.ply and splats.ply are empty"]
    assert run_warnings(from_tracks, map_points=0, map_kept=False)[0].endswith("; points.ply is empty")
    assert run_warnings(from_tracks, map_points=10) == []
