"""Evaluate an output folder against a reference: one report dict, a rich table, a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from stream4d.evaluation.pointcloud import pointcloud_metrics
from stream4d.evaluation.trajectory import EvaluationError, evaluate_trajectory
from stream4d.outputs import (
    POINTS_PLY,
    PosedFrame,
    json_default,
    read_cameras_json,
    read_points_ply,
    read_trajectory,
)


def load_reference(path: str | Path) -> list[PosedFrame]:
    """Reference poses from a ``cameras.json`` (shared data format), a ``trajectory.json``,
    a ``.tum`` file, or another output folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference {path} does not exist")
    if path.is_dir() or path.suffix.lower() in (".tum", ".txt"):
        return read_trajectory(path)
    try:
        first = json.loads(path.read_text(encoding="utf-8")).get("frames", [None])[0]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, IndexError, TypeError):
        first = None  # let the reader below raise its specific message
    if isinstance(first, dict) and "index" in first:
        return read_trajectory(path)
    return read_cameras_json(path)


def evaluate_output(prediction: str | Path, reference: str | Path, gt_points: str | Path | None = None,
                    match: str = "auto", max_dt: float | None = None, voxel_size: float | None = None,
                    threshold: float | None = None) -> dict:
    """Evaluate a run (output folder, trajectory.json or .tum) against reference poses and,
    with ``gt_points`` (a PLY), its ``points.ply`` against a reference cloud.

    Raises FileNotFoundError / ValueError / EvaluationError with a message naming the bad input.
    """
    from stream4d import __version__

    prediction = Path(prediction)
    if not prediction.exists():
        raise FileNotFoundError(f"prediction {prediction} does not exist")
    pred = read_trajectory(prediction)
    gt = load_reference(reference)
    traj = evaluate_trajectory(pred, gt, match=match, max_dt=max_dt)
    report: dict[str, Any] = {
        "stream4d_version": __version__,
        "prediction": str(prediction),
        "reference": str(reference),
        "trajectory": traj.to_dict(),
    }
    if gt_points is not None:
        pred_ply = prediction / POINTS_PLY if prediction.is_dir() else prediction.parent / POINTS_PLY
        if not pred_ply.is_file():
            raise FileNotFoundError(f"--gt-points was given but the prediction has no {pred_ply}")
        pred_pts, _ = read_points_ply(pred_ply)
        gt_pts, _ = read_points_ply(gt_points)
        pts = pointcloud_metrics(pred_pts, gt_pts, sim3=traj.points_sim3, voxel_size=voxel_size, threshold=threshold)
        report["points"] = {"prediction": str(pred_ply), "reference": str(gt_points), **pts.to_dict()}
    return report


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN: undefined metrics (e.g. RPE without pairs) become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(report, default=json_default))  # numpy -> plain values first
    path.write_text(json.dumps(_finite_or_none(clean), indent=1, allow_nan=False), encoding="utf-8")
    return path


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def print_report(report: dict, console: Console | None = None) -> None:
    """Print the trajectory (and point-cloud) metrics as rich tables."""
    console = console or Console()
    t = report["trajectory"]
    table = Table(title=f"Trajectory: {report['prediction']} vs {report['reference']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("matched by", t["match"]),
        ("matched frames", f"{t['num_matched']} (pred {t['num_pred']}, GT {t['num_gt']})"),
        ("coverage of GT", f"{100 * t['coverage']:.1f} %"),
        ("Sim(3) scale", _fmt(t["sim3"]["scale"])),
        ("ATE RMSE", _fmt(t["ate_rmse"])),
        ("ATE RMSE / GT path length", f"{_fmt(100 * t['ate_rmse_rel_path'], 3)} %"),
        ("ATE RMSE / GT extent", f"{_fmt(100 * t['ate_rmse_rel_extent'], 3)} %"),
        ("ATE mean / median / max", " / ".join(_fmt(t[k]) for k in ("ate_mean", "ate_median", "ate_max"))),
        ("rotation error mean (deg)", _fmt(t["rot_err_mean_deg"])),
        (f"RPE translation RMSE / mean ({t['rpe_pairs']} pairs)",
         f"{_fmt(t['rpe_trans_rmse'])} / {_fmt(t['rpe_trans_mean'])}"),
        ("RPE rotation RMSE / mean (deg)", f"{_fmt(t['rpe_rot_rmse_deg'])} / {_fmt(t['rpe_rot_mean_deg'])}"),
        ("GT path length / extent", f"{_fmt(t['gt_path_length'])} / {_fmt(t['gt_extent'])}"),
    ]
    if t["segments"] > 1:
        per = ", ".join(f"{k}: {_fmt(v)}" for k, v in t["ate_rmse_per_segment"].items())
        rows.append((f"segments ({t['segments']}) ATE RMSE", per or "-"))
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    if "points" in report:
        p = report["points"]
        pt = Table(title="Point cloud (prediction mapped by the trajectory Sim(3) on centres + camera axes)")
        pt.add_column("metric")
        pt.add_column("value", justify="right")
        pt.add_row("points pred / GT", f"{p['num_pred']} / {p['num_gt']}")
        pt.add_row("voxel size", _fmt(p["voxel_size"]))
        pt.add_row("accuracy (pred -> GT) mean / median", f"{_fmt(p['accuracy'])} / {_fmt(p['accuracy_median'])}")
        pt.add_row("completeness (GT -> pred) mean / median",
                   f"{_fmt(p['completeness'])} / {_fmt(p['completeness_median'])}")
        pt.add_row("Chamfer", _fmt(p["chamfer"]))
        if p.get("threshold") is not None:
            pt.add_row(f"precision / recall / F @ {_fmt(p['threshold'])}",
                       " / ".join(_fmt(p[k]) for k in ("precision", "recall", "fscore")))
        console.print(pt)


__all__ = ["load_reference", "evaluate_output", "write_report", "print_report", "EvaluationError"]
