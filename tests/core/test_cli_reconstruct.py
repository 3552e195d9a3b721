"""``stream4d reconstruct`` as a user runs it: a real subprocess on the shipped demo clip."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from synthetic_clips import panning_room, sideways_room, write_images

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"


def stream4d(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream4d.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_reconstruct_of_the_demo_clip_prints_its_error_against_ground_truth(tmp_path):
    out = tmp_path / "demo"
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(out), "--gt", str(DEMO / "cameras.json"),
                    "--max-frames", "24", "--no-rrd", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # A video: parallax keyframes go to the window model, the frames between them are tracked.
    # Tracked frames get depth projected from their keyframes' depth: every frame is posed with depth.
    assert re.search(r"24 frames, (\d+) keyframes: 24 posed with depth \((\d+) from keyframes' depth\), "
                     r"0 rotation-only, \2 tracked, 0 interpolated, 0 not posed; 1 window;", proc.stdout), \
        proc.stdout[-2000:]
    assert "warning" not in proc.stdout
    assert "ATE RMSE" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["ingest"]["max_frames"] == 24 and run["error"] is None


def test_splat_max_side_sets_how_many_pixels_become_gaussians(tmp_path):
    """Every pixel (0) against the default (every 2nd pixel each way at the demo's 512 px): ~4x the Gaussians."""
    counts = {}
    for side in ("0", "256"):
        out = tmp_path / side
        proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(out), "--max-frames", "20",
                        "--no-rrd", "--quiet", "--splat-max-side", side)
        assert proc.returncode == 0, proc.stderr[-2000:]
        run = json.loads((out / "run.json").read_text())
        assert run["config"]["cache"]["window_max_side"] == (None if side == "0" else 256)
        counts[side] = run["stats"]["gaussians"]
    assert 2.5 < counts["0"] / counts["256"] < 5.0, counts


def test_reconstruct_of_a_missing_file_fails_with_a_clear_message(tmp_path):
    proc = stream4d("reconstruct", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o"), "--quiet")
    assert proc.returncode == 1
    assert "missing.mp4" in proc.stderr and "Traceback" not in proc.stderr


def test_reconstruct_rejects_an_overlap_not_smaller_than_the_window(tmp_path):
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(tmp_path / "o"),
                    "--window", "5", "--overlap", "5")
    assert proc.returncode == 2
    assert "overlap" in proc.stderr


def test_reconstruct_rejects_a_negative_splat_size(tmp_path):
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(tmp_path / "o"), "--splat-max-side", "-4")
    assert proc.returncode == 2
    assert "window_max_side" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_json_repeats_its_run_exactly(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(first), "--max-frames", "16",
                    "--window", "8", "--overlap", "3", "--keyframes", "all", "--no-rrd", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(second), "--config", str(first / "run.json"),
                    "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [json.loads((out / "run.json").read_text()) for out in (first, second)]
    assert runs[1]["config"] == runs[0]["config"]
    assert runs[0]["stats"]["windows"] >= 2  # the windowing came from the file, not the 20-frame default
    poses = [[(f["index"], f["c2w"], f["K"]) for f in json.loads((out / "trajectory.json").read_text())["frames"]]
             for out in (first, second)]
    assert len(poses[0]) == 16 and poses[1] == poses[0]


def test_flags_given_override_the_config_file_and_nothing_else(tmp_path):
    from stream4d.cli import build_parser
    from stream4d.commands.reconstruct import config_from_args
    from stream4d.pipeline import ReconstructConfig

    saved = ReconstructConfig().override({"align.window": 10, "align.overlap": 4, "ingest.max_frames": 30,
                                          "ingest.stride": 2, "cache.max_gaussians": 1000})
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(saved.to_dict()))
    parser, _ = build_parser()
    args = parser.parse_args(["reconstruct", "in.mp4", "--out", str(tmp_path / "o"), "--config", str(path),
                              "--overlap", "2", "--no-rrd"])
    config = config_from_args(args)
    assert config == saved.override({"align.overlap": 2, "rrd": False})
    assert config.tail_merge == 2  # follows the new overlap: min(overlap, window - overlap - 1)
    assert config_from_args(parser.parse_args(["reconstruct", "in.mp4", "--out", "o", "--config", str(path)])) == saved


def test_a_config_file_with_an_unknown_key_is_refused_by_name(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({"align": {"windw": 8}}))
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(tmp_path / "o"), "--config", str(path))
    assert proc.returncode == 2
    assert "config.align" in proc.stderr and "windw" in proc.stderr and "Traceback" not in proc.stderr


def test_a_clip_without_parallax_succeeds_but_says_its_map_is_empty(tmp_path):
    folder = write_images(tmp_path / "in", panning_room(12))
    proc = stream4d("reconstruct", str(folder), "--out", str(tmp_path / "o"), "--window", "8", "--overlap", "3",
                    "--resize", "none", "--no-rrd", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # A folder gets parallax keyframes: the pan's are rotation-only, the frames between interpolated.
    counts = re.search(r"^12 frames, (\d+) keyframes: 0 posed with depth, (\d+) rotation-only, 0 tracked, "
                       r"(\d+) interpolated, 0 not posed", proc.stdout, re.M)
    assert counts, proc.stdout
    keyframes, turned, between = map(int, counts.groups())
    assert keyframes == turned and turned + between == 12 and between > 0
    assert (f"warning: map is empty: no window had parallax: all {turned} posed keyframes are rotation-only, "
            f"the {between} frames between them interpolated") in proc.stdout


def test_reconstruct_fails_only_when_no_frame_could_be_posed(tmp_path):
    folder = tmp_path / "black"
    folder.mkdir()
    for i in range(6):  # every frame is rejected as black
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.zeros((96, 128, 3), np.uint8))
    proc = stream4d("reconstruct", str(folder), "--out", str(tmp_path / "o"), "--no-rrd", "--quiet")
    assert proc.returncode == 1
    assert "6 frames: 0 posed with depth, 0 rotation-only, 0 not posed, 6 skipped as unusable images" in proc.stdout
    assert "no frame could be posed" in proc.stderr and "Traceback" not in proc.stderr
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["stats"]["warnings"][0].startswith("no frame was posed")


def test_no_loop_closure_turns_the_global_map_off():
    from align import StreamAligner
    from stream4d.cli import build_parser
    from stream4d.commands.reconstruct import config_from_args

    parser, _ = build_parser()
    off = config_from_args(parser.parse_args(["reconstruct", "in.mp4", "--out", "o", "--no-loop-closure"]))
    on = config_from_args(parser.parse_args(["reconstruct", "in.mp4", "--out", "o"]))
    assert on.align.loop_closure.enabled and not off.align.loop_closure.enabled
    assert StreamAligner(off.align).global_map is None and StreamAligner(on.align).global_map is not None


def test_no_tracked_depth_turns_the_tracked_frames_depth_maps_off():
    from stream4d.cli import build_parser
    from stream4d.commands.reconstruct import config_from_args

    parser, _ = build_parser()
    off = config_from_args(parser.parse_args(["reconstruct", "in.mp4", "--out", "o", "--no-tracked-depth"]))
    on = config_from_args(parser.parse_args(["reconstruct", "in.mp4", "--out", "o"]))
    assert on.tracked_depth.enabled and not off.tracked_depth.enabled
    assert off.to_dict()["tracked_depth"]["enabled"] is False


def test_a_camera_the_user_knows_is_used_instead_of_self_calibrating(tmp_path):
    # The demo clip was rendered with a 60 degree field of view across its 512 px width.
    out = tmp_path / "demo"
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(out), "--max-frames", "24", "--fov", "60",
                    "--no-rrd", "--no-gaussians", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["ingest"]["fov_deg"] == 60.0
    assert run["intrinsics"] is None  # nothing self-calibrated
    frames = json.loads((out / "trajectory.json").read_text())["frames"]
    truth = json.loads((DEMO / "cameras.json").read_text())["frames"][0]["K"]
    np.testing.assert_allclose(frames[0]["K"], truth, rtol=1e-6)
    proc = stream4d("reconstruct", str(DEMO / "demo.mp4"), "--out", str(out), "--fov", "60", "--intrinsics", "1,1,1,1")
    assert proc.returncode == 2 and "not allowed with argument --fov" in proc.stderr


def test_photos_stating_their_focal_are_held_at_it_where_the_motion_does_not_tell(tmp_path):
    # A slide past the room's wall leaves the focal free; the photos' EXIF states a 35 mm equivalent.
    from PIL import Image

    from recon.ingest.stated_focal import EXIF_IFD, FOCAL_LENGTH_35MM
    from stream4d.synthetic import intrinsics_for

    views = sideways_room(12)
    H, W = views[0].shape[:2]
    true_f = intrinsics_for(W, H)[0, 0]
    f35 = round(true_f / np.hypot(W, H) * np.hypot(36.0, 24.0))
    folder = tmp_path / "phone"
    folder.mkdir()
    for i, view in enumerate(views):
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[FOCAL_LENGTH_35MM] = f35
        Image.fromarray(view).save(folder / f"{i:04d}.png", exif=exif.tobytes())
    stated = f35 / np.hypot(36.0, 24.0) * np.hypot(W, H)
    out = tmp_path / "out"
    proc = stream4d("reconstruct", str(folder), "--out", str(out), "--no-rrd", "--no-gaussians")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    cal = run["intrinsics"]
    assert cal["focal_source"] == "stated" and abs(cal["focal_px"] / stated - 1) < 1e-9, cal
    assert run["final_ba"]["applied"] and "focal" not in run["final_ba"], run["final_ba"]  # no motion to refine it by
    assert "as the input's metadata states it" in proc.stdout
    frames = json.loads((out / "trajectory.json").read_text())["frames"]
    assert abs(frames[0]["K"][0][0] / true_f - 1) < 0.03  # the EXIF's whole millimetres, not the 1.0 guess
    proc = stream4d("reconstruct", str(folder), "--out", str(tmp_path / "ignored"), "--no-rrd", "--no-gaussians",
                    "--no-metadata-focal")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "focal length: NOT determined" in proc.stdout
    ignored = json.loads((tmp_path / "ignored" / "run.json").read_text())
    assert ignored["config"]["ingest"]["metadata_focal"] is False and "stated_focal" not in ignored["intrinsics"]
    assert "focal" not in ignored["final_ba"], ignored["final_ba"]  # the guess is held, not refined


def test_the_console_says_why_a_focal_was_held_and_which_lens_was_found(tmp_path):
    """A held focal says whether the windows' motion left it free or their estimates read a view too wide
    for a rectilinear lens; a lens the final adjustment kept gets a line of its own."""
    from stream4d.commands.reconstruct import _camera_lines

    windows = [{"window": 0, "focal_rel": 0.13, "sigma_rel": 0.3, "used": False, "plausible": False},
               {"window": 1, "focal_rel": 0.9, "sigma_rel": 4.0, "used": False, "plausible": True}]
    run = {"intrinsics": {"held_focal_px": 512.0, "model_size": [512, 288], "windows": windows},
           "final_ba": {"lens": {"kept": True, "radial_k1": -0.4787, "corner_px": 45.94}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    focal, lens = _camera_lines(path)
    assert "NOT determined" in focal and "1 window(s) read a view wider than a rectilinear lens sees" in focal
    assert lens.startswith("lens: k1 = -0.4787") and "45.9 px" in lens
    windows[1].update(misread=True, lens={"kept": True, "grown_through": True, "radial_k1": -0.48})
    path.write_text(json.dumps(run))
    focal = _camera_lines(path)[0]
    assert "2 window(s) read a view wider" in focal and "1 window(s) solved through that lens instead" in focal
    windows[0]["plausible"] = True
    windows[1].update(misread=False, lens=None)
    run["final_ba"]["lens"] = {"kept": False, "radial_k1": 0.001, "corner_px": 0.2}
    path.write_text(json.dumps(run))
    assert _camera_lines(path) == [_camera_lines(path)[0]] and "no window's motion constrained it" in _camera_lines(path)[0]
    assert _camera_lines(tmp_path / "missing.json") == []
