"""``final_ba``: the finished run's keyframes and tracks adjusted together, every output following them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import exact_run

from memory.gaussians import read_splats_ply
from recon.tracking import interpolate_pose
from stream4d.geometry import Sim3, rotation_from_quat_wxyz, umeyama
from stream4d.outputs import OutputWriter, PosedFrame, read_sparse, read_trajectory_json
from stream4d.pipeline.final_ba import final_bundle_adjustment, frame_corrections, window_corrections

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(synthetic_clip, tmp_path_factory) -> dict[str, Path]:
    """The clip reconstructed twice, the same way, without and with ``final_ba`` (runs are deterministic).
    Loop closure is off: the clip closes a loop, and a world with accepted loops is not adjusted."""
    from stream4d.pipeline import ReconstructConfig, reconstruct

    outs = {}
    for name, final_ba in (("base", False), ("ba", True)):
        outs[name] = tmp_path_factory.mktemp(name)
        config = ReconstructConfig(rrd=False, final_ba=final_ba).override(
            {"align.window": 10, "align.overlap": 3, "align.loop_closure.enabled": False})
        reconstruct(synthetic_clip, outs[name], config, progress=False)
    return outs


def test_final_ba_writes_the_adjusted_trajectory_and_the_splats_follow_it(runs):
    record = json.loads((runs["ba"] / "run.json").read_text())["final_ba"]
    assert record["applied"], record
    assert record["images"] >= 3 and record["points"] > 0 and record["observations"] > 0
    assert record["reprojection_after_px"] <= record["reprojection_before_px"]
    base = read_trajectory_json(runs["base"] / "trajectory.json")
    ba = read_trajectory_json(runs["ba"] / "trajectory.json")
    assert [f.index for f in ba] == [f.index for f in base] and record["frames_moved"] == len(ba)
    assert [f.pose_kind for f in ba] == [f.pose_kind for f in base]
    moved = max(np.abs(a.c2w - b.c2w).max() for a, b in zip(ba, base))
    assert moved > 1e-6  # the adjusted poses are what was written
    # trajectory.tum agrees with trajectory.json
    tum = np.loadtxt(runs["ba"] / "trajectory.tum")
    np.testing.assert_allclose(tum[:, 1:4], np.stack([f.c2w[:3, 3] for f in ba]), atol=1e-5)
    # The splats moved with the frames of their window: each splat moved as (nearly) the correction
    # of some frame, trajectory.json after against before, moves it.
    means_base = read_splats_ply(runs["base"] / "splats.ply").means.astype(np.float64)
    means_ba = read_splats_ply(runs["ba"] / "splats.ply").means.astype(np.float64)
    assert means_base.shape == means_ba.shape
    corrections = [b.c2w @ np.linalg.inv(a.c2w) for a, b in zip(base, ba)]
    residual = np.min([np.linalg.norm(means_base @ T[:3, :3].T + T[:3, 3] - means_ba, axis=1)
                       for T in corrections], axis=0)
    shift = np.linalg.norm(means_ba - means_base, axis=1)
    assert np.median(residual) < 0.1 * np.median(shift), (np.median(residual), np.median(shift))
    # The adjusted sparse points reproject through the written poses as well as the adjustment said.
    sparse = read_sparse(runs["ba"])
    by_index = {f.index: f for f in ba}
    errs = []
    for p, i, xy in zip(sparse.obs_point, sparse.obs_frame, sparse.obs_xy):
        w2c = np.linalg.inv(by_index[int(i)].c2w)
        x = sparse.K[int(i)] @ (w2c[:3, :3] @ sparse.points[p] + w2c[:3, 3])
        errs.append(np.linalg.norm(x[:2] / x[2] - xy))
    assert np.median(errs) < 1.0


def test_final_ba_refines_a_self_calibrated_focal_and_every_k_follows(synthetic_clip, tmp_path):
    """Intrinsics hidden (the images alone): the adjustment refines the stream's one focal length, which
    moves towards the rendered one, and trajectory.json, depth/ and sparse/ all carry the refined K."""
    from stream4d.pipeline import ReconstructConfig, reconstruct

    out = tmp_path / "hidden"
    config = ReconstructConfig(rrd=False, gaussians=False, final_ba=True).override(
        {"align.window": 10, "align.overlap": 3, "align.loop_closure.enabled": False})  # loops: not adjusted
    reconstruct(synthetic_clip / "images", out, config, progress=False)
    run = json.loads((out / "run.json").read_text())
    record, calib = run["final_ba"], run["intrinsics"]
    assert record["applied"] and record["focal"]["refined"], record
    before, after = record["focal"]["focal_px_before"], record["focal"]["focal_px_after"]
    truth = json.loads((synthetic_clip / "cameras.json").read_text())["frames"][0]["K"][0][0]
    truth_model = truth * calib["model_size"][0] / json.loads((synthetic_clip / "cameras.json").read_text())[
        "frames"][0]["width"]
    assert abs(after - truth_model) <= abs(before - truth_model) + 1e-3 * truth_model, (before, after, truth_model)
    scale = record["focal"]["scale"]
    frames = read_trajectory_json(out / "trajectory.json")
    model_to_input = frames[0].width / calib["model_size"][0]
    for f in frames:  # every frame of the (single) segment took the one refined focal; principal points kept
        np.testing.assert_allclose(f.K[0, 0] / model_to_input, after, rtol=1e-4)
        np.testing.assert_allclose(f.K[:2, 2], [(f.width - 1) / 2, (f.height - 1) / 2], atol=1.0)
    sparse = read_sparse(out)
    np.testing.assert_allclose([K[0, 0] for K in sparse.K.values()], after, rtol=1e-4)
    assert scale != 1.0


def test_scale_focal_keeps_principal_points_and_depth_follows(tmp_path):
    from stream4d.outputs import read_depth

    K = np.array([[400.0, 0.0, 159.5], [0.0, 410.0, 119.5], [0.0, 0.0, 1.0]])
    scaled = [[440.0, 0.0, 159.5], [0.0, 451.0, 119.5], [0.0, 0.0, 1.0]]
    with OutputWriter(tmp_path / "run") as writer:
        writer.add_frame(PosedFrame(0, 0.0, "0.png", np.eye(4), K, 320, 240))
        writer.add_frame(PosedFrame(1, 0.1, "1.png", np.eye(4), K, 320, 240, segment=1))
        writer.write_depth(0, np.ones((24, 32), np.float32), np.ones((24, 32), np.float32), K / [[10], [10], [1]],
                           np.eye(4))
        assert writer.scale_focal(0, 1.1) == 1
        first, second = writer.posed_frames()
    np.testing.assert_allclose(first.K, scaled)
    np.testing.assert_allclose(second.K, K)  # another segment is another camera solve
    np.testing.assert_allclose(read_depth(tmp_path / "run", 0)["K"], np.array(scaled) / [[10], [10], [1]], rtol=1e-6)


def test_windows_that_self_calibrated_apart_all_take_the_adjusted_focal(tmp_path):
    """Windows 0 and 1 wrote focal 400 and 420 (model pixels); the adjustment solved every keyframe with
    one camera and ended at 410: each window's sparse K, and the K of every frame it posed (input pixels,
    twice the model's), end at 410 whatever their own was. A frame of a window without tracks takes the
    plain factor."""
    from stream4d.contracts import SparseTracks

    def K_of(f):
        return np.array([[f, 0.0, 159.5], [0.0, f, 119.5], [0.0, 0.0, 1.0]])

    frame_window = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2}
    own = {0: 400.0, 1: 420.0, 2: 415.0}
    with OutputWriter(tmp_path / "run") as writer:
        for i, w in frame_window.items():
            writer.add_frame(PosedFrame(i, 0.1 * i, f"{i}.png", np.eye(4), np.diag([2.0, 2.0, 1.0]) @ K_of(own[w]), 640, 480))
        for w in (0, 1):
            views = [i for i, v in frame_window.items() if v == w]
            writer.write_sparse(w, 0, np.array(views), SparseTracks(
                np.zeros((1, 3)), np.zeros((1, 3), np.uint8), np.zeros(2, np.int64), np.arange(2), np.zeros((2, 2)),
                np.stack([K_of(own[w])] * 2)))
        focals = writer.sparse_focals(0)
        assert focals == {0: 400.0, 1: 420.0}
        writer.scale_focal(0, 1.01, {w: 410.0 / f for w, f in focals.items()}, frame_window)
        K_after = {f.index: f.K for f in writer.posed_frames()}
    for i in range(4):
        assert K_after[i][0, 0] == pytest.approx(820.0) and K_after[i][1, 1] == pytest.approx(820.0)
    assert K_after[4][0, 0] == pytest.approx(2 * 415.0 * 1.01)
    np.testing.assert_allclose([K[0, 0] for K in read_sparse(tmp_path / "run").K.values()], 410.0)


def test_frame_and_window_corrections_recover_a_known_motion():
    rng = np.random.default_rng(0)
    frames, new = [], {}
    motion = Sim3(1.0, rotation_from_quat_wxyz(np.array([0.99, 0.05, -0.08, 0.02])), np.array([0.3, -0.1, 0.2]))
    for i in range(6):
        c2w = np.eye(4)
        c2w[:3, :3] = rotation_from_quat_wxyz(np.r_[1.0, rng.normal(0, 0.1, 3)])
        c2w[:3, 3] = [0.5 * i, 0.0, 0.1 * i]
        frames.append(PosedFrame(i, 0.1 * i, f"{i}.png", c2w, np.eye(3), 10, 10))
        if i % 2 == 0:  # keyframes 0, 2, 4 adjusted; 1, 3 between them, 5 after the last
            new[i] = motion.apply_c2w(c2w)
    old = {i: frames[i].c2w for i in new}
    moves = frame_corrections(frames, old, new)
    for f in frames:  # one rigid motion for all: the frames between keyframes take it too
        np.testing.assert_allclose(moves[f.index].apply_c2w(f.c2w), motion.apply_c2w(f.c2w), atol=1e-9)
    windows = window_corrections(frames, moves, {i: i // 3 for i in range(6)}, depth=2.0)
    for sim3 in windows.values():
        np.testing.assert_allclose(sim3.matrix(), motion.matrix(), atol=1e-9)


def test_tracked_frames_are_solved_again_on_the_adjusted_points(tmp_path):
    """The demo clip (48 frames, most tracked between keyframes): tracked frames join the adjustment with
    a subset of the observations their tracking kept, and are solved again on all of them after it; the
    finished run's sparse files no longer hold them."""
    from stream4d.evaluation.report import load_reference
    from stream4d.pipeline import ReconstructConfig, reconstruct
    from stream4d.pipeline.resolve_tracked import OBSERVATIONS_IN_ADJUSTMENT

    demo = REPO / "data" / "demo"
    reconstruct(demo / "demo.mp4", tmp_path, ReconstructConfig(rrd=False, gaussians=False), progress=False)
    record = json.loads((tmp_path / "run.json").read_text())["final_ba"]
    frames = read_trajectory_json(tmp_path / "trajectory.json")
    tracked = [f for f in frames if f.pose_kind == "tracked"]
    assert record["applied"] and len(tracked) >= 10, record
    assert len(tracked) / 2 <= record["frames_resolved"] <= len(tracked), record
    assert len(tracked) / 2 <= record["tracked_frames_held"] <= len(tracked), record
    assert 0 < record["tracked_observations_held"] <= OBSERVATIONS_IN_ADJUSTMENT * record["tracked_frames_held"]
    for path in (tmp_path / "sparse").glob("*.npz"):
        with np.load(path) as data:
            assert not [k for k in data.files if k.startswith("held_")], path
    # The re-solved frames lie where the clip's exact cameras put them, as closely as the keyframes do.
    truth = {f.index: f.c2w for f in load_reference(demo / "cameras.json")}
    ours = np.stack([f.c2w[:3, 3] for f in frames])
    exact = np.stack([truth[f.index][:3, 3] for f in frames])
    fit = umeyama(ours, exact)
    error = np.linalg.norm(fit.apply(ours) - exact, axis=1)
    is_tracked = np.array([f.pose_kind == "tracked" for f in frames])
    assert np.sqrt(np.mean(error[is_tracked] ** 2)) < 2.0 * np.sqrt(np.mean(error[~is_tracked] ** 2))


def test_a_frame_follows_the_keyframes_of_the_window_that_posed_it():
    """Keyframe 3 (window 0) is corrected on its own; frames 4 and 5 were posed by window 1 from its
    own view of 3, so they follow window 1's keyframe 6, not 3. A relocated keyframe anchors no one."""
    frames = [PosedFrame(i, 0.1 * i, f"{i}.png", _at(i), np.eye(3), 10, 10) for i in range(7)]
    old = {i: _at(i) for i in (0, 3, 6)}
    new = {**old, 3: _at(3, y=0.1)}
    window = {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1}

    def centre_y(moves):
        return [round(float(moves[f.index].apply_c2w(f.c2w)[1, 3]), 9) for f in frames]

    assert centre_y(frame_corrections(frames, old, new)) == pytest.approx([0, 0.1 / 3, 0.2 / 3, 0.1, 0.2 / 3, 0.1 / 3, 0])
    assert centre_y(frame_corrections(frames, old, new, window)) == pytest.approx([0, 0.1 / 3, 0.2 / 3, 0.1, 0, 0, 0])
    assert centre_y(frame_corrections(frames, old, new, window, not_anchors=[3])) == pytest.approx([0, 0, 0, 0.1, 0, 0, 0])



def test_an_interpolated_frame_is_blended_again_between_its_keyframes_where_they_went():
    """Frames 4 and 5 are interpolated (tracking failed) between keyframes 3 and 6, from window 1's own
    view of 3, which sat apart from where 3 was written: after the adjustment they lie on the blend of
    the adjusted 3 and 6 by timestamp, whatever window and anchor rules say for tracked frames."""
    kinds = {4: "interpolated", 5: "interpolated"}
    frames = [PosedFrame(i, 0.1 * i, f"{i}.png", _at(i, y=0.05 if i in kinds else 0.0), np.eye(3), 10, 10,
                         pose_kind=kinds.get(i, "posed")) for i in range(7)]
    old = {i: _at(i) for i in (0, 3, 6)}
    new = {**old, 3: _at(3, y=0.1)}
    moves = frame_corrections(frames, old, new, {i: int(i > 3) for i in range(7)}, not_anchors=[3])
    after = {f.index: moves[f.index].apply_c2w(f.c2w) for f in frames}
    for i in (4, 5):
        assert after[i][:3, 3] == pytest.approx([i, 0.1 * (6 - i) / 3, 0.0])
        assert after[i][:3, :3] == pytest.approx(np.eye(3))
    assert after[1][1, 3] == pytest.approx(0.0)  # tracked-like frames of window 0 keep their rule



def test_a_rotation_only_keyframe_takes_the_blend_of_the_posed_centres_and_keeps_its_rotation():
    """Keyframe 3 only got a rotation (its window kept the camera where it was, at y = 0.2): its centre
    goes where the adjusted posed keyframes 0 and 6 put it, its rotation is its own; the interpolated
    frames 4 and 5 blend the moved 3 and 6."""
    turned = _at(3, y=0.2)
    turned[:3, :3] = rotation_from_quat_wxyz(np.array([np.cos(0.1), 0.0, 0.0, np.sin(0.1)]))
    kinds = {3: "rotation_only", 4: "interpolated", 5: "interpolated"}
    frames = [PosedFrame(i, 0.1 * i, f"{i}.png", turned if i == 3 else _at(i), np.eye(3), 10, 10,
                         pose_kind=kinds.get(i, "posed")) for i in (0, 3, 4, 5, 6)]
    old = {i: _at(i) for i in (0, 6)}
    new = {0: _at(0), 6: _at(6, y=0.3)}
    moves = frame_corrections(frames, old, new)
    after = {f.index: moves[f.index].apply_c2w(f.c2w) for f in frames}
    assert after[3][:3, 3] == pytest.approx([3, 0.15, 0])
    assert after[3][:3, :3] == pytest.approx(turned[:3, :3])
    assert after[4][:3, 3] == pytest.approx([4, 0.2, 0])
    assert after[4][:3, :3] == pytest.approx(interpolate_pose(turned, np.eye(4), 1 / 3)[:3, :3])


def _at(x: float, y: float = 0.0) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, 3] = [x, y, 0.0]
    return c2w


def test_final_ba_without_tracks_or_keyframes_is_skipped_and_moves_nothing(tmp_path):
    with OutputWriter(tmp_path / "no_tracks") as writer:
        for v in range(4):
            writer.add_frame(PosedFrame(v, 0.1 * v, f"{v}.png", np.eye(4), np.eye(3), 10, 10))
        record = final_bundle_adjustment(writer, 0, {v: 0 for v in range(4)})
        assert not record["applied"] and "no sparse tracks" in record["skipped"]
        assert all(np.array_equal(f.c2w, np.eye(4)) for f in writer.posed_frames())
    exact_run(tmp_path / "few")  # four keyframes seeing exact tracks; two are kept as keyframes
    frames = read_trajectory_json(tmp_path / "few" / "trajectory.json")
    with OutputWriter(tmp_path / "two") as writer:
        for f in frames:
            writer.add_frame(PosedFrame(f.index, f.timestamp, f.image, f.c2w, f.K, f.width, f.height,
                                        pose_kind="posed" if f.index < 2 else "tracked"))
        sparse = read_sparse(tmp_path / "few")
        from stream4d.contracts import SparseTracks

        writer.write_sparse(0, 0, np.arange(4), SparseTracks(sparse.points, sparse.colors, sparse.obs_point,
                                                             sparse.obs_frame, sparse.obs_xy,
                                                             np.stack([sparse.K[i] for i in range(4)])))
        record = final_bundle_adjustment(writer, 0, {v: 0 for v in range(4)})
        assert not record["applied"] and "2 keyframes" in record["skipped"]


def test_final_ba_without_pycolmap_is_refused_before_the_run(synthetic_clip, tmp_path):
    hide = tmp_path / "no_pycolmap"  # a pycolmap that cannot be imported shadows the installed one
    hide.mkdir()
    (hide / "pycolmap.py").write_text("raise ImportError('pycolmap hidden by the test')\n")
    env_path = f"{hide}:{REPO}"
    proc = subprocess.run([sys.executable, "-m", "stream4d.cli", "reconstruct", str(synthetic_clip), "--out",
                           str(tmp_path / "run"), "--final-ba", "--quiet"], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--final-ba needs pycolmap" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_finite_input_is_adjusted_by_default_as_when_asked(runs, synthetic_clip, tmp_path):
    """``final_ba`` None (the default) adjusts a finite input exactly as asking for it does, a run that saves
    a map too: the map's keyframes and trajectory follow the adjusted poses. A run that starts in a saved
    map is not adjusted unless asked (the loaded world is not in the adjustment) and says so."""
    from stream4d.pipeline import ReconstructConfig, reconstruct
    from stream4d.pipeline.maps import read_map

    overrides = {"align.window": 10, "align.overlap": 3, "align.loop_closure.enabled": False}
    default = ReconstructConfig(rrd=False)
    assert default.final_ba is None
    reconstruct(synthetic_clip, tmp_path / "default", default.override(overrides), progress=False)
    record = json.loads((tmp_path / "default" / "run.json").read_text())["final_ba"]
    assert record["applied"], record
    asked = read_trajectory_json(runs["ba"] / "trajectory.json")
    got = read_trajectory_json(tmp_path / "default" / "trajectory.json")
    np.testing.assert_allclose(np.stack([f.c2w for f in got]), np.stack([f.c2w for f in asked]), atol=1e-7)

    mapped = ReconstructConfig(rrd=False, gaussians=False, save_map=str(tmp_path / "map")).override(overrides)
    reconstruct(synthetic_clip, tmp_path / "mapped", mapped, progress=False)
    record = json.loads((tmp_path / "mapped" / "run.json").read_text())["final_ba"]
    saved = read_map(tmp_path / "map")
    assert record["applied"] and record["map_keyframes_moved"] == len(saved.keyframes) >= 3, record
    adjusted = read_trajectory_json(tmp_path / "mapped" / "trajectory.json")
    np.testing.assert_allclose(np.stack([f.c2w for f in adjusted]), np.stack([f.c2w for f in asked]), atol=1e-7)
    pose_of = {f.index: f.c2w for f in adjusted}
    for m in saved.keyframes:  # each keyframe where its frame now is, its points in front of it as before
        np.testing.assert_allclose(m.c2w, pose_of[m.frame_index], atol=1e-6)
        w2c = np.linalg.inv(m.c2w)
        z = m.keyframe.points @ w2c[2, :3] + w2c[2, 3]
        np.testing.assert_allclose(z, m.keyframe.depth, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.stack([f["c2w"] for f in saved.frames]), np.stack([f.c2w for f in adjusted]),
                               atol=1e-6)

    resumed = ReconstructConfig(rrd=False, gaussians=False, map_from=str(tmp_path / "map")).override(overrides)
    reconstruct(synthetic_clip, tmp_path / "resumed", resumed, progress=False)
    record = json.loads((tmp_path / "resumed" / "run.json").read_text())["final_ba"]
    assert not record["applied"] and "saved map" in record["skipped"], record


def test_without_pycolmap_the_default_run_goes_unadjusted_and_says_why(synthetic_clip, tmp_path):
    """Not asked for, the adjustment is not a reason to fail: the run ends as it would with
    --no-final-ba, and run.json names what is missing; --no-final-ba records nothing."""
    hide = tmp_path / "no_pycolmap"
    hide.mkdir()
    (hide / "pycolmap.py").write_text("raise ImportError('pycolmap hidden by the test')\n")
    runs = {}
    for name, flags, env_path in (("default", [], f"{hide}:{REPO}"), ("off", ["--no-final-ba"], str(REPO))):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "stream4d.cli", "reconstruct", str(synthetic_clip), "--out",
                               str(out), "--quiet", "--no-rrd", "--no-gaussians", "--window", "10", "--overlap", "3",
                               "--no-loop-closure", *flags], capture_output=True, text=True, timeout=300, cwd=REPO,
                              env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = json.loads((out / "run.json").read_text())
    assert runs["default"]["final_ba"] == {"applied": False,
                                           "skipped": "pycolmap is not installed (pip install 'stream4d[ba]')"}
    assert runs["default"]["config"]["final_ba"] is None
    assert runs["off"]["final_ba"] is None and runs["off"]["config"]["final_ba"] is False
    poses = [np.stack([f.c2w for f in read_trajectory_json(tmp_path / name / "trajectory.json")]) for name in runs]
    np.testing.assert_allclose(*poses, atol=1e-7)


def test_a_live_input_ignores_final_ba(synthetic_clip, tmp_path, caplog):
    import cv2

    from recon.ingest.options import IngestOptions
    from recon.ingest.push import PushSource
    from stream4d.pipeline import ReconstructConfig, reconstruct

    src = PushSource("live", capacity=64, options=IngestOptions(resize=None))
    for i, path in enumerate(sorted((synthetic_clip / "images").iterdir())[:12]):
        src.push(cv2.imread(str(path))[..., ::-1].copy(), i / 10.0)
    src.close()
    config = ReconstructConfig(rrd=False, gaussians=False, final_ba=True).override(
        {"align.window": 6, "align.overlap": 2, "ingest.resize": None})
    with caplog.at_level("INFO", logger="stream4d.pipeline"):
        reconstruct(src, tmp_path / "out", config, progress=False)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["final_ba"] == {"applied": False, "skipped": "live input"}
    assert "final_ba ignored" in caplog.text
    assert run["stats"]["frames_posed"] > 0


def test_a_point_the_adjustment_cannot_fit_is_lost_not_counted_against_the_rest(tmp_path):
    """A false track (its two views see different points) stays far off whatever the adjustment does:
    it is marked lost (a NaN row) and the errors before and after are those of the other points."""
    from dataclasses import replace

    from align.bundle import bundle_adjust
    from stream4d.export import load_scene

    exact_run(tmp_path / "run")
    scene = load_scene(tmp_path / "run")
    obs_xy = scene.obs_xy.copy()
    first = np.nonzero(scene.obs_point == 0)[0]
    obs_xy[first[0]] += [25.0, -18.0]  # point 0 seen where it is not, in one view
    adjusted = bundle_adjust(replace(scene, obs_xy=obs_xy))
    assert adjusted.points_lost == 1 and np.isnan(adjusted.points[0]).all()
    assert np.isfinite(adjusted.points[1:]).all()
    # the others: exact before, and after barely pulled by the false observation (Huber loss)
    assert adjusted.reprojection_before_px < 1e-6 and adjusted.reprojection_after_px < 0.05
    exact = bundle_adjust(scene)
    assert exact.points_lost == 0 and np.isfinite(exact.points).all()


@pytest.mark.parametrize("second_focal", [151.0, 180.0])
def test_windows_solved_with_different_focals_share_one_camera_only_when_it_fits(tmp_path, second_focal):
    """Self-calibrated windows each solve their own focal (150 px and ``second_focal``); every observation
    agrees with its own window's K. Close focals: the keyframes get one camera to refine, and no track
    that disagrees with that shared starting focal is thrown away first. Far apart (150 / 180 px, as
    forward motion leaves them): one camera would start several pixels off every track, so the run is
    left as aligned, and run.json says why. The windows share frames 2 and 3, as overlapping windows do
    (windows sharing fewer than two keyframes are not adjusted at all)."""
    from stream4d.contracts import SparseTracks

    rng = np.random.default_rng(5)
    points = rng.uniform([-1, -1, 4], [1, 1, 6], (200, 3))
    with OutputWriter(tmp_path / "run") as writer:
        for window, focal in enumerate((150.0, second_focal)):
            K = np.array([[focal, 0, 79.5], [0, focal, 59.5], [0, 0, 1]])
            obs_point, obs_view, obs_xy, views = [], [], [], range(2 * window, 2 * window + 4)
            for k, v in enumerate(views):
                c2w = np.eye(4)
                c2w[:3, 3] = [0.15 * v, 0.02 * v, 0.0]
                if v >= 2 * window + 2 or window == 0:
                    writer.add_frame(PosedFrame(v, 0.1 * v, f"{v}.png", c2w, K, 160, 120))
                pc = points - c2w[:3, 3]
                uv = pc @ K.T
                uv = uv[:, :2] / uv[:, 2:]
                seen = np.nonzero((uv[:, 0] >= 0) & (uv[:, 0] < 159) & (uv[:, 1] >= 0) & (uv[:, 1] < 119))[0]
                obs_point.append(seen)
                obs_view.append(np.full(len(seen), k))
                obs_xy.append(uv[seen])
            tracks = SparseTracks(points, np.zeros((len(points), 3), np.uint8), np.concatenate(obs_point),
                                  np.concatenate(obs_view), np.concatenate(obs_xy), np.repeat(K[None], 4, axis=0))
            writer.write_sparse(window, 0, np.array(views), tracks)
        observations = len(read_sparse(tmp_path / "run").obs_point)
        before = [f.c2w.copy() for f in writer.posed_frames()]
        record = final_bundle_adjustment(writer, 0, {v: min(v // 2, 1) for v in range(6)}, refine_focal=True)
        after = [f.c2w for f in writer.posed_frames()]
    if second_focal < 160:
        assert record["observations"] == observations, record  # none dropped against the shared focal
        assert record["applied"] and record["focal"]["refined"], record
        return
    assert not record["applied"] and not record["focal"]["refined"], record
    assert record["focal"]["focal_px"] == [150.0, 180.0]
    assert "self-calibrated apart (focal 150.0-180.0 px)" in record["skipped"]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_relocated_frame_is_left_out_and_follows_its_neighbours(tmp_path):
    """A frame the loop closure re-posed by PnP keeps its tracks from the window that mis-placed it:
    the adjustment leaves it out (run.json lists it) and it moves with its neighbours' correction."""
    exact_run(tmp_path / "run")
    frames = read_trajectory_json(tmp_path / "run" / "trajectory.json")
    with _noisy_copy(tmp_path / "run", tmp_path / "adjusted", seed=1) as writer:
        record = final_bundle_adjustment(writer, 0, {v: 0 for v in range(4)}, exclude_frames={3, 17})
        after = {f.index: f.c2w for f in writer.posed_frames()}
    assert record["applied"] and record["images"] == 3 and record["frames_left_out"] == [3], record
    # frame 3 took frame 2's correction (the nearest adjusted keyframe at the end)
    by_index = {f.index: f.c2w for f in frames}
    move_2 = after[2] @ np.linalg.inv(by_index[2])
    np.testing.assert_allclose(after[3], move_2 @ by_index[3], atol=1e-9)


def test_a_relocated_frame_is_held_by_the_matches_that_relocated_it(tmp_path):
    """The relocation's PnP inliers (frame 3 against frame 0's keypoints) hold the relocated frame in the
    adjustment instead of its window's tracks, which were made with the pose the relocation replaced
    (here 8 px off in frame 3): it is adjusted with the others and stays where it is."""
    from align.globalmap import LoopPairs

    truth = exact_run(tmp_path / "run")
    sparse = read_sparse(tmp_path / "run")
    with _noisy_copy(tmp_path / "run", tmp_path / "adjusted", seed=1, spoiled_frame=3) as writer:
        noisy = read_sparse(tmp_path / "adjusted")
        seen_0 = noisy.obs_frame == 0
        both = np.intersect1d(noisy.obs_point[seen_0], sparse.obs_point[sparse.obs_frame == 3])
        at_0 = {int(p): xy for p, xy in zip(noisy.obs_point[seen_0], noisy.obs_xy[seen_0])}
        w2c = np.linalg.inv(truth["c2w"][3])
        pc = truth["points"][both] @ w2c[:3, :3].T + w2c[:3, 3]
        x = pc @ truth["K"].T
        relocation = LoopPairs(3, 0, (x[:, :2] / x[:, 2:]).astype(np.float32),
                               np.array([at_0[int(p)] for p in both], np.float32))
        record = final_bundle_adjustment(writer, 0, {v: 0 for v in range(4)}, exclude_frames={3},
                                         loop_pairs=[relocation])
        after = [f.c2w for f in writer.posed_frames()]
    assert record["applied"] and record["images"] == 4 and record["frames_held_by_loop_matches"] == [3], record
    assert "frames_left_out" not in record
    for a, t in zip(after, truth["c2w"]):
        assert np.linalg.norm(a[:3, 3] - t[:3, 3]) < 0.03


@pytest.mark.parametrize("second", [(2, 3), (1, 2, 3)])
def test_a_window_tied_to_the_rest_by_one_keyframe_is_not_adjusted(tmp_path, second):
    """Two windows' tracks: the first's in frames 0-2, the second's in ``second``. One shared view (frame 2)
    leaves the second window's scale free about that camera (a segment re-attached across a gap, placed
    by a pose-graph link no track carries): nothing is adjusted and the window is named. Two shared
    views tie it: adjusted."""
    from stream4d.contracts import SparseTracks

    exact_run(tmp_path / "run")
    frames = read_trajectory_json(tmp_path / "run" / "trajectory.json")
    sparse = read_sparse(tmp_path / "run")
    writer = OutputWriter(tmp_path / "two")
    for f in frames:
        writer.add_frame(f)
    K = np.stack([sparse.K[i] for i in range(4)])
    noise = np.random.default_rng(5).normal(0.0, 0.3, sparse.obs_xy.shape)
    for window, views in ((0, (0, 1, 2)), (1, second)):
        rows = np.isin(sparse.obs_frame, views)
        writer.write_sparse(window, 0, np.arange(4), SparseTracks(sparse.points, sparse.colors, sparse.obs_point[rows],
                                                                  sparse.obs_frame[rows], sparse.obs_xy[rows] + noise[rows], K))
    with writer:
        before = [f.c2w.copy() for f in writer.posed_frames()]
        record = final_bundle_adjustment(writer, 0, {0: 0, 1: 0, 2: 1, 3: 1})
        after = [f.c2w for f in writer.posed_frames()]
    if len(second) == 3:
        assert record["applied"] and "windows_untied" not in record, record
        return
    assert not record["applied"] and record["windows_untied"] == [1], record
    assert "window(s) 1 share fewer than two keyframes" in record["skipped"]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_segment_re_attached_across_a_gap_is_tied_by_its_links_matches(tmp_path):
    """Windows 0 (frames 0-1) and 1 (frames 2-3) share no frame: a re-attachment link placed window 1, and
    without its matches no track ties it (nothing is adjusted, the window is named). The link's matches
    between frames 2 and 1 fall on keypoints both windows' tracks observe: each makes two tracks one,
    which ties window 1's scale and place, and the adjustment keeps the exact poses."""
    from align.globalmap import LoopPairs
    from stream4d.contracts import SparseTracks

    truth = exact_run(tmp_path / "run")
    frames = read_trajectory_json(tmp_path / "run" / "trajectory.json")
    sparse = read_sparse(tmp_path / "run")
    K = np.stack([sparse.K[i] for i in range(4)])
    xy = sparse.obs_xy + np.random.default_rng(6).normal(0.0, 0.3, sparse.obs_xy.shape)
    writer = OutputWriter(tmp_path / "linked")
    for f in frames:
        writer.add_frame(f)
    for window, views in ((0, (0, 1)), (1, (2, 3))):
        rows = np.isin(sparse.obs_frame, views)
        writer.write_sparse(window, 0, np.arange(4), SparseTracks(sparse.points, sparse.colors, sparse.obs_point[rows],
                                                                  sparse.obs_frame[rows], xy[rows], K))
    both = np.intersect1d(sparse.obs_point[sparse.obs_frame == 2], sparse.obs_point[sparse.obs_frame == 1])
    pixel = {(int(p), int(v)): xy[k] for k, (p, v) in enumerate(zip(sparse.obs_point, sparse.obs_frame))}
    link = LoopPairs(2, 1, np.array([pixel[p, 2] for p in both.tolist()], np.float32),
                     np.array([pixel[p, 1] for p in both.tolist()], np.float32))
    frame_window = {0: 0, 1: 0, 2: 1, 3: 1}
    with writer:
        untied = final_bundle_adjustment(writer, 0, frame_window)
        assert not untied["applied"] and untied["windows_untied"] == [1], untied
        tied = final_bundle_adjustment(writer, 0, frame_window, loop_pairs=[link])
        after = [f.c2w for f in writer.posed_frames()]
    assert tied["applied"] and "windows_untied" not in tied, tied
    # Each match fits; the few whose point one window sees in one frame only (no track of it there) extend or
    # add a track instead.
    assert tied["loop_tracks"] == len(both) and tied["tracks_merged"] >= 0.9 * len(both) >= 30, tied
    for a, t in zip(after, truth["c2w"]):
        assert np.linalg.norm(a[:3, 3] - t[:3, 3]) < 0.03


def _noisy_copy(src: Path, out: Path, seed: int, spoiled_frame: int | None = None) -> OutputWriter:
    """``src``'s exact run written again with 0.3 px noise on its tracks (an open writer); the observations
    in ``spoiled_frame`` 8 px off besides."""
    from stream4d.contracts import SparseTracks

    frames = read_trajectory_json(src / "trajectory.json")
    sparse = read_sparse(src)
    noise = np.random.default_rng(seed).normal(0.0, 0.3, sparse.obs_xy.shape)
    noise[sparse.obs_frame == spoiled_frame, 0] += 8.0
    writer = OutputWriter(out)
    for f in frames:
        writer.add_frame(f)
    writer.write_sparse(0, 0, np.arange(4), SparseTracks(sparse.points, sparse.colors, sparse.obs_point,
                                                         sparse.obs_frame, sparse.obs_xy + noise,
                                                         np.stack([sparse.K[i] for i in range(4)])))
    return writer


def test_a_world_held_together_by_loop_closures_is_adjusted_only_with_the_loops_matches(tmp_path):
    """The tracks are each window's own: a loop the pose graph closed is not among them. Its matches
    (the PnP inliers between its two keyframes) join the adjustment; a loop whose
    matches do not fit the poses it left is not held, and then the world is not adjusted (it would open
    the loop again). Loops of another world's windows, and loops the chain already agreed with (they
    moved nothing), do not count."""
    from align.globalmap import LoopPairs

    truth = exact_run(tmp_path / "run")
    frame_window = {0: 0, 1: 0, 2: 1, 3: 1}
    loop = {"query_window": 1, "match_window": 0, "query_frame": 3, "match_frame": 0, "moved": True}
    w2c = [np.linalg.inv(truth["c2w"][v]) for v in (3, 0)]
    uv = []
    for T in w2c:  # where the loop's 40 matched points are seen in frames 3 and 0 (model pixels)
        pc = truth["points"][:40] @ T[:3, :3].T + T[:3, 3]
        x = pc @ truth["K"].T
        uv.append((x[:, :2] / x[:, 2:]).astype(np.float32))
    matches = LoopPairs(3, 0, uv[0], uv[1])
    shuffled = LoopPairs(3, 0, uv[0], uv[1][np.random.default_rng(4).permutation(40)])
    with _noisy_copy(tmp_path / "run", tmp_path / "adjusted", seed=2) as writer:
        elsewhere = final_bundle_adjustment(writer, 0, frame_window, loops=[
            {"query_window": 7, "match_window": 2, "moved": True}, {"query_window": 1, "match_window": 0, "moved": False}])
        assert elsewhere["applied"] and elsewhere["loops_held"] == 0, elsewhere
        before = [f.c2w.copy() for f in writer.posed_frames()]
        for pairs in ([], [shuffled]):
            unheld = final_bundle_adjustment(writer, 0, frame_window, loops=[loop], loop_pairs=pairs)
            assert not unheld["applied"], unheld
            assert "1 loop closures moved this world's windows and have no tracks" in unheld["skipped"]
            assert all(np.array_equal(a, b) for a, b in zip(before, (f.c2w for f in writer.posed_frames())))
        held = final_bundle_adjustment(writer, 0, frame_window, loops=[loop], loop_pairs=[shuffled, matches])
        after = [f.c2w for f in writer.posed_frames()]
        # A second loop from the same window into the same place, its matches spoiled: the first holds it.
        again = {**loop, "query_frame": 2}
        spoiled = LoopPairs(2, 0, shuffled.query_uv, shuffled.match_uv)
        both = final_bundle_adjustment(writer, 0, frame_window, loops=[loop, again], loop_pairs=[matches, spoiled])
        assert both["applied"] and both["loops_held"] == 1, both
    assert held["applied"] and held["loops_held"] == 1 and held["loop_tracks"] == 40, held
    # The window's own tracks see frames 3 and 0: a match on one of their observations is held as it is,
    # the others are two-view tracks.
    assert held["points"] == elsewhere["points"] + held["loop_matches"]["two_view"] < elsewhere["points"] + 40
    assert len(read_sparse(tmp_path / "adjusted").points) == len(read_sparse(tmp_path / "run").points)
    for a, t in zip(after, truth["c2w"]):  # the exact poses kept, to the tracks' noise and the free gauge
        assert np.linalg.norm(a[:3, 3] - t[:3, 3]) < 0.03


def test_a_loop_is_held_by_a_path_of_held_loops_between_its_windows():
    from stream4d.pipeline.final_ba import _unheld_loops

    def loop(q, m, frame):
        return {"query_window": q, "match_window": m, "query_frame": frame, "match_frame": 0, "moved": True}

    held = [loop(17, 0, 1), loop(9, 0, 2), loop(30, 20, 3)]  # 17 and 9 both meet window 0
    across = loop(17, 9, 4)  # its own matches did not fit: the cycle 17 -> 0 <- 9 holds it
    beside = loop(17, 10, 5)  # as does it a neighbour of window 9's (they share frames)
    alone = loop(30, 9, 6)  # 30 is tied to 20 only: nothing holds it to 9
    unheld = _unheld_loops(held + [across, beside, alone], {(1, 0), (2, 0), (3, 0)})
    assert unheld == [alone]
    assert _unheld_loops([loop(1, 0, 7)], set()) == [loop(1, 0, 7)]  # a window is not a path to itself


def test_a_run_over_the_adjustments_budget_holds_its_longest_tracks(tmp_path):
    """The demo clip's adjustment holds about 46000 observations. With a budget of 20000 it holds each
    keyframe's longest tracks and then the longest overall; the points left out follow their window,
    the tracked frames are solved again on the adjusted points alone, and the run stays accurate."""
    from stream4d.evaluation import evaluate_output
    from stream4d.pipeline import ReconstructConfig, reconstruct

    demo = REPO / "data" / "demo"
    config = ReconstructConfig(rrd=False, gaussians=False, final_ba_max_observations=20000)
    reconstruct(demo / "demo.mp4", tmp_path, config, progress=False)
    record = json.loads((tmp_path / "run.json").read_text())["final_ba"]
    budget = record["budget"]
    assert record["applied"] and record["observations"] == budget["observations_held"], record
    assert budget["observations_held"] <= 20000 < budget["of_observations"]
    assert budget["points_held"] < budget["of_points"] and record["frames_resolved"] > 0
    sparse = read_sparse(tmp_path)
    assert sparse.num_points == budget["of_points"] and np.isfinite(sparse.points).all()
    t = evaluate_output(tmp_path, demo / "cameras.json")["trajectory"]
    assert t["coverage"] == 1.0 and t["ate_rmse"] <= 3e-4 * t["gt_path_length"], t
