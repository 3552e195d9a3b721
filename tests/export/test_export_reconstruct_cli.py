"""``stream4d reconstruct --export``: the exports written at the end of a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pycolmap

REPO = Path(__file__).resolve().parents[2]


def _reconstruct(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream4d.cli", "reconstruct", *args], capture_output=True,
                          text=True, timeout=900, cwd=REPO)


def test_reconstruct_exports_colmap_and_nerfstudio_into_the_output_folder(synthetic_clip, tmp_path):
    out = tmp_path / "run"
    proc = _reconstruct(str(synthetic_clip), "--out", str(out), "--window", "10", "--overlap", "3", "--no-rrd",
                        "--no-gaussians", "--quiet", "--export", "colmap,nerfstudio")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = pycolmap.Reconstruction(str(out / "colmap" / "sparse" / "0"))
    frames = json.loads((out / "trajectory.json").read_text())["frames"]
    assert rec.num_images() == len(frames) == 30 and rec.num_points3D() > 0
    transforms = json.loads((out / "nerfstudio" / "transforms.json").read_text())
    assert len(transforms["frames"]) == 30 and (out / "nerfstudio" / transforms["ply_file_path"]).is_file()


def test_export_without_saved_frames_is_refused_before_the_run(synthetic_clip, tmp_path):
    proc = _reconstruct(str(synthetic_clip), "--out", str(tmp_path / "run"), "--no-save-frames", "--export", "colmap")
    assert proc.returncode == 2 and "--no-save-frames" in proc.stderr
    assert not (tmp_path / "run").exists()
    proc = _reconstruct(str(synthetic_clip), "--out", str(tmp_path / "run"), "--export", "obj")
    assert proc.returncode == 2 and "unknown export format" in proc.stderr
