"""The streaming run end to end: windows, bad frames, broken input, lost tracking, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_clips import write_images

from align import AlignConfig
from recon.ingest import IngestError, IngestOptions
from stream4d.outputs import read_points_ply, read_trajectory
from stream4d.pipeline import ReconstructConfig, reconstruct, sliding_windows
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view
from stream4d.testdata import SHARED_DATA

DATA = SHARED_DATA
W, H = 256, 192


def rendered(kind: str, n: int, scene_kind: str = "room", seed: int = 0) -> list[np.ndarray]:
    scene = make_scene(scene_kind, seed=seed)
    c2w = make_trajectory(kind, n, seed=seed, scene=scene)
    K = intrinsics_for(W, H)
    return [render_view(scene, c, K, W, H).rgb for c in c2w]


def light_config(**kw) -> ReconstructConfig:
    """No cache, no recording, 8-frame windows at the input's size; ``kw``: dotted tree keys."""
    base = {"gaussians": False, "rrd": False, "align.window": 8, "align.overlap": 3, "ingest.resize": None}
    return ReconstructConfig().override({**base, **kw})


def test_sliding_windows_share_exactly_the_overlap_and_cover_every_frame():
    for n in (1, 5, 20, 21, 34, 51):
        windows = [[f for f in w] for w in sliding_windows(iter(range(n)), 20, 5)]
        covered = sorted(set(f for w in windows for f in w))
        assert covered == list(range(n)) or n == 1
        for a, b in zip(windows, windows[1:]):
            assert len(set(a) & set(b)) == 5
            assert len(b) <= 20


def test_a_short_first_window_then_full_windows_sharing_the_overlap():
    windows = list(sliding_windows(iter(range(50)), 20, 5, tail_merge=0, first_window=8))
    assert windows[0] == list(range(8)) and windows[1] == list(range(3, 23))
    assert all(len(w) == 20 for w in windows[1:-1])
    assert all(len(set(a) & set(b)) == 5 for a, b in zip(windows, windows[1:]))
    assert sorted(set(f for w in windows for f in w)) == list(range(50))
    assert list(sliding_windows(iter(range(6)), 20, 5, first_window=8)) == [list(range(6))]  # ended before it
    with pytest.raises(ValueError, match="first_window"):
        list(sliding_windows(iter(range(30)), 20, 5, first_window=5))
    live = ReconstructConfig().live
    assert live.first_window_for(AlignConfig(window=20, overlap=5)) == 8
    assert live.first_window_for(AlignConfig(window=8, overlap=3)) is None  # not shorter: the plain window


def test_config_rejects_an_overlap_as_large_as_the_window():
    with pytest.raises(ValueError, match="overlap"):
        ReconstructConfig(align=AlignConfig(window=5, overlap=5))


def test_black_and_blank_frames_are_skipped_and_reported(tmp_path, capsys):
    images = rendered("sideways", 14)
    images[4] = np.zeros_like(images[4])  # lens cap
    images[9] = np.full_like(images[9], 128)  # blank wall
    folder = write_images(tmp_path / "in", images)
    summary = reconstruct(folder, tmp_path / "out", light_config(), progress=True)
    # the progress bar ends on the run's own counts, the last window's frames included
    last_bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "14/14" in last_bar and f"posed={summary.stats.frames_posed}," in last_bar, last_bar
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    reasons = {s["source"]: s["reason"] for s in run["skipped_frames"]}
    assert reasons == {"0004.png": "black", "0009.png": "blank"}
    posed = {f.image for f in read_trajectory(tmp_path / "out")}
    assert posed == {f"{i:04d}.png" for i in range(14)} - {"0004.png", "0009.png"}
    assert summary.stats.frames_skipped == 2


def test_a_video_that_breaks_midway_keeps_the_frames_before_the_break(tmp_path):
    whole = (DATA / "videos" / "great_wall.mp4").read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestError):
        reconstruct(broken, tmp_path / "out", light_config(**{"ingest.resize": 256, "ingest.stride": 6}), progress=False)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["error"] and "IngestError" in run["error"]
    frames = read_trajectory(tmp_path / "out")
    assert len(frames) >= 10  # what was decoded before the break is reconstructed and written
    assert all(f.image.startswith("broken.mp4#") for f in frames)


def test_lost_tracking_starts_a_new_segment_instead_of_failing(tmp_path):
    room = rendered("sideways", 10, "room")
    street = rendered("forward", 10, "street", seed=1)
    folder = write_images(tmp_path / "in", room + street)
    reconstruct(folder, tmp_path / "out", light_config(), progress=False)
    frames = read_trajectory(tmp_path / "out")
    segments = {f.segment for f in frames}
    assert len(segments) >= 2
    assert len(frames) >= 16


def test_missing_input_is_a_clear_ingest_error(tmp_path):
    with pytest.raises(IngestError, match="nope.mp4"):
        reconstruct(tmp_path / "nope.mp4", tmp_path / "out", light_config(), progress=False)


def test_video_reconstruction_writes_the_whole_output_folder(tmp_path):
    out = tmp_path / "fern"
    config = ReconstructConfig(ingest=IngestOptions(resize=256))
    summary = reconstruct(DATA / "videos" / "fern.mp4", out, config, progress=False)
    for name in ("trajectory.json", "trajectory.tum", "points.ply", "splats.ply", "recording.rrd", "run.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    frames = read_trajectory(out)
    assert len(frames) == summary.stats.frames_posed == 20
    # K is reported in pixels of the original 1008x756 video, not the 256 px the model saw.
    assert frames[0].width == 1008 and frames[0].height == 756
    assert abs(frames[0].K[0, 2] - 503.5) < 1 and frames[0].K[0, 0] > 500
    pts, cols = read_points_ply(out / "points.ply")
    assert len(pts) > 1000 and cols.shape == pts.shape
    run = json.loads((out / "run.json").read_text())
    assert run["stats"]["windows"] >= 1 and run["timings_s"]["total"] > 0
    assert run["timings_s"]["heap_trim"] >= 0  # the sink returned freed heap pages after its windows


def test_wide_baseline_views_that_cannot_be_posed_still_give_a_complete_folder(tmp_path):
    # room.mp4: 8 views of a room at 1 fps with little overlap; SfM poses only a few of them.
    out = tmp_path / "room"
    config = ReconstructConfig(ingest=IngestOptions(resize=256), rrd=False)
    summary = reconstruct(DATA / "videos" / "room.mp4", out, config, progress=False)
    assert 0 < summary.stats.frames_posed < 8
    assert (out / "splats.ply").is_file() and (out / "points.ply").is_file()
    assert len(read_trajectory(out)) == summary.stats.frames_posed


def test_views_too_far_apart_for_flow_map_their_tracks_and_the_files_show_the_largest_world(tmp_path):
    # room.mp4 at its own 512 px: one group of views posed from tracks whose flow fails between them,
    # and a group no other view overlaps, reconstructed last (its own world, rotation-only).
    out = tmp_path / "room"
    summary = reconstruct(DATA / "videos" / "room.mp4", out, ReconstructConfig(rrd=False), progress=False)
    assert summary.stats.frames_with_depth() >= 4
    assert 0 < summary.stats.frames_depth_from_tracks <= summary.stats.frames_with_depth()  # and said so
    from stream4d.pipeline.report import pose_summary
    assert f"({summary.stats.frames_depth_from_tracks} only at their tracked points" in pose_summary(summary.stats)
    assert not any("map is empty" in w for w in summary.stats.warnings)
    frames = read_trajectory(out)
    with_parallax = [f.segment for f in frames if f.pose_kind == "posed"]
    biggest = max(set(with_parallax), key=with_parallax.count)
    run = json.loads((out / "run.json").read_text())
    assert summary.stats.segment != biggest and run["map"]["segment"] == biggest
    pts, _ = read_points_ply(out / "points.ply")
    assert len(pts) == summary.stats.gaussians > 500
    for f in frames:
        if f.segment == biggest and f.pose_kind == "posed":  # the points are in this world: in front
            z = (pts - f.c2w[:3, 3]) @ f.c2w[:3, 2]
            assert (z > 0).mean() > 0.9


def test_a_stream_ending_just_after_a_full_window_ends_in_it():
    # 23 frames: one window of 23, not 0-19 and a last window 15-22 that is mostly overlap.
    assert [len(w) for w in sliding_windows(iter(range(23)), 20, 5, tail_merge=5)] == [23]
    # 51 frames (kitti_seq1): 0-19, 15-34, 30-50; without merging a 4th window 45-50 adds one frame.
    merged = list(sliding_windows(iter(range(51)), 20, 5, tail_merge=5))
    assert [(w[0], w[-1]) for w in merged] == [(0, 19), (15, 34), (30, 50)]
    plain = list(sliding_windows(iter(range(51)), 20, 5))
    assert [(w[0], w[-1]) for w in plain] == [(0, 19), (15, 34), (30, 49), (45, 50)]
    for n in range(2, 80):
        windows = list(sliding_windows(iter(range(n)), 20, 5, tail_merge=5))
        assert sorted(set(f for w in windows for f in w)) == list(range(n))
        assert all(w == list(range(w[0], w[-1] + 1)) for w in windows)  # in order, no gaps
        for a, b in zip(windows, windows[1:]):
            assert len(set(a) & set(b)) == 5 and len(a) == 20
        assert len(windows[-1]) <= 25
        assert len(windows[-1]) > 5 + 5 or len(windows) == 1  # a last window brings > tail_merge new frames


def test_tail_merge_follows_window_and_overlap():
    assert ReconstructConfig(align=AlignConfig(window=8, overlap=4)).tail_merge == 3
    assert ReconstructConfig().tail_merge == 5
    assert ReconstructConfig().override({"align.window": 8, "align.overlap": 4}).tail_merge == 3
    with pytest.raises(ValueError, match="tail_merge"):
        ReconstructConfig(align=AlignConfig(window=8, overlap=4), tail_merge=4)
