"""Chunked runs (stream4d.pipeline.chunks): the plan, a chunk's frames as in the whole video, and
the join, which must undo each chunk's own world frame (exact on synthetic poses)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memory.gaussians.export import read_splats_ply, write_splats_ply
from recon.ingest import IngestOptions, open_source
from stream4d.contracts import POSE_POSED, POSE_ROTATION_ONLY, POSE_TRACKED, GaussianSnapshot, StreamStats
from stream4d.geometry import Sim3
from stream4d.outputs import OutputWriter, PosedFrame, read_points_ply, read_trajectory_json
from stream4d.pipeline import ReconstructConfig
from stream4d.pipeline.chunks import (
    Chunk,
    FrameRange,
    JoinReport,
    join_chunks,
    joined_stats,
    part_config,
    plan_chunks,
    reconstruct_in_chunks,
)
from stream4d.pipeline.counted import COUNTED, CountedFrames, from_ranges
from stream4d.synthetic import make_scene, make_trajectory

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo" / "demo.mp4"


def test_plan_covers_every_frame_with_the_overlap_asked():
    plan = plan_chunks(600, 4, 16)
    assert plan[0].start == 0 and plan[-1].stop == 600
    for a, b in zip(plan, plan[1:]):
        assert a.stop - b.start == 16
    assert plan_chunks(48, 1, 8) == [Chunk(0, 48)]
    with pytest.raises(ValueError, match="overlap"):
        plan_chunks(600, 2, 2)
    with pytest.raises(ValueError, match="too few"):
        plan_chunks(40, 4, 8)


def test_a_frame_range_gives_the_whole_videos_frames_with_their_names_and_timestamps():
    options = IngestOptions(resize=128)
    with open_source(str(DEMO), options) as whole:
        frames = [f for f in whole][5:12]
    with FrameRange(DEMO, Chunk(5, 12), options) as part:
        got = list(part)
    assert [f.index for f in got] == list(range(7))
    assert [f.source for f in got] == [f.source for f in frames]
    assert [f.timestamp for f in got] == [f.timestamp for f in frames]
    for a, b in zip(got, frames):
        np.testing.assert_array_equal(a.image, b.image)
    assert part.info.kind == "video" and part.info.frame_count == 7


def _write_chunk(out: Path, chunk: Chunk, c2w: np.ndarray, world_of_chunk: Sim3, points: np.ndarray) -> None:
    """A chunk's outputs as its own run would write them: its frames' poses and points in its own world
    (``world_of_chunk`` maps the true world into it), indices from 0, names as in the whole video."""
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    with OutputWriter(out) as writer:
        for i in range(chunk.start, chunk.stop):
            writer.add_frame(PosedFrame(i - chunk.start, i / 10, f"clip.mp4#{i}", world_of_chunk.apply_c2w(c2w[i]),
                                        K, 128, 96))
        writer.write_points(world_of_chunk.apply(points), np.full((len(points), 3), 200, np.uint8))


def test_join_undoes_each_chunks_world_frame(tmp_path):
    c2w = make_trajectory("orbit", 120, seed=0, scene=make_scene("room", seed=0), arc_deg=120)
    plan = plan_chunks(120, 3, 8)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3))
    dirs = []
    for k, chunk in enumerate(plan):
        world = Sim3.identity() if k == 0 else Sim3(
            float(rng.uniform(0.3, 3.0)), Rotation.random(random_state=k).as_matrix(), rng.normal(size=3))
        dirs.append(tmp_path / f"c{k}")
        _write_chunk(dirs[-1], chunk, c2w, world, points[k::3])
    report = join_chunks(dirs, plan, tmp_path / "joined")
    joined = read_trajectory_json(tmp_path / "joined" / "trajectory.json")
    assert [f.index for f in joined] == list(range(120)) and report.frames == 120
    assert [f.image for f in joined] == [f"clip.mp4#{i}" for i in range(120)]
    np.testing.assert_allclose(np.stack([f.c2w for f in joined]), c2w, atol=1e-9)
    assert [c["shared"] for c in report.chunks] == [0, 8, 8]
    cloud, _ = read_points_ply(tmp_path / "joined" / "points.ply")
    assert len(cloud) == 50
    np.testing.assert_allclose(np.sort(cloud, axis=0), np.sort(points, axis=0), atol=1e-5)  # float32 on disk


def test_join_onto_an_anchor_run_gives_the_anchors_world(tmp_path):
    c2w = make_trajectory("orbit", 120, seed=1, scene=make_scene("room", seed=0), arc_deg=120)
    plan = plan_chunks(120, 3, 8)
    rng = np.random.default_rng(1)
    anchor_world = Sim3(2.0, Rotation.random(random_state=7).as_matrix(), np.array([1.0, -2.0, 0.5]))
    with OutputWriter(tmp_path / "anchor") as writer:  # every 10th frame, indices of the strided run
        for n, i in enumerate(range(0, 120, 10)):
            writer.add_frame(PosedFrame(n, i / 10, f"clip.mp4#{i}", anchor_world.apply_c2w(c2w[i]), np.eye(3), 128, 96))
    dirs = []
    for k, chunk in enumerate(plan):
        dirs.append(tmp_path / f"c{k}")
        world = Sim3(float(rng.uniform(0.3, 3.0)), Rotation.random(random_state=k).as_matrix(), rng.normal(size=3))
        _write_chunk(dirs[-1], chunk, c2w, world, np.zeros((1, 3)))
    report = join_chunks(dirs, plan, tmp_path / "joined", anchor_dir=tmp_path / "anchor")
    joined = read_trajectory_json(tmp_path / "joined" / "trajectory.json")
    np.testing.assert_allclose(np.stack([f.c2w for f in joined]), anchor_world.apply_c2w(c2w), atol=1e-9)
    assert {f.segment for f in joined} == {0}
    assert all(c["fitted_on"] >= 3 for c in report.chunks)


def test_a_chunk_sharing_too_few_posed_frames_is_refused(tmp_path):
    c2w = make_trajectory("orbit", 40, seed=0, scene=make_scene("room", seed=0), arc_deg=40)
    a, b = Chunk(0, 22), Chunk(20, 40)  # 2 shared frames
    _write_chunk(tmp_path / "a", a, c2w, Sim3.identity(), np.zeros((1, 3)))
    _write_chunk(tmp_path / "b", b, c2w, Sim3.identity(), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="shares 2 posed frames"):
        join_chunks([tmp_path / "a", tmp_path / "b"], [a, b], tmp_path / "joined")
    # a stopped run's join leaves the chunk out instead
    report = join_chunks([tmp_path / "a", tmp_path / "b"], [a, b], tmp_path / "joined", leave_out_unplaceable=True)
    assert report.frames == 22 and report.left_out == [{"start": 20, "stop": 40}]
    assert [f.index for f in read_trajectory_json(tmp_path / "joined" / "trajectory.json")] == list(range(22))


def _splats(means: np.ndarray, scale: float) -> GaussianSnapshot:
    n = len(means)
    quats = np.zeros((n, 4), np.float32)
    quats[:, 0] = 1.0
    return GaussianSnapshot(means.astype(np.float32), np.full((n, 3), 0.5, np.float32), np.full(n, 0.5, np.float32),
                            np.full((n, 3), scale, np.float32), quats, np.full(n, np.nan))


def test_join_moves_each_chunks_splats_into_the_joined_world_and_records_it(tmp_path):
    c2w = make_trajectory("orbit", 60, seed=2, scene=make_scene("room", seed=0), arc_deg=60)
    plan = plan_chunks(60, 2, 8)
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(40, 3))
    dirs, worlds = [], []
    for k, chunk in enumerate(plan):
        world = Sim3.identity() if k == 0 else Sim3(2.5, Rotation.random(random_state=3).as_matrix(), rng.normal(size=3))
        dirs.append(tmp_path / f"c{k}")
        _write_chunk(dirs[-1], chunk, c2w, world, truth[k::2])
        write_splats_ply(dirs[-1] / "splats.ply", _splats(world.apply(truth[k::2]), 0.01 * world.s))
        worlds.append(world)
    report = join_chunks(dirs, plan, tmp_path / "joined", rrd=tmp_path / "joined" / "recording.rrd")
    joined = read_splats_ply(tmp_path / "joined" / "splats.ply")
    assert report.gaussians == joined.num == 40
    np.testing.assert_allclose(np.sort(joined.means, axis=0), np.sort(truth, axis=0), atol=1e-4)
    np.testing.assert_allclose(joined.scales, 0.01, rtol=1e-4)  # 2.5x larger in chunk 1's world
    assert (tmp_path / "joined" / "recording.rrd").stat().st_size > 1000


def test_the_pose_graph_keeps_consecutive_chunks_together_where_a_noisy_anchor_would_not(tmp_path):
    """Anchor poses with noise, chunks exact in their own worlds: onto the anchor alone each chunk takes
    its own error, so the path jumps where one chunk hands over to the next; the pose graph weighs the
    overlap (exact) against the anchor edges (noisy) by their measured noise and keeps the path whole."""
    c2w = make_trajectory("orbit", 120, seed=3, scene=make_scene("room", seed=0), arc_deg=120)
    plan = plan_chunks(120, 2, 16)
    rng = np.random.default_rng(3)
    with OutputWriter(tmp_path / "anchor") as writer:
        for n, i in enumerate(range(0, 120, 10)):
            noisy = c2w[i].copy()
            noisy[:3, 3] += rng.normal(scale=0.05, size=3)
            writer.add_frame(PosedFrame(n, i / 10, f"clip.mp4#{i}", noisy, np.eye(3), 128, 96))
    dirs = []
    for k, chunk in enumerate(plan):
        dirs.append(tmp_path / f"c{k}")
        _write_chunk(dirs[-1], chunk, c2w, Sim3(1.0 + k, np.eye(3), np.full(3, float(k))), np.zeros((1, 3)))
    b = plan[0].stop  # the first frame only chunk 1 posed; frame b - 1 is chunk 0's
    true_step = c2w[b, :3, 3] - c2w[b - 1, :3, 3]
    jumps = {}
    for method in ("anchor", "pose_graph"):
        report = join_chunks(dirs, plan, tmp_path / f"joined-{method}", anchor_dir=tmp_path / "anchor", method=method)
        joined = np.stack([f.c2w for f in read_trajectory_json(tmp_path / f"joined-{method}" / "trajectory.json")])
        step = joined[b, :3, 3] - joined[b - 1, :3, 3]
        jumps[method] = float(np.linalg.norm(step - true_step) / np.linalg.norm(true_step))
    assert jumps["pose_graph"] < 0.2 * jumps["anchor"], jumps
    assert report.pose_graph is not None and not report.pose_graph["dropped"], report.pose_graph


def test_joined_counters_count_a_frame_two_chunks_share_once():
    # Two chunks of 30 frames sharing 10: each says 12 rotation-only and 6 tracked frames, the joined
    # trajectory holds 50 frames of which 14 are rotation-only and 8 tracked (the shared ones once).
    def part(name, start, stop):
        return {"part": name, "start": start, "stop": stop,
                "stats": {"frames_received": stop - start, "frames_rotation_only": 12, "frames_tracked": 6,
                          "frames_tracked_with_depth": 6, "windows": 3, "errors": [], "warnings": []}}

    parts = [part("chunk-0", 0, 30), part("chunk-1", 20, 50)]
    kinds = {POSE_POSED: 28, POSE_ROTATION_ONLY: 14, POSE_TRACKED: 8}
    stats = joined_stats(parts, JoinReport(frames=50, pose_kinds=kinds))
    assert stats.frames_received == 50 and stats.frames_posed == 50
    assert stats.frames_rotation_only == 14 and stats.frames_tracked == 8 and stats.frames_interpolated == 0
    assert stats.frames_tracked_with_depth == 8  # no more than the tracked frames
    assert stats.windows == 6
    assert stats.keyframes_posed_from_parallax() == 28
    summed = joined_stats(parts, JoinReport(frames=50))  # without the joined frames' kinds: each chunk's, summed
    assert summed.frames_rotation_only == 24


def _write_part(out: Path, chunk: Chunk, c2w: np.ndarray, unposed: set[int], skipped: set[int],
                **counted: set[int]) -> dict:
    """A chunk's folder as its run writes it: the frames it posed (all but ``unposed`` and ``skipped``;
    keyframes "posed", the others "tracked") and run.json with the frames behind its per-frame counters
    (``counted``: counter -> frames, decode positions in the whole video). Its ``part_result``."""
    stats = StreamStats(frames_received=chunk.stop - chunk.start, frames_skipped=len(skipped))
    record = CountedFrames(stats)
    for name, frames in counted.items():
        record.count(name, [i - chunk.start for i in frames])
    keys = counted.get("frames_keyframes", set())
    with OutputWriter(out) as writer:
        for i in sorted(set(range(chunk.start, chunk.stop)) - unposed - skipped):
            writer.add_frame(PosedFrame(i - chunk.start, i / 10, f"clip.mp4#{i}", c2w[i], np.eye(3), 128, 96,
                                        pose_kind=POSE_POSED if i in keys else POSE_TRACKED))
        writer.write_run({"stats": asdict(stats), "counted_frames": record.to_json(),
                          "skipped_frames": [{"index": i - chunk.start, "source": f"clip.mp4#{i}", "reason": "black"}
                                             for i in sorted(skipped)]})
    return {"part": out.name, "start": chunk.start, "stop": chunk.stop, "stats": asdict(stats)}


def test_joined_per_frame_counters_count_each_frame_from_the_chunk_whose_copy_the_join_kept(tmp_path):
    # Frames 20-29 are in both chunks. Frame 28 only chunk b posed (chunk a's window of it failed), so b's
    # copy is kept and b's record counts it; 25 both skipped: counted once, as chunk a received it first.
    c2w = make_trajectory("orbit", 50, seed=4, scene=make_scene("room", seed=0), arc_deg=50)
    a, b = Chunk(0, 30), Chunk(20, 50)
    parts = [
        _write_part(tmp_path / "a", a, c2w, unposed={28}, skipped={5, 25},
                    frames_keyframes=set(range(0, 30, 2)), frames_without_depth={2, 22},
                    frames_depth_from_tracks={24}, frames_tracked_with_depth={21, 27}),
        _write_part(tmp_path / "b", b, c2w, unposed=set(), skipped={25, 40},
                    frames_keyframes={20, 23, 26, 29, 32, 35, 38, 41, 44, 47, 49}, frames_without_depth={23, 32},
                    frames_depth_from_tracks={26, 44}, frames_tracked_with_depth={21, 27, 28, 31}),
    ]
    report = join_chunks([tmp_path / "a", tmp_path / "b"], [a, b], tmp_path / "joined")
    stats = joined_stats(parts, report)
    assert stats.frames_received == 50 and stats.frames_skipped == 3 and stats.frames_processed == 47
    # a's even frames but 28 (posed by b), then b's from 30 on
    assert stats.frames_keyframes == 14 + 7
    assert (stats.frames_without_depth, stats.frames_depth_from_tracks, stats.frames_tracked_with_depth) == (3, 2, 4)
    assert report.frame_counts["frames_keyframes"] == 21  # in run.json chunked.join too
    summed = joined_stats(parts, JoinReport(frames=report.frames))  # parts without a record: summed as before
    assert (summed.frames_skipped, summed.frames_keyframes, summed.frames_tracked_with_depth) == (4, 26, 6)


def test_a_chunk_left_out_of_a_stopped_runs_join_still_counts_the_frames_only_it_received(tmp_path):
    c2w = make_trajectory("orbit", 40, seed=0, scene=make_scene("room", seed=0), arc_deg=40)
    a, b = Chunk(0, 22), Chunk(20, 40)  # 2 shared frames: b cannot be placed
    parts = [_write_part(tmp_path / "a", a, c2w, set(), set(), frames_keyframes={0, 10, 20, 21},
                         frames_tracked_with_depth={5}),
             _write_part(tmp_path / "b", b, c2w, set(), {35}, frames_keyframes={20, 30, 39},
                         frames_tracked_with_depth={31, 32})]
    report = join_chunks([tmp_path / "a", tmp_path / "b"], [a, b], tmp_path / "joined", leave_out_unplaceable=True)
    assert report.left_out == [{"start": 20, "stop": 40}]
    stats = joined_stats(parts, report)
    assert stats.frames_keyframes == 4 + 2  # frames 20 and 21 from a, whose copies the join kept
    assert stats.frames_skipped == 1 and stats.frames_processed == 39
    assert stats.frames_tracked_with_depth == 1  # b's frames are not in the joined trajectory: no depth there


def test_a_chunked_run_counts_every_keyframe_of_the_video_once(tmp_path):
    # Every frame a keyframe: the 8 frames the chunks share are keyframes of both, counted twice when summed.
    config = ReconstructConfig().override({"gaussians": False, "rrd": False, "align.window": 8, "align.overlap": 2,
                                           "ingest.resize": 128, "keyframes.policy": "all"})
    run = reconstruct_in_chunks(DEMO, tmp_path / "out", tmp_path / "work", config, 48, 2, 8, anchor_stride=None)
    for part in ("000", "001"):  # each part records the frames behind its counters
        record = json.loads((tmp_path / "work" / part / "out" / "run.json").read_text())
        assert {name: len(from_ranges(record["counted_frames"][name])) for name in COUNTED} == \
            {name: record["stats"][name] for name in COUNTED}
    assert run.stats.frames_keyframes == run.stats.frames_processed == 48 - run.stats.frames_skipped
    assert sum(p["stats"]["frames_keyframes"] for p in run.parts) > run.stats.frames_keyframes
    assert run.stats.frames_without_depth + run.stats.frames_depth_from_tracks <= \
        run.stats.keyframes_posed_from_parallax()
    assert json.loads((tmp_path / "out" / "run.json").read_text())["stats"] == asdict(run.stats)


def test_a_part_leaves_the_final_adjustment_to_the_run_it_joins():
    """Each part is placed by its overlap as it left it; a part adjusting itself would move that overlap."""
    for asked in (None, True):
        part = part_config(ReconstructConfig(final_ba=asked, save_map="m"))
        assert part.final_ba is False and part.save_map is None and not part.rrd
