"""A camera-rate video through the pipeline: parallax keyframes go to the window model, every other
frame is posed by tracking and written with ``pose_kind`` "tracked"."""

from __future__ import annotations

import json
from itertools import chain

import numpy as np
import pytest

from stream4d.evaluation.report import load_reference
from stream4d.evaluation.trajectory import evaluate_trajectory
from stream4d.outputs import read_depth, read_trajectory
from stream4d.pipeline import ReconstructConfig, reconstruct
from stream4d.pipeline.report import pose_summary
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence, write_sequence

W, H = 256, 192


@pytest.fixture(scope="module")
def slow_walk(tmp_path_factory):
    """2 s of a slow sideways walk at 30 fps (1 cm a frame), as an H.264 video with exact cameras."""
    out = tmp_path_factory.mktemp("walk30")
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 60, seed=0, scene=scene, step=0.01)
    write_sequence(out, render_sequence(scene, c2w, intrinsics_for(W, H), W, H, fps=30.0), video="clip.mp4", fps=30.0,
                   depth=True)
    return out


def _config(**kw) -> ReconstructConfig:
    base = {"gaussians": False, "rrd": False, "align.window": 8, "align.overlap": 3, "ingest.resize": None}
    return ReconstructConfig().override({**base, **kw})


def test_every_frame_of_a_video_is_posed_and_frames_between_keyframes_are_tracked(slow_walk, tmp_path):
    summary = reconstruct(slow_walk / "clip.mp4", tmp_path / "out", _config(), progress=False)
    s = summary.stats
    assert s.frames_received == 60 and s.frames_posed == 60
    assert 4 <= s.frames_keyframes <= 30  # far fewer than the frames: the camera moves 1 cm a frame
    assert s.frames_tracked + s.frames_interpolated == 60 - s.frames_keyframes
    assert s.frames_tracked >= 0.9 * (60 - s.frames_keyframes)
    assert f"{s.frames_tracked} tracked" in pose_summary(s) and "0 not posed" in pose_summary(s)

    pred = read_trajectory(tmp_path / "out")
    assert [p.index for p in pred] == list(range(60))  # in input order, none missing
    kinds = {p.pose_kind for p in pred}
    assert kinds <= {"posed", "tracked", "interpolated"} and {"posed", "tracked"} <= kinds
    assert s.frames_rotation_only == 0 and summary.stats.warnings == []
    gt = load_reference(slow_walk / "cameras.json")
    tracked = [p for p in pred if p.pose_kind == "tracked"]
    assert evaluate_trajectory(pred, gt).ate_rmse_rel_path < 0.01
    assert evaluate_trajectory(tracked, gt).ate_rmse_rel_path < 0.01

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["keyframes"]["policy"] == "parallax" and sum(run["keyframes"]["reasons"].values()) == s.frames_keyframes
    assert run["config"]["keyframes"]["policy"] == "auto"
    assert run["stats"]["frames_tracked"] == s.frames_tracked


def test_every_frame_as_a_keyframe_leaves_windows_of_a_slow_video_without_parallax(slow_walk, tmp_path):
    """What parallax keyframes are for: the same walk, every frame to the window model, 4-frame windows
    (3 cm from first to last view; with 8-frame windows the views 7 cm apart already give parallax)."""
    config = _config(**{"keyframes.policy": "all", "ingest.max_frames": 12, "align.window": 4, "align.overlap": 1})
    summary = reconstruct(slow_walk / "clip.mp4", tmp_path / "out", config, progress=False)
    assert summary.stats.frames_keyframes == 12 and summary.stats.frames_tracked == 0
    pred = read_trajectory(tmp_path / "out")
    assert len(pred) == 12 and {p.pose_kind for p in pred} == {"rotation_only"}
    assert np.isfinite([p.c2w for p in pred]).all()


def _relative_errors(out, frames, truth_dir, scale: float) -> np.ndarray:
    """(truth - scale * depth) / truth over the pixels of ``frames``' depth files that have depth."""
    errors = []
    for f in frames:
        d = read_depth(out, f.index)
        truth = np.load(truth_dir / "depth" / f"{f.index:06d}.npy")
        ok = (d["depth"] > 0) & (truth > 0)
        errors.append((truth[ok] - scale * d["depth"][ok]) / truth[ok])
    return np.concatenate(errors)


def test_tracked_frames_get_depth_maps_from_their_keyframes_that_agree_with_the_scene(slow_walk, tmp_path):
    out = tmp_path / "out"
    summary = reconstruct(slow_walk / "clip.mp4", out, _config(save_depth=True), progress=False)
    s = summary.stats
    pred = read_trajectory(out)
    keys = sorted(f.index for f in pred if f.pose_kind == "posed")
    tracked = [f for f in pred if f.pose_kind == "tracked"]
    assert len(tracked) == s.frames_tracked >= 40
    assert s.frames_tracked_with_depth == s.frames_tracked and s.frames_with_depth() == 60
    assert f"60 frames, {s.frames_keyframes} keyframes: 60 posed with depth ({s.frames_tracked} from keyframes' " \
           f"depth), 0 rotation-only, {s.frames_tracked} tracked" in pose_summary(s)
    run = json.loads((out / "run.json").read_text())
    assert run["stats"]["frames_tracked_with_depth"] == s.frames_tracked
    assert run["config"]["tracked_depth"]["enabled"] is True and run["timings_s"]["tracked_depth"] > 0

    for f in tracked:  # marked with the keyframes around it, in the frame's pose and the model's pixels
        d = read_depth(out, f.index)
        a, b = d["keyframes"].tolist()
        assert str(d["source"]) == "keyframes" and a in keys and b in keys and a < f.index < b
        np.testing.assert_allclose(d["c2w"], f.c2w, atol=1e-9)
        assert d["depth"].shape == (H, W) and (d["depth"] > 0).mean() > 0.9
        assert ((d["depth"] > 0) == (d["conf"] > 0)).all()
    # One scale for the run's depth, fitted on the keyframes' own maps (on this short straight walk the
    # trajectory's Sim(3) fixes the scale of the path, not that of the self-calibrated depth).
    keyframes = [f for f in pred if f.pose_kind == "posed"]
    scale = 1.0 / (1.0 - np.median(_relative_errors(out, keyframes, slow_walk, 1.0)))
    err_keys = np.abs(_relative_errors(out, keyframes, slow_walk, scale))
    err_tracked = np.abs(_relative_errors(out, tracked, slow_walk, scale))
    assert np.median(err_tracked) < 0.02 and np.median(err_tracked) < 1.5 * np.median(err_keys) + 0.003


def test_no_tracked_depth_leaves_tracked_frames_without_depth_and_says_so(slow_walk, tmp_path):
    out = tmp_path / "out"
    config = _config(save_depth=True, **{"tracked_depth.enabled": False, "ingest.max_frames": 30})
    s = reconstruct(slow_walk / "clip.mp4", out, config, progress=False).stats
    assert s.frames_tracked > 0 and s.frames_tracked_with_depth == 0
    assert f": {s.frames_keyframes} posed with depth, 0 rotation-only, {s.frames_tracked} tracked" in pose_summary(s)
    written = sorted(int(p.stem) for p in (out / "depth").glob("*.npz"))
    assert written == sorted(f.index for f in read_trajectory(out) if f.pose_kind == "posed")
    assert json.loads((out / "run.json").read_text())["config"]["tracked_depth"]["enabled"] is False


def test_frames_between_rotation_only_keyframes_get_no_depth(tmp_path):
    """A camera turning on the spot at 30 fps: its windows have no parallax, so neither its keyframes nor
    the frames between them (interpolated) are posed with depth."""
    scene = make_scene("room", seed=0)
    start = make_trajectory("sideways", 1, seed=0, scene=scene)[0]
    turn = [start.copy() for _ in range(45)]
    for i, c2w in enumerate(turn):
        a = np.radians(0.6 * i)
        c2w[:3, :3] = start[:3, :3] @ np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    write_sequence(tmp_path / "clip", render_sequence(scene, np.stack(turn), intrinsics_for(W, H), W, H, fps=30.0),
                   video="clip.mp4", fps=30.0)
    out = tmp_path / "out"
    s = reconstruct(tmp_path / "clip" / "clip.mp4", out, _config(save_depth=True), progress=False).stats
    assert s.frames_posed == 45 and s.frames_keyframes < 45
    assert s.frames_tracked_with_depth == 0 and s.frames_with_depth() == 0
    assert "0 posed with depth" in pose_summary(s)
    between = [f.index for f in read_trajectory(out) if f.pose_kind in ("tracked", "interpolated")]
    assert between and not any((out / "depth" / f"{i:06d}.npz").exists() for i in between)


def test_a_keyframer_behind_the_stream_judges_every_third_frame_and_catches_up():
    """``LagJudge``: frames that reach the keyframer late pass unjudged (never keyframes), two of
    every three; frames on time are all judged, as for a file."""
    import time

    from recon.keyframes import ParallaxKeyframer
    from stream4d.contracts import Frame
    from stream4d.pipeline.keyframing import KeyframeMarks, LagJudge, mark_keyframes

    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 60, seed=0, scene=scene, step=0.02)
    images = [v.rgb for v in render_sequence(scene, c2w, intrinsics_for(W, H), W, H, fps=30.0)]

    def frames(late: range):  # arrived now, or 10 s ago
        for i, image in enumerate(images):
            yield Frame(i, i / 30.0, image, f"f{i}", arrived=time.monotonic() - (10.0 if i in late else 0.0))

    on_time, plain = KeyframeMarks(), KeyframeMarks()
    list(mark_keyframes(frames(range(0)), ParallaxKeyframer(), on_time, LagJudge(1.0)))
    list(mark_keyframes(frames(range(0)), ParallaxKeyframer(), plain))
    assert on_time._keys == plain._keys and len(plain._keys) > 3  # on time: the same keyframes as without

    judge, marks = LagJudge(1.0), KeyframeMarks()
    out = list(mark_keyframes(frames(range(20, 50)), ParallaxKeyframer(), marks, judge))
    assert [f.index for f in out] == list(range(60))
    assert judge.unjudged == 20  # of the 30 late frames, every third is judged
    unjudged = {i for i in range(20, 50) if (i - 20) % 3 != 2}
    assert not (marks._keys - {59}) & unjudged
    assert any(20 <= k < 50 for k in marks._keys)  # the judged ones still make keyframes while behind


def _cut_clip(folder, parts):
    """A video of 45-frame parts joined with no transition: "room" a walk along the room, "street"
    a drive down a street (the same path each time a scene comes back)."""
    K = intrinsics_for(W, H)
    scenes = {"room": ("sideways", 0.02), "street": ("forward", 0.05)}
    views = []
    for i, name in enumerate(parts):
        scene = make_scene(name, seed=0)
        path = make_trajectory(scenes[name][0], 45, seed=0, scene=scene, step=scenes[name][1])
        views.append(render_sequence(scene, path, K, W, H, fps=30.0, start_time=1.5 * i))
    write_sequence(folder, chain(*views), video="clip.mp4", fps=30.0)
    return folder


def test_a_hard_cut_to_another_scene_leaves_no_frame_unposed(tmp_path):
    # A walk along the room, then a drive down a street: the window that spans the cut poses only
    # the room, and the street's first keyframes (and the frames held before them) must still be
    # reconstructed, in a world of their own.
    clip = _cut_clip(tmp_path / "cut", ["room", "street"])
    summary = reconstruct(clip / "clip.mp4", tmp_path / "out", _config(), progress=False)
    assert summary.stats.frames_posed == 90
    pred = read_trajectory(tmp_path / "out")
    assert [p.index for p in pred] == list(range(90))
    assert {p.segment for p in pred[:45]} == {0} and {p.segment for p in pred[45:]} == {1}
    gt = load_reference(clip / "cameras.json")
    for part in (pred[:45], pred[45:]):
        assert evaluate_trajectory(part, gt).ate_rmse_rel_path < 0.01


def test_a_cut_away_and_back_poses_the_scene_in_between(tmp_path):
    # Room, street, room: the window spanning the second cut registers the room again and drops
    # the street's views at its head; they get a window once the input has ended.
    clip = _cut_clip(tmp_path / "cut", ["room", "street", "room"])
    summary = reconstruct(clip / "clip.mp4", tmp_path / "out", _config(), progress=False)
    pred = read_trajectory(tmp_path / "out")
    by_index = {p.index: p for p in pred}
    street = [by_index[i] for i in range(45, 90) if i in by_index]
    assert len(street) >= 40, summary.stats
    assert len({p.segment for p in street}) == 1
    assert {p.segment for p in street}.isdisjoint(p.segment for p in pred if p.index < 45)
    gt = load_reference(clip / "cameras.json")
    assert evaluate_trajectory(street, gt).ate_rmse_rel_path < 0.01


@pytest.fixture(scope="module")
def hover_folder(tmp_path_factory):
    """A handheld hover saved as a folder of PNGs with exact cameras: 48 frames, a few mm apart."""
    out = tmp_path_factory.mktemp("hover")
    scene = make_scene("room", seed=4)
    c2w = make_trajectory("handheld", 48, seed=4, scene=scene)
    write_sequence(out, render_sequence(scene, c2w, intrinsics_for(W, H), W, H, noise_std=2.0))
    return out


def test_a_folder_of_frames_a_few_mm_apart_gets_parallax_keyframes(hover_folder, tmp_path):
    """A folder, not a video, whose frames are as close as a video's: under ``auto`` the window model
    sees keyframes (at a third of a video's parallax threshold) and the frames between are tracked;
    with every frame a keyframe the windows hold too little parallax and frames are left rotation-only."""
    summary = reconstruct(hover_folder, tmp_path / "auto", _config(), progress=False)
    s = summary.stats
    assert s.frames_posed == 48 and s.frames_rotation_only == 0
    assert s.frames_keyframes < 48 and s.frames_tracked > 0
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert run["keyframes"]["policy"] == "parallax"
    assert run["keyframes"]["min_parallax"] == pytest.approx(ReconstructConfig().keyframes.min_parallax / 3)
    assert run["keyframes"]["max_interval"] == ReconstructConfig().keyframes.max_interval_frames
    gt = load_reference(hover_folder / "cameras.json")
    assert evaluate_trajectory(read_trajectory(tmp_path / "auto"), gt).ate_rmse_rel_path < 0.01

    every = reconstruct(hover_folder, tmp_path / "all", _config(**{"keyframes.policy": "all"}), progress=False)
    assert every.stats.frames_keyframes == 48 and every.stats.frames_rotation_only > 0


def test_frames_before_a_change_of_image_size_are_posed(tmp_path):
    # A slow walk whose frames from 30 on come at half the size (a stream changing resolution): a
    # window holds one size, so the last frame of the first size must be a keyframe, or the frames
    # after the first size's last keyframe have nothing to be tracked to.
    import cv2

    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 60, seed=0, scene=scene, step=0.01)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, view in enumerate(render_sequence(scene, c2w, intrinsics_for(W, H), W, H, fps=30.0)):
        image = view.rgb if i < 30 else cv2.resize(view.rgb, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.ascontiguousarray(image[..., ::-1]))
    summary = reconstruct(folder, tmp_path / "out", _config(**{"ingest.order": "given"}), progress=False)
    pred = read_trajectory(tmp_path / "out")
    assert [p.index for p in pred] == list(range(60)), summary.stats
    assert summary.stats.frames_posed == 60
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["keyframes"]["reasons"].get("last of its size") == 1
