"""Stream-wide self-calibration: the focal length estimated across windows, fixed, and forgotten."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recon.default.calibration import StreamFocal, StreamFocalConfig
from recon.default.model import DefaultModelConfig, DefaultWindowModel
from recon.default.sfm import SfmConfig
from stream4d.contracts import Frame
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_view

W, H = 256, 192
TRUE_REL = intrinsics_for(W, H)[0, 0] / W  # fov 60: f / longest side


def test_windows_evidence_converges_to_the_true_focal_and_fixes_it():
    rng = np.random.default_rng(0)
    truth = np.log(TRUE_REL * W)
    est = StreamFocal()
    sigmas = [0.02, 0.015, 0.01, 0.008, 0.006, 0.006]
    for k, s in enumerate(sigmas):
        est.add(k, (W, H), truth + rng.normal(0, s), s, 0.3)
        if est.fixed:
            break
    assert est.fixed and est.fixed_at >= 1  # never on one window's word alone
    assert abs(np.exp(est.log_rel) / TRUE_REL - 1) < 3 * est.sigma
    assert est.sigma <= est.config.fix_sigma
    K = est.intrinsics((W, H))
    assert K[0, 2] == (W - 1) / 2 and K[1, 2] == (H - 1) / 2
    assert est.prior((W, H)) is None  # fixed: later windows are solved with it, not around it
    at = est.log_rel
    assert not est.add(99, (W, H), truth + 0.5, 0.001, 0.3)  # nothing moves a fixed focal
    assert est.log_rel == at


def test_an_outlier_window_does_not_move_the_estimate():
    truth = np.log(TRUE_REL * W)
    est = StreamFocal(StreamFocalConfig(fix_sigma=1e-6))  # never fixed: the combination itself is tested
    for k, d in enumerate([0.01, -0.012, 0.004, -0.003]):
        est.add(k, (W, H), truth + d, 0.02, 0.3)
    before = est.log_rel
    # a window stuck 40 % off in a flat valley, and (wrongly) sure of it
    assert not est.add(4, (W, H), truth + np.log(1.4), 0.005, 0.3)
    assert est.log_rel == pytest.approx(before, abs=1e-12)
    assert [w.used for w in est.windows] == [True, True, True, True, False]
    report = est.report((W, H))
    assert report["windows"][-1]["used"] is False and report["focal_px"] == pytest.approx(np.exp(before) * W)


def test_windows_that_disagree_are_not_fixed_and_the_prior_is_loosened():
    truth = np.log(TRUE_REL * W)
    est = StreamFocal()
    est.add(0, (W, H), truth + 0.05, 0.005, 0.3)
    est.add(1, (W, H), truth - 0.05, 0.005, 0.3)  # two sure windows 10 % apart: neither is believed
    assert not est.fixed
    assert est.birge > est.config.max_birge and est.sigma == pytest.approx(0.05)  # their spread, not 0.0035
    focal, weight = est.prior((W, H))
    assert weight == pytest.approx(0.3 / est.sigma ** 2)


def test_reset_forgets_and_a_new_aspect_ratio_starts_over():
    est = StreamFocal()
    est.add(0, (W, H), np.log(200.0), 0.01, 0.3)
    assert est.intrinsics((W, H)) is not None
    est.reset()
    assert est.intrinsics((W, H)) is None and est.report() is None and not est.windows
    est.add(0, (W, H), np.log(200.0), 0.01, 0.3)
    assert est.intrinsics((W, 144)) is None  # 16:9 after 4:3: another camera or a crop


def test_a_portrait_window_of_the_same_camera_keeps_the_estimate_with_a_centred_principal_point():
    est = StreamFocal()
    est.add(0, (W, H), np.log(200.0), 0.01, 0.3)
    est.principal_rel = np.array([0.01, -0.02])  # as windows that moved it would leave it
    K = est.intrinsics((H, W))  # the same camera turned 90 degrees
    assert K[0, 0] == pytest.approx(200.0) and K[1, 1] == pytest.approx(200.0)
    assert (K[0, 2], K[1, 2]) == ((H - 1) / 2, (W - 1) / 2)  # which way it was turned is unknown
    assert est.intrinsics((W, H))[0, 2] == pytest.approx((W - 1) / 2 + 0.01 * W)
    est.add(1, (H, W), np.log(202.0), 0.01, 0.3)  # its evidence counts for the same estimate
    assert len(est.windows) == 2 and est.portrait


def _clip(kind: str, n: int, seed: int = 0, scene_name: str = "room") -> list[Frame]:
    scene = make_scene(scene_name, seed=seed)
    K = intrinsics_for(W, H)
    c2w = make_trajectory(kind, n, seed=seed, scene=scene)
    return [Frame(index=i, timestamp=i / 10, image=render_view(scene, c, K, W, H).rgb, source=f"{i:03d}.png")
            for i, c in enumerate(c2w)]


@pytest.fixture(scope="module")
def orbit_windows():
    frames = _clip("orbit", 22)
    return [frames[0:10], frames[6:16], frames[12:22]]


def test_model_estimates_the_focal_across_windows_fixes_it_and_reset_forgets(orbit_windows):
    # Rendered frames have no systematic track errors, and three windows bounded by them would not
    # reach fix_sigma: white noise alone, to test the hand-on mechanics.
    model = DefaultWindowModel(DefaultModelConfig(sfm=SfmConfig(focal_systematic_px=0.0)))
    model.reset()
    preds = [model.predict(w) for w in orbit_windows]
    report = model.intrinsics_report()
    assert report is not None and report["fixed"], report
    fixed_at = report["fixed_at_window"]
    assert abs(report["focal_rel"] / TRUE_REL - 1) < 0.02, report
    assert report["focal_sigma_rel"] <= 0.01
    for k, pred in enumerate(preds):
        assert pred.info["self_calibrated"]
        assert np.allclose(pred.info["stream_K"], model._focal.intrinsics((W, H))) or k <= fixed_at
        if k > fixed_at:  # solved with the stream's focal, which it hands on unchanged
            assert pred.info["focal_fixed"]
            assert pred.K[0, 0, 0] == pytest.approx(report["focal_px"])
    model.reset()
    assert model.intrinsics_report() is None
    first = model.predict(orbit_windows[0])
    assert not first.info.get("focal_fixed")


def test_the_default_sigma_covers_the_error_of_the_estimate(orbit_windows):
    model = DefaultWindowModel()
    model.reset()
    for w in orbit_windows:
        model.predict(w)
    report = model.intrinsics_report()
    assert report["focal_rel"] is not None
    assert abs(np.log(report["focal_rel"] / TRUE_REL)) < 2 * report["focal_sigma_rel"], report


def test_a_camera_that_only_translates_does_not_determine_the_focal():
    """Down a straight street (no turn at all) any focal fits the tracks, save for what their
    errors happen to prefer: the window must not claim one."""
    frames = _clip("forward", 10, scene_name="street")
    model = DefaultWindowModel()
    model.reset()
    model.predict(frames)
    report = model.intrinsics_report()
    assert report["focal_rel"] is None and not report["windows"][0]["used"], report
    assert report["held_focal_px"] == pytest.approx(W)  # the starting guess, said as such
    # Trusting the reprojection noise alone, the same window claims a focal far from the truth (with no
    # floor on how wide a view may be: its claim is wider than a rectilinear lens sees).
    trusting = DefaultWindowModel(DefaultModelConfig(sfm=SfmConfig(focal_systematic_px=0.0),
                                                     stream_focal=StreamFocalConfig(min_focal_rel=0.0)))
    trusting.reset()
    trusting.predict(frames)
    claimed = trusting.intrinsics_report()
    assert claimed["windows"][0]["used"] and abs(np.log(claimed["focal_rel"] / TRUE_REL)) > 0.5, claimed


def test_windows_that_say_next_to_nothing_make_no_estimate():
    est = StreamFocal()
    # sideways motion: the focal is free, a window's evidence is a wide valley around wherever it stopped
    assert not est.add(0, (W, H), np.log(100 * W), 0.8, 0.3)
    assert est.intrinsics((W, H)) is None and est.prior((W, H)) is None
    report = est.report((W, H))
    assert report["focal_rel"] is None and "focal_px" not in report and not report["windows"][0]["used"]
    assert est.add(1, (W, H), np.log(TRUE_REL * W), 0.03, 0.3)  # an informative window starts the estimate
    assert np.exp(est.log_rel) == pytest.approx(TRUE_REL)


def test_principal_point_estimates_combine_and_reach_the_stream_K():
    est = StreamFocal()
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    # a window that pinned x down and left y at its start, then one that pinned both
    est.add(0, (W, H), np.log(200.0), 0.01, 0.3, (centre + [4.0, 9.0], np.array([1.0, 6.0])),
            np.array([True, False]), centre + [4.0, 0.0])
    K = est.intrinsics((W, H))
    assert K[0, 2] == pytest.approx(centre[0] + 4.0) and K[1, 2] == pytest.approx(centre[1])
    assert est.report()["windows"][0]["principal_offset_rel"] == pytest.approx([4.0 / W, 9.0 / W])
    est.add(1, (W, H), np.log(200.0), 0.01, 0.3, (centre + [1.0, -2.0], np.array([1.0, 0.5])),
            np.array([True, True]), centre + [1.0, -2.0])
    K = est.intrinsics((W, H))
    assert K[0, 2] == pytest.approx(centre[0] + 2.5) and K[1, 2] == pytest.approx(centre[1] - 2.0)
    report = est.report((W, H))
    assert report["principal_point"] == "estimated"
    assert report["principal_offset_rel"] == pytest.approx([2.5 / W, -2.0 / W])
    est.add(2, (W, H), np.log(200.0), 0.01, 0.3)  # a window that moved none leaves it
    est.add(3, (W, H), np.log(200.0), 0.01, 0.3, (centre + [30.0, 30.0], np.array([0.1, 0.1])),
            np.array([False, False]), centre)  # ... even when its observations say otherwise
    assert est.intrinsics((W, H))[:2, 2] == pytest.approx(centre + [2.5, -2.0])
    est.reset()
    est.add(0, (W, H), np.log(200.0), 0.01, 0.3)
    assert np.allclose(est.intrinsics((W, H))[:2, 2], centre) and est.report()["principal_point"] == "image centre"


def test_model_estimates_an_off_centre_principal_point_where_the_window_pins_it():
    scene = make_scene("room", seed=0)
    K = intrinsics_for(W, H)
    true_pp = K[:2, 2] + [5.0, 3.0]  # 2 % and 1 % of the longest side off centre
    K[:2, 2] = true_pp
    c2w = make_trajectory("orbit", 10, seed=0, scene=scene)
    frames = [Frame(index=i, timestamp=i / 10, image=render_view(scene, c, K, W, H).rgb, source=f"{i:03d}.png")
              for i, c in enumerate(c2w)]
    model = DefaultWindowModel()
    model.reset()
    pred = model.predict(frames)
    # by default the principal point stays at the centre; the window's evidence is reported
    report = model.intrinsics_report()
    assert report["principal_point"] == "image centre" and np.allclose(pred.K[0, :2, 2], [(W - 1) / 2, (H - 1) / 2])
    evidence = np.array(report["windows"][0]["principal_offset_rel"]) * W
    assert abs(evidence[0] - 5.0) < max(3 * report["windows"][0]["principal_sigma_rel"][0] * W, 1.5)
    model = DefaultWindowModel(DefaultModelConfig(sfm=SfmConfig(principal_point_gate=0.25)))
    model.reset()
    pred = model.predict(frames)
    report = model.intrinsics_report()
    assert report["principal_point"] == "estimated", report
    stream_K = np.asarray(pred.info["stream_K"])
    sigma = np.array([np.nan if s is None else s for s in report["principal_sigma_rel"]]) * W
    estimated = np.isfinite(sigma)
    assert estimated[0]  # the orbit turns about the vertical: x is pinned down
    # where estimated, within 3 sigma (and 1.5 px) of the truth, and the window's K says the same
    assert np.all(np.abs(stream_K[:2, 2] - true_pp)[estimated] < np.maximum(3 * sigma[estimated], 1.5))
    assert np.allclose(pred.K[0, :2, 2], stream_K[:2, 2])
    # y is not pinned and stays at the centre, 3 px off the truth: the focal absorbs about 1 % of it
    assert abs(stream_K[0, 0] / K[0, 0] - 1) < 0.015


def test_a_window_that_leaves_the_focal_free_keeps_the_one_it_started_from():
    """A slide past a wall constrains the focal little (here a sigma of about 25 %, beyond a
    ``max_prior_sigma`` of 10 %; on the 300-frame synthetic slide, 500 %). Whatever the
    self-calibrating adjustment ended on would bend the window's depth; the window is solved again
    with the starting guess, and run.json says so."""
    model = DefaultWindowModel(DefaultModelConfig(stream_focal=StreamFocalConfig(max_prior_sigma=0.1)))
    model.reset()
    pred = model.predict(_clip("sideways", 10))
    held = pred.info["focal_held"]
    assert held["free_sigma_rel"] > model.cfg.stream_focal.max_prior_sigma
    start = model.cfg.focal_prior * W
    assert held["focal_px"] == pytest.approx(start)
    assert np.allclose(pred.K[:, 0, 0], start)
    report = model.intrinsics_report()
    assert report["focal_rel"] is None and report["held_focal_px"] == pytest.approx(start)
    assert not report["windows"][0]["used"]


def test_a_stated_focal_starts_the_estimate_and_windows_refine_it():
    truth = np.log(TRUE_REL * W)
    est = StreamFocal()
    est.state((W, H), 1.04 * TRUE_REL * W)  # EXIF, 4 % off (whole millimetres, a convention)
    assert est.intrinsics((W, H))[0, 0] == pytest.approx(1.04 * TRUE_REL * W)
    assert est.prior((W, H)) is None  # what a prior weighs is known only once a window told
    assert est.report((W, H))["focal_source"] == "stated"
    est.state((W, H), 2 * TRUE_REL * W)  # a second statement for the same images changes nothing
    assert np.exp(est.log_rel) == pytest.approx(1.04 * TRUE_REL)
    est.add(0, (W, H), truth, 0.005, 0.3)
    assert not est.fixed  # one window and a statement: not min_windows windows
    assert abs(np.exp(est.log_rel) / TRUE_REL - 1) < 0.005
    focal, weight = est.prior((W, H))
    assert weight == pytest.approx(0.3 / est.config.min_prior_sigma ** 2)
    est.add(1, (W, H), truth + 0.002, 0.005, 0.3)
    assert est.fixed and est.fixed_at == 1
    report = est.report((W, H))
    assert report["focal_source"] == "stated+windows" and report["stated_focal"]["used"]
    assert [w["window"] for w in report["windows"]] == [0, 1]  # the statement is not listed as a window


def test_windows_drop_a_wrong_stated_focal_and_still_fix_their_own():
    truth = np.log(TRUE_REL * W)
    est = StreamFocal()
    est.state((W, H), 1.3 * TRUE_REL * W)  # a photo cropped after capture: its EXIF is 30 % long
    for k, d in enumerate([0.003, -0.002]):
        est.add(k, (W, H), truth + d, 0.005, 0.3)
    assert not est.stated.used and est.fixed
    assert abs(np.exp(est.log_rel) / TRUE_REL - 1) < 0.005
    report = est.report((W, H))
    assert report["focal_source"] == "windows" and report["stated_focal"]["used"] is False


def test_a_new_image_shape_forgets_the_statement_and_takes_the_new_one():
    est = StreamFocal()
    est.state((W, H), 200.0)
    est.state((H, H), 150.0)  # another camera: square frames
    assert est.intrinsics((H, H))[0, 0] == pytest.approx(150.0) and len(est.windows) == 1


def test_a_forward_window_is_held_at_the_stated_focal():
    """Down a straight street nothing in the window pins the focal (the test above): with the focal
    its photos state, the window is solved with that one instead of the guess."""
    frames = _clip("forward", 10, scene_name="street")
    stated = 1.02 * TRUE_REL * W
    model = DefaultWindowModel()
    model.reset()
    pred = model.predict([replace(f, focal_hint=stated) for f in frames])
    assert np.allclose(pred.K[:, 0, 0], stated)
    report = model.intrinsics_report()
    assert report["focal_source"] == "stated" and report["focal_px"] == pytest.approx(stated)
    assert report["stated_focal"]["used"] and not report["windows"][0]["used"]


def test_a_window_that_reads_a_bending_lens_as_a_wider_view_is_held_at_its_start():
    """Driving forward through a strong barrel lens (a dashcam's), a window's pinhole fit reads the bend as a
    view wider than any rectilinear lens has (under ``min_focal_rel`` of the longest side): that
    estimate neither poses the window nor enters the stream's; the window is solved with the focal it
    started from, and says why."""
    width, height = 512, 288  # a 16:9 drive at the model's size
    scene = make_scene("street", seed=3)
    K = intrinsics_for(width, height, 90.0)
    c2w = make_trajectory("forward", 200, seed=3, scene=scene)[:20]  # 0.8 s at 25 fps
    frames = [Frame(index=i, timestamp=i / 25, image=render_view(scene, c, K, width, height, radial_k1=-0.12).rgb,
                    source=f"{i:03d}.png") for i, c in enumerate(c2w)]
    model = DefaultWindowModel()
    model.reset()
    pred = model.predict(frames)
    held = pred.info["focal_held"]
    assert held["implausible"] and held["free_estimate_px"] < model.cfg.stream_focal.min_focal_rel * width
    start = model.cfg.focal_prior * width
    assert np.allclose(pred.K[:, 0, 0], start)
    report = model.intrinsics_report()
    assert report["focal_rel"] is None and report["held_focal_px"] == pytest.approx(start)
    assert report["windows"][0]["plausible"] is False and not report["windows"][0]["used"]
