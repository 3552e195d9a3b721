"""Depth metrics after median scaling (AbsRel, delta < 1.25) on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from stream4d.evaluation import (
    EvaluationError,
    confidence_mask,
    depth_metrics,
    depth_metrics_per_frame,
    evaluate_depth,
)


def ramp(S: int = 3, H: int = 8, W: int = 10) -> np.ndarray:
    """Distinct positive depths [S, H, W]."""
    return np.linspace(1.0, 9.0, S * H * W).reshape(S, H, W)


def test_constant_scale_factor_gives_zero_absrel_after_median_scaling():
    gt = ramp()
    m = depth_metrics((gt * 3.7).astype(np.float32), gt)
    assert m.abs_rel == pytest.approx(0.0, abs=1e-6)
    assert m.delta1 == 1.0
    assert m.scale == pytest.approx(1 / 3.7, rel=1e-6)
    assert m.num_pixels == gt.size


def test_known_error_gives_known_absrel_and_delta1():
    # GT 2 everywhere; the prediction is right on 3/4 of the pixels and 3 (50 % too far)
    # on the rest, all times 5. The median is the correct value, so s = 1/5 and
    # AbsRel = 1/4 * |3 - 2| / 2 = 0.125; delta1 = 3/4 (3/2 = 1.5 >= 1.25).
    gt = np.full((2, 4, 4), 2.0)
    pred = gt.copy()
    pred[:, :1, :] = 3.0
    m = depth_metrics(5 * pred, gt)
    assert m.scale == pytest.approx(0.2)
    assert m.abs_rel == pytest.approx(0.125)
    assert m.delta1 == pytest.approx(0.75)
    # Scored only on the correct ("confident") pixels the error vanishes.
    good = pred == 2.0
    assert depth_metrics(5 * pred, gt, mask=good).abs_rel == pytest.approx(0.0)


def test_sequence_scale_is_shared_while_per_frame_scale_is_not():
    # Frame 0 predicts 2x, frame 1 4x the true depth 1. Sequence: median(pred) = 3, s = 1/3,
    # scaled depths 2/3 and 4/3, AbsRel = 1/3, and both ratios (1.5, 1.33) fail delta1.
    gt = np.ones((2, 3, 3))
    pred = np.stack([np.full((3, 3), 2.0), np.full((3, 3), 4.0)])
    seq = depth_metrics(pred, gt)
    assert seq.scale == pytest.approx(1 / 3)
    assert seq.abs_rel == pytest.approx(1 / 3)
    assert seq.delta1 == 0.0
    per = depth_metrics_per_frame(pred, gt)
    assert [p.abs_rel for p in per] == pytest.approx([0.0, 0.0])
    assert [p.scale for p in per] == pytest.approx([0.5, 0.25])


def test_invalid_pixels_are_ignored_and_no_valid_pixel_is_an_error():
    gt = ramp(1)
    pred = gt.copy()
    gt[0, 0, :3] = 0.0  # no ground truth
    pred[0, 1, :2] = np.nan  # no prediction
    pred[0, 2, :1] = 0.0
    pred[0, 3, 0] = 1e6  # wrong, but GT says invalid below
    gt[0, 3, 0] = np.inf
    m = depth_metrics(pred, gt)
    assert m.num_pixels == gt.size - 7 and m.abs_rel == pytest.approx(0.0)
    with pytest.raises(EvaluationError, match="no pixel has a valid depth"):
        depth_metrics(np.zeros((4, 4)), np.ones((4, 4)))
    assert depth_metrics_per_frame(np.stack([np.zeros((4, 4)), np.ones((4, 4))]), np.ones((2, 4, 4)))[0] is None


def test_shape_and_mask_mismatch_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="mask must be bool"):
        depth_metrics(np.ones((4, 4)), np.ones((4, 4)), mask=np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"\[H, W\] or \[S, H, W\]"):
        depth_metrics(np.ones(4), np.ones(4))


def test_confidence_mask_keeps_the_most_confident_fraction():
    conf = np.arange(100, dtype=np.float32).reshape(1, 10, 10)  # one zero = invalid
    mask = confidence_mask(conf, keep_fraction=0.25)
    assert mask.sum() == 25 and mask[0, 9, 9] and not mask[0, 0, 0]
    with pytest.raises(ValueError, match="keep_fraction"):
        confidence_mask(conf, 0.0)


def test_evaluate_depth_reports_confident_and_all_pixels():
    gt = ramp(2)
    pred = gt * 2.0
    conf = np.ones_like(gt)
    pred[:, 0, :] *= 1.5  # a bad row the model is unsure about
    conf[:, 0, :] = 0.1
    out = evaluate_depth(pred, gt, conf=conf, keep_fraction=0.8)
    assert out["confident"].abs_rel == pytest.approx(0.0, abs=1e-12)
    assert out["all"].abs_rel > 0.01
    assert len(out["per_frame"]) == 2 and len(out["per_frame_confident"]) == 2
    assert evaluate_depth(pred, gt)["confident"] is None
