"""Output folder format: OutputWriter and the readers (trajectory.json, .tum, PLY, depth, cameras.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from stream4d.geometry import Sim3
from stream4d.outputs import (
    OutputWriter,
    PosedFrame,
    c2w_to_tum,
    read_cameras_json,
    read_depth,
    read_points_ply,
    read_trajectory,
    read_trajectory_json,
    read_tum,
    write_points_ply,
)
from stream4d.testdata import SHARED_DATA

DATA = SHARED_DATA
KITTI = DATA / "kitti_seq1" / "cameras.json"
needs_data = pytest.mark.skipif(not KITTI.is_file(), reason="shared test data not present")


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def posed(index: int, c2w: np.ndarray, segment: int = 0) -> PosedFrame:
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    return PosedFrame(index, 0.1 * index, f"{index:06d}.png", c2w, K, 640, 480, segment)


@needs_data
def test_read_cameras_json_lists_kitti_frames_in_order_with_index_timestamps():
    frames = read_cameras_json(KITTI)
    assert len(frames) == 51
    assert [f.index for f in frames] == list(range(51))
    assert [f.timestamp for f in frames] == [float(i) for i in range(51)]
    assert frames[7].image == "image_l/000007.png"
    assert (frames[0].width, frames[0].height) == (1226, 370)
    assert frames[0].K[0, 0] == pytest.approx(707.0912)
    # KITTI drives ~60 m forward along +z.
    assert frames[-1].c2w[2, 3] == pytest.approx(59.83857)


def test_read_cameras_json_uses_timestamp_field_when_present(tmp_path):
    path = tmp_path / "cameras.json"
    entry = {"image": "a.png", "width": 4, "height": 3, "K": np.eye(3).tolist(), "c2w": np.eye(4).tolist()}
    path.write_text(json.dumps({"frames": [dict(entry, timestamp=12.5), dict(entry, timestamp=13.0)]}))
    assert [f.timestamp for f in read_cameras_json(path)] == [12.5, 13.0]


@needs_data
def test_writer_json_and_tum_round_trip_to_the_same_poses(tmp_path):
    gt = read_cameras_json(KITTI)
    sim = Sim3(0.5, rot_z(30), np.array([1.0, -2.0, 3.0]))
    frames = [PosedFrame(f.index, 0.1 * f.index, f.image, sim.apply_c2w(f.c2w), f.K, f.width, f.height,
                         segment=int(f.index >= 30)) for f in gt]
    with OutputWriter(tmp_path / "out") as writer:
        for f in frames:
            writer.add_frame(f)
    from_json = read_trajectory(tmp_path / "out")
    from_tum = read_tum(tmp_path / "out" / "trajectory.tum")
    assert len(from_json) == len(from_tum) == 51
    for a, b, c in zip(frames, from_json, from_tum):
        assert (b.index, b.image, b.width, b.height, b.segment) == (a.index, a.image, a.width, a.height, a.segment)
        np.testing.assert_array_equal(b.c2w, a.c2w)
        np.testing.assert_array_equal(b.K, a.K)
        assert b.timestamp == c.timestamp == a.timestamp
        # TUM stores a quaternion, so the rotation is re-orthonormalised: equal to rounding.
        np.testing.assert_allclose(c.c2w, a.c2w, atol=1e-6)
    data = json.loads((tmp_path / "out" / "trajectory.json").read_text())
    assert data["version"] == 1 and data["frames"][0]["index"] == 0


def test_tum_quaternion_is_xyzw_with_nonnegative_w(tmp_path):
    c2w = np.eye(4)
    c2w[:3, :3] = rot_z(90)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    t, q = c2w_to_tum(c2w)
    s = np.sqrt(0.5)
    np.testing.assert_allclose(q, [0, 0, s, s], atol=1e-12)  # 90 deg about z: (x, y, z, w)
    # A rotation whose scipy quaternion comes out with w < 0 is flipped to w >= 0.
    c2w[:3, :3] = rot_z(270)
    np.testing.assert_allclose(c2w_to_tum(c2w)[1], [0, 0, -s, s], atol=1e-12)
    with OutputWriter(tmp_path) as writer:
        writer.add_frame(posed(0, c2w))
    line = (tmp_path / "trajectory.tum").read_text().splitlines()[1]
    np.testing.assert_allclose([float(v) for v in line.split()], [0, 1, 2, 3, 0, 0, -s, s], atol=1e-12)


def test_tum_is_flushed_per_frame_and_read_back_before_close(tmp_path):
    writer = OutputWriter(tmp_path)
    writer.add_frame(posed(0, np.eye(4)))
    writer.add_frame(posed(1, np.eye(4)))
    assert not (tmp_path / "trajectory.json").exists()
    frames = read_trajectory(tmp_path)  # falls back to the .tum of an unfinished run
    assert [f.timestamp for f in frames] == [0.0, 0.1]
    assert all(f.index == -1 and f.image == "" and np.isnan(f.K).all() for f in frames)
    writer.close()
    writer.close()  # idempotent
    assert [f.index for f in read_trajectory(tmp_path)] == [0, 1]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    with pytest.raises(RuntimeError, match="closed"):
        writer.add_frame(posed(2, np.eye(4)))


def test_writer_rejects_a_frame_index_added_twice(tmp_path):
    with OutputWriter(tmp_path) as writer:
        writer.add_frame(posed(3, np.eye(4)))
        with pytest.raises(ValueError, match="index 3 was already added"):
            writer.add_frame(posed(3, np.eye(4)))


def test_writer_refuses_an_existing_run_unless_overwrite_and_then_clears_stale_depth(tmp_path):
    with OutputWriter(tmp_path) as writer:
        writer.add_frame(posed(0, np.eye(4)))
        writer.write_depth(0, np.ones((2, 3)), np.ones((2, 3)), np.eye(3), np.eye(4))
    with pytest.raises(FileExistsError, match="trajectory"):
        OutputWriter(tmp_path, overwrite=False)
    (tmp_path / "splats.ply").write_bytes(b"owned by the Gaussian cache")
    with OutputWriter(tmp_path, overwrite=True):
        pass
    assert not (tmp_path / "depth" / "000000.npz").exists()
    assert (tmp_path / "splats.ply").exists()  # not the writer's file
    assert read_trajectory(tmp_path) == []


def test_posed_frame_rejects_a_malformed_pose():
    with pytest.raises(ValueError, match="c2w must be \\[4, 4\\]"):
        posed(0, np.eye(3))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        posed(0, bad)


def test_depth_npz_round_trip_at_model_resolution(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (7, 9)).astype(np.float32)
    conf = rng.uniform(0, 1, (7, 9)).astype(np.float32)
    K = np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, 3] = [1, 2, 3]
    with OutputWriter(tmp_path) as writer:
        path = writer.write_depth(42, depth, conf, K, c2w)
        with pytest.raises(ValueError, match="conf of frame 5"):
            writer.write_depth(5, depth, conf[:3], K, c2w)
    assert path == tmp_path / "depth" / "000042.npz"
    back = read_depth(tmp_path, 42)
    assert back["depth"].dtype == np.float32 and back["conf"].dtype == np.float32
    np.testing.assert_array_equal(back["depth"], depth)
    np.testing.assert_array_equal(back["conf"], conf)
    np.testing.assert_array_equal(back["K"], K)
    np.testing.assert_array_equal(back["c2w"], c2w)
    with pytest.raises(FileNotFoundError, match="frame 7"):
        read_depth(tmp_path, 7)


def test_points_ply_is_binary_little_endian_float32_xyz_uint8_rgb(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(100, 3))
    cols = rng.uniform(0, 1, (100, 3))
    with OutputWriter(tmp_path) as writer:
        path = writer.write_points(pts, cols)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    props = {p.name: p.val_dtype for p in ply["vertex"].properties}
    assert props == {"x": "f4", "y": "f4", "z": "f4", "red": "u1", "green": "u1", "blue": "u1"}
    back_pts, back_cols = read_points_ply(path)
    np.testing.assert_allclose(back_pts, pts.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_array_equal(back_cols, np.round(cols * 255).astype(np.uint8))
    # uint8 colours are stored as given.
    u8 = rng.integers(0, 256, (100, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_points_ply(write_points_ply(tmp_path / "b.ply", pts, u8))[1], u8)


def test_points_ply_rejects_bad_points_and_colours(tmp_path):
    pts = np.zeros((4, 3))
    with pytest.raises(ValueError, match="points must be \\[N, 3\\]"):
        write_points_ply(tmp_path / "a.ply", np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="colors must be \\[4, 3\\]"):
        write_points_ply(tmp_path / "a.ply", pts, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        write_points_ply(tmp_path / "a.ply", pts, np.full((4, 3), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        write_points_ply(tmp_path / "a.ply", np.full((4, 3), np.nan), np.zeros((4, 3)))
    assert not (tmp_path / "a.ply").exists()


def test_read_points_ply_takes_colour_from_3dgs_sh_dc(tmp_path):
    v = np.zeros(2, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("f_dc_0", "f4"), ("f_dc_1", "f4"),
                           ("f_dc_2", "f4"), ("opacity", "f4")])
    v["x"] = [1, 2]
    v["f_dc_0"] = [0.0, 1.0 / 0.28209479177387814]  # rgb = 0.5 + C0 * f_dc
    path = tmp_path / "splats.ply"
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))
    pts, cols = read_points_ply(path)
    np.testing.assert_array_equal(pts[:, 0], [1, 2])
    np.testing.assert_array_equal(cols, [[128, 128, 128], [255, 128, 128]])


def test_run_json_serialises_numpy_values_and_records_versions(tmp_path):
    with OutputWriter(tmp_path) as writer:
        writer.write_run({"timings": {"recon": np.float32(1.5)}, "frames": np.int64(3), "K": np.eye(2)})
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["timings"]["recon"] == 1.5 and run["frames"] == 3 and run["K"] == [[1, 0], [0, 1]]
    assert run["format_version"] == 1 and run["stream4d_version"]


def test_readers_name_the_file_and_reason_on_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_trajectory(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither trajectory.json nor trajectory.tum"):
        read_trajectory(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_cameras_json(bad)
    bad.write_text(json.dumps({"cameras": []}))
    with pytest.raises(ValueError, match="no top-level \"frames\" list"):
        read_cameras_json(bad)
    bad.write_text(json.dumps({"frames": [{"image": "a", "K": np.eye(3).tolist(), "c2w": [[1, 0], [0, 1]]}]}))
    with pytest.raises(ValueError, match="frame 0.*c2w must be \\[4, 4\\]"):
        read_cameras_json(bad)
    bad.write_text(json.dumps({"frames": [{"image": "a", "c2w": np.eye(4).tolist()}]}))
    with pytest.raises(ValueError, match="lacks \"K\""):
        read_cameras_json(bad)
    with pytest.raises(ValueError, match="no \"index\""):
        read_trajectory(bad)
    tum = tmp_path / "t.tum"
    tum.write_text("# header\n0 1 2 3 0 0 0 1\n1 2 3\n")
    with pytest.raises(ValueError, match="t.tum:3: expected 8 finite numbers"):
        read_tum(tum)


def test_remapping_a_segment_moves_only_its_frames_in_both_trajectory_files(tmp_path):
    link = Sim3(2.0, rot_z(90), np.array([1.0, 2.0, 3.0]))
    moved_x = np.eye(4)
    moved_x[0, 3] = 1.0
    kept = [posed(0, np.eye(4)), posed(1, moved_x)]
    lost = np.eye(4)
    lost[:3, 3] = [0.5, 0, 0]
    with OutputWriter(tmp_path) as w:
        for f in kept:
            w.add_frame(f)
        w.add_frame(posed(2, lost, segment=1))
        assert w.remap_segment(1, 0, link) == 1
        w.add_frame(posed(3, link.apply_c2w(lost), segment=0))  # later frames come already mapped
    for frames in (read_trajectory_json(tmp_path / "trajectory.json"), read_tum(tmp_path / "trajectory.tum")):
        assert len(frames) == 4
        np.testing.assert_allclose(frames[0].c2w, kept[0].c2w, atol=1e-9)
        np.testing.assert_allclose(frames[2].c2w, link.apply_c2w(lost), atol=1e-9)
        np.testing.assert_allclose(frames[3].c2w, frames[2].c2w, atol=1e-9)
    assert [f.segment for f in read_trajectory_json(tmp_path / "trajectory.json")] == [0, 0, 0, 0]


def test_pose_kind_is_written_per_frame_survives_a_remap_and_defaults_to_posed(tmp_path):
    with OutputWriter(tmp_path / "out") as writer:
        for i in range(4):
            f = posed(i, np.eye(4), segment=int(i >= 2))
            f.pose_kind = "rotation_only" if i % 2 else "posed"
            writer.add_frame(f)
        writer.remap_segment(1, 0, Sim3(2.0, rot_z(10), np.ones(3)))
    data = json.loads((tmp_path / "out" / "trajectory.json").read_text())
    assert [f["pose_kind"] for f in data["frames"]] == ["posed", "rotation_only"] * 2
    assert [f.pose_kind for f in read_trajectory(tmp_path / "out")] == ["posed", "rotation_only"] * 2
    for f in data["frames"]:  # a trajectory.json from before pose_kind existed reads as posed
        del f["pose_kind"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert {f.pose_kind for f in read_trajectory(tmp_path / "old.json")} == {"posed"}
    with pytest.raises(ValueError, match="pose_kind"):
        PosedFrame(0, 0.0, "a.png", np.eye(4), np.eye(3), 4, 4, pose_kind="guessed")


def test_moved_frames_are_rewritten_in_both_trajectory_files(tmp_path):
    writer = OutputWriter(tmp_path)
    poses = [np.eye(4) for _ in range(4)]
    for i, c2w in enumerate(poses):
        c2w[:3, 3] = [i, 0, 0]
        writer.add_frame(posed(i, c2w))
    correction = Sim3(2.0, rot_z(90), np.array([0.0, 1.0, 0.0]))
    assert writer.move_frames({2: correction, 3: correction}) == 2
    tum_before_close = [f.c2w for f in read_tum(tmp_path / "trajectory.tum")]  # TUM has no index: in order
    writer.close()
    for read in (read_trajectory_json(tmp_path / "trajectory.json"), read_tum(tmp_path / "trajectory.tum")):
        got = [f.c2w for f in read]
        for i in range(4):
            want = correction.apply_c2w(poses[i]) if i >= 2 else poses[i]
            np.testing.assert_allclose(got[i], want, atol=1e-6)
    np.testing.assert_allclose(tum_before_close[3][:3, 3], [0.0, 7.0, 0.0], atol=1e-6)


def _smooth_depth(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A slanted plane with a hole (depth 0, conf 0), as a tracked frame's map looks."""
    v, u = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.01 * u + 0.003 * v).astype(np.float32)
    conf = (0.5 + 0.5 * np.sin(0.1 * u) ** 2).astype(np.float32)
    depth[:10, :20] = 0.0
    conf[:10, :20] = 0.0
    return depth, conf


def test_depth_of_a_tracked_frame_is_marked_with_its_keyframes_and_stored_compact(tmp_path):
    depth, conf = _smooth_depth()
    K = np.array([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]])
    with OutputWriter(tmp_path) as writer:
        model = writer.write_depth(0, depth, conf, K, np.eye(4))
        derived = writer.write_depth(3, depth, conf, K, np.eye(4), keyframes=[0, 8])
    assert str(read_depth(tmp_path, 0)["source"]) == "model"
    np.testing.assert_array_equal(read_depth(tmp_path, 0)["depth"], depth)  # the model's maps stay exact
    back = read_depth(tmp_path, 3)
    assert str(back["source"]) == "keyframes" and back["keyframes"].tolist() == [0, 8]
    assert back["depth"].dtype == np.float32 and back["conf"].dtype == np.float32
    np.testing.assert_allclose(back["depth"], depth, rtol=2.5e-4, atol=0)
    np.testing.assert_allclose(back["conf"], conf, rtol=2.5e-4, atol=0)
    assert (back["depth"][:10, :20] == 0).all() and (back["conf"][:10, :20] == 0).all()
    assert derived.stat().st_size < 0.5 * model.stat().st_size


def test_depth_files_follow_loop_closures_reattachments_and_focal_changes_and_stay_compact(tmp_path):
    depth, conf = _smooth_depth()
    K = np.array([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]])
    move = Sim3(2.0, rot_z(30), np.array([1.0, 0.0, 0.0]))
    with OutputWriter(tmp_path) as writer:
        for i in range(4):
            writer.add_frame(posed(i, np.eye(4), segment=int(i >= 2)))
            writer.write_depth(i, depth, conf, K, np.eye(4), keyframes=None if i % 2 == 0 else [i - 1, i + 1])
        compact = (tmp_path / "depth" / "000001.npz").stat().st_size
        writer.move_frames({0: move, 1: move})  # a loop closure moved frames 0 and 1
        writer.remap_segment(1, 0, move)  # segment 1 (frames 2, 3) re-attached
        writer.scale_focal(0, 1.1)
    for i in range(4):
        back = read_depth(tmp_path, i)
        np.testing.assert_allclose(back["c2w"], move.apply_c2w(np.eye(4)), atol=1e-9)
        np.testing.assert_allclose(back["depth"], 2.0 * depth, rtol=5e-4)
        assert back["K"][0, 0] == pytest.approx(110.0) and back["K"][0, 2] == pytest.approx(64.0)
        assert str(back["source"]) == ("model" if i % 2 == 0 else "keyframes")
    assert (tmp_path / "depth" / "000001.npz").stat().st_size < 1.2 * compact


def test_a_windows_tracked_frames_observations_come_back_with_the_rows_read_sparse_gives(tmp_path):
    """Two windows' sparse files: the second window's tracked frame 5 saw its points 1 and 0; read back,
    they are rows 3 and 2 of ``read_sparse``'s points (after the first window's two) and K is its window's."""
    from stream4d.contracts import SparseTracks
    from stream4d.outputs import read_held_tracks, read_sparse

    def tracks(offset: float, focal: float) -> SparseTracks:
        K = np.array([[focal, 0.0, 15.5], [0.0, focal, 11.5], [0.0, 0.0, 1.0]])
        return SparseTracks(np.array([[0.0, 0.0, 2.0 + offset], [1.0, 0.0, 3.0 + offset]]), np.zeros((2, 3), np.uint8),
                            np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), np.zeros((4, 2)), np.stack([K, K]))

    seen = np.array([[3.0, 4.0], [5.0, 6.0]])
    with OutputWriter(tmp_path) as writer:
        writer.write_sparse(0, 0, np.array([0, 2]), tracks(0.0, 20.0))
        writer.write_sparse(1, 0, np.array([2, 8]), tracks(1.0, 21.0), [(5, np.array([1, 0]), seen)])
    points = read_sparse(tmp_path, 0).points
    (first,) = list(read_held_tracks(tmp_path, 0))
    rows, xy, K = first[5]
    np.testing.assert_array_equal(rows, [3, 2])
    np.testing.assert_allclose(points[rows], [[1.0, 0.0, 4.0], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(xy, seen)
    assert K[0, 0] == 21.0
    assert list(read_held_tracks(tmp_path, 1)) == []
