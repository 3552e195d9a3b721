"""Chunked runs (stream4d.pipeline.chunks): the plan, a chunk's frames as in the whole video, and
the join, which must undo each chunk's own world frame (exact on synthetic poses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from memory.gaussians.export import read_splats_ply, write_splats_ply
from recon.ingest import IngestOptions, open_source
from stream4d.contracts import POSE_POSED, POSE_ROTATION_ONLY, POSE_TRACKED, GaussianSnapshot
from stream4d.geometry import Sim3
from stream4d.outputs import OutputWriter, PosedFrame, read_points_ply, read_trajectory_json
from stream4d.pipeline.chunks import Chunk, FrameRange, JoinReport, join_chunks, joined_stats, plan_chunks
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
