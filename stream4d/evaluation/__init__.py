"""Evaluation of reconstruction outputs: trajectories (ATE/RPE), depth, point clouds."""

from stream4d.evaluation.depth import (
    DepthMetrics,
    confidence_mask,
    depth_metrics,
    depth_metrics_per_frame,
    evaluate_depth,
)
from stream4d.evaluation.pointcloud import PointCloudMetrics, pointcloud_metrics
from stream4d.evaluation.report import evaluate_output, load_reference, print_report, write_report
from stream4d.evaluation.trajectory import (
    EvaluationError,
    FrameMatch,
    TrajectoryResult,
    evaluate_trajectory,
    match_frames,
    trajectory_extent,
)

__all__ = [
    "DepthMetrics", "confidence_mask", "depth_metrics", "depth_metrics_per_frame", "evaluate_depth",
    "PointCloudMetrics", "pointcloud_metrics",
    "evaluate_output", "load_reference", "print_report", "write_report",
    "EvaluationError", "FrameMatch", "TrajectoryResult", "evaluate_trajectory", "match_frames",
    "trajectory_extent",
]
