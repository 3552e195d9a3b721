"""`stream4d eval` on real reference cameras (KITTI) against outputs written with OutputWriter."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stream4d.cli import main
from stream4d.geometry import Sim3
from stream4d.outputs import OutputWriter, read_cameras_json, write_points_ply
from stream4d.testdata import SHARED_DATA

KITTI = SHARED_DATA / "kitti_seq1/cameras.json"
pytestmark = pytest.mark.skipif(not KITTI.is_file(), reason="shared test data not present")
# What a run's arbitrary world looks like from the reference frame.
TO_PRED = Sim3(0.05, Rotation.from_euler("xyz", [5, 80, -10], degrees=True).as_matrix(), np.array([0.3, 0, -1]))


def write_perturbed_run(out_dir: Path, gt_points: np.ndarray | None = None, stride: int = 1) -> Path:
    """A run over KITTI: reference poses in another Sim(3) frame, frame 20 moved 0.5 m sideways."""
    gt = read_cameras_json(KITTI)
    with OutputWriter(out_dir) as writer:
        for f in gt[::stride]:
            c2w = f.c2w.copy()
            if f.index == 20:
                c2w[:3, 3] += [0.5, 0.0, 0.0]
            writer.add_frame(replace(f, image=Path(f.image).name, timestamp=0.1 * f.index,
                                     c2w=TO_PRED.apply_c2w(c2w)))
        if gt_points is not None:
            writer.write_points(TO_PRED.apply(gt_points), np.full(gt_points.shape, 0.5))
        writer.write_run({"source": str(KITTI.parent)})
    return out_dir


def scene_points(n: int = 3000) -> np.ndarray:
    """Points [n, 3] on the road and walls along the KITTI drive (z forward, y down)."""
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 60, n)
    side = rng.integers(0, 3, n)
    x = np.where(side == 0, rng.uniform(-6, 6, n), np.where(side == 1, -6.0, 6.0))
    y = np.where(side == 0, 1.7, rng.uniform(-3, 1.7, n))
    return np.stack([x, y, z], axis=1)


def test_eval_cli_scores_a_perturbed_kitti_run_and_writes_json(tmp_path, capsys):
    pts = scene_points()
    out = write_perturbed_run(tmp_path / "run", gt_points=pts)
    write_points_ply(tmp_path / "gt.ply", pts, np.zeros(pts.shape, np.uint8))
    report_path = tmp_path / "report.json"
    rc = main(["eval", str(out), "--gt", str(KITTI), "--gt-points", str(tmp_path / "gt.ply"),
               "--json", str(report_path), "--threshold", "0.2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ATE RMSE" in printed and "Chamfer" in printed
    report = json.loads(report_path.read_text())
    t = report["trajectory"]
    assert t["match"] == "image" and t["num_matched"] == 51 and t["coverage"] == 1.0
    assert t["sim3"]["scale"] == pytest.approx(1 / 0.05, rel=1e-3)
    # One 0.5 m outlier among 51 frames: RMSE close to 0.5 / sqrt(51), largest error at frame 20.
    assert 0.05 < t["ate_rmse"] < 0.09
    assert max(t["per_frame"], key=lambda f: f["position_error"])["gt_index"] == 20
    assert t["rpe_pairs"] == 50
    p = report["points"]
    assert p["chamfer"] < 0.02 and p["fscore"] > 0.99


def test_eval_cli_reports_coverage_of_a_strided_run(tmp_path):
    out = write_perturbed_run(tmp_path / "run", stride=3)
    assert main(["eval", str(out), "--gt", str(KITTI), "--json", str(tmp_path / "r.json")]) == 0
    t = json.loads((tmp_path / "r.json").read_text())["trajectory"]
    assert t["num_matched"] == 17 and t["coverage"] == pytest.approx(17 / 51)


def test_eval_cli_exits_2_with_a_message_on_bad_input(tmp_path, capsys):
    out = write_perturbed_run(tmp_path / "run")
    assert main(["eval", str(tmp_path / "missing"), "--gt", str(KITTI)]) == 2
    assert "missing does not exist" in capsys.readouterr().err

    bad_gt = tmp_path / "cameras.json"
    bad_gt.write_text("{ not json")
    assert main(["eval", str(out), "--gt", str(bad_gt)]) == 2
    assert "cameras.json is not valid JSON" in capsys.readouterr().err

    assert main(["eval", str(out), "--gt", str(KITTI), "--gt-points", str(tmp_path / "gt.ply")]) == 2
    assert "--gt-points was given but the prediction has no" in capsys.readouterr().err

    # Nothing to pair: names, indices and timestamps all differ from the reference.
    with OutputWriter(tmp_path / "other") as writer:
        for f in read_cameras_json(KITTI)[:10]:
            writer.add_frame(replace(f, index=1000 + f.index, image=f"cam:0#{f.index}", timestamp=500.0 + f.index))
    assert main(["eval", str(tmp_path / "other"), "--gt", str(KITTI)]) == 2
    assert "only 0 predicted frames match" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:  # argparse: --gt is required
        main(["eval", str(out)])
    assert exc.value.code == 2


def test_stream4d_entry_point_runs_eval_and_returns_its_exit_code(tmp_path):
    out = write_perturbed_run(tmp_path / "run")
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "stream4d.cli", "eval", str(out), "--gt", str(KITTI),
                           "--match", "timestamp", "--max-dt", "0", "--json", str(report)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # Run timestamps are 0.1 * i, the reference's are its indices: run frame 10 k pairs with
    # reference frame k.
    t = json.loads(report.read_text())["trajectory"]
    assert t["match"] == "timestamp"
    assert [(f["pred_index"], f["gt_index"]) for f in t["per_frame"]] == [(10 * k, k) for k in range(6)]
    proc = subprocess.run([sys.executable, "-m", "stream4d.cli", "eval", str(out), "--gt", str(tmp_path / "no.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no.json does not exist" in proc.stderr


def test_report_json_writes_undefined_metrics_as_null(tmp_path):
    from stream4d.evaluation import evaluate_output, write_report

    gt = read_cameras_json(KITTI)
    with OutputWriter(tmp_path / "run") as writer:
        for seg, f in enumerate(gt[:3]):  # three one-frame segments: no RPE pair can be scored
            writer.add_frame(replace(f, segment=seg))
    report = evaluate_output(tmp_path / "run", KITTI)
    assert report["trajectory"]["rpe_pairs"] == 0 and np.isnan(report["trajectory"]["rpe_trans_rmse"])
    text = write_report(report, tmp_path / "r.json").read_text()
    assert "NaN" not in text and json.loads(text)["trajectory"]["rpe_trans_rmse"] is None
