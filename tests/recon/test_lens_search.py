"""Growing a window through candidate lenses (recon/default/lens_search.py, WindowSfm.grow_k1).

The bend a candidate is named by does not move when the focal and the coefficient trade as a
sideways slide lets them; tracks undistorted through a lens leave out what lies past its fold; and a
sideways walk through a strong barrel lens, rendered, is solved with its views turned by degrees as
a pinhole and within a fraction of a degree once the window model grows it through the lens.
"""

from __future__ import annotations

import numpy as np
import pytest

from recon.default.calibration import StreamFocal, StreamFocalConfig
from recon.default.lens_search import LensSearchConfig, LensTrial, bend_of_k1, chosen_trial, k1_of_bend
from recon.default.model import DefaultWindowModel
from recon.default.tracks import Tracks, undistorted_tracks
from stream4d.contracts import Frame
from stream4d.geometry import radial_distorted, rotation_angle_deg
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence


def _K(f: float, size=(512, 384)) -> np.ndarray:
    W, H = size
    return np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])


def test_a_bend_is_the_same_lens_at_any_focal_the_trade_allows():
    size = (512, 384)
    k1 = k1_of_bend(0.2, _K(256.0), size)
    assert bend_of_k1(k1, _K(256.0), size) == pytest.approx(0.2)
    # focal s f with coefficient s^2 k1 sees the same image
    for s in (0.5, 0.9, 2.0):
        assert bend_of_k1(k1 * s * s, _K(256.0 * s), size) == pytest.approx(0.2)
        assert k1_of_bend(0.2, _K(256.0 * s), size) == pytest.approx(k1 * s * s)


def test_undistorted_tracks_invert_the_lens_and_leave_out_what_lies_past_its_fold():
    rng = np.random.default_rng(0)
    uv = np.c_[rng.uniform(0, 511, 5000), rng.uniform(0, 383, 5000)]
    tracks = Tracks(np.zeros(5000, np.int64), np.arange(5000), uv, 5000)
    K = _K(256.0)
    mild = undistorted_tracks(tracks, K, -0.05)
    assert len(mild.uv) == 5000
    assert np.abs(radial_distorted(mild.uv, K, -0.05) - uv).max() < 0.01
    strong = undistorted_tracks(tracks, K, -0.15)  # its fold lies inside the image's corners
    assert 0 < 5000 - len(strong.uv) < 1000
    assert np.abs(radial_distorted(strong.uv, K, -0.15) - uv[strong.track]).max() < 0.01
    left_out = np.setdiff1d(np.arange(5000), strong.track)
    centre = np.array([255.5, 191.5])
    assert np.linalg.norm(uv[left_out] - centre, axis=1).min() > np.linalg.norm(uv[strong.track] - centre, axis=1).max() - 1
    assert strong.num_tracks == tracks.num_tracks


def test_a_lens_is_chosen_only_when_it_fits_clearly_better_and_holds_as_many_views():
    cfg = LensSearchConfig()
    trials = [LensTrial(0.1, -0.12, 0.085, 20), LensTrial(0.2, -0.118, 0.083, 20)]
    assert chosen_trial(trials, 0.164, 20, cfg).bend == 0.2
    assert chosen_trial(trials, 0.09, 20, cfg) is None  # a little better: any free coefficient does that
    assert chosen_trial(trials, 0.164, 21, cfg) is None  # a lens that loses views
    assert chosen_trial([LensTrial(0.1, -0.1, float("nan"), 20)], 0.164, 20, cfg) is None
    assert chosen_trial([], 0.164, 20, cfg) is None


def test_a_window_solved_through_a_lens_its_pinhole_misread_is_no_evidence_of_the_focal():
    focal = StreamFocal(StreamFocalConfig())
    assert not focal.add(0, (512, 384), float(np.log(200.0)), 0.05, 0.1, misread=True)
    report = focal.report((512, 384))
    assert report["windows"][0]["misread"] and not report["windows"][0]["used"]
    assert focal.log_rel is None  # no estimate: later windows start from the same focal
    assert focal.add(1, (512, 384), float(np.log(260.0)), 0.05, 0.1)


def _sideways_walk(radial: float, views: int = 14, step: int = 3) -> tuple[list[Frame], np.ndarray]:
    """A walk sideways past the street's facades at FOV 90 (512x384) through a lens ``radial``: frames
    with no intrinsics, and the true camera-to-world poses."""
    W, H = 512, 384
    scene = make_scene("street", seed=5722)
    c2w = make_trajectory("sideways", 400, seed=5722, scene=scene)[: views * step : step]
    rendered = render_sequence(scene, c2w, intrinsics_for(W, H, 90.0), W, H, fps=10.0, noise_std=2.0, seed=5722,
                               radial_k1=radial)
    return [Frame(index=k, timestamp=k / 10.0, image=v.rgb, source=f"walk#{k}") for k, v in enumerate(rendered)], c2w


def _largest_turn_deg(c2w: np.ndarray, truth: np.ndarray) -> float:
    """The largest rotation of a view relative to the first one that the true path does not have."""
    first = c2w[0, :3, :3] @ truth[0, :3, :3].T
    return max(float(rotation_angle_deg((p[:3, :3] @ t[:3, :3].T) @ first.T)) for p, t in zip(c2w, truth))


def test_a_sideways_walk_through_a_barrel_lens_is_grown_through_it():
    frames, truth = _sideways_walk(-0.15)
    off = DefaultWindowModel()
    off.cfg.lens_search = LensSearchConfig(bends=())
    pinhole = off.predict(frames)
    model = DefaultWindowModel()
    pred = model.predict(frames)
    search = pred.info["lens_search"]
    assert search["taken"] and len(search["trials"]) == 2
    assert len(pred.c2w) == len(frames)
    assert _largest_turn_deg(pinhole.c2w, truth) > 3.0
    assert _largest_turn_deg(pred.c2w, truth) < 0.6
    # the lens found, as a bend (the focal is held: a sideways walk leaves it free); the truth bends 0.233
    assert model._stream_bend == pytest.approx(0.233, abs=0.02)
    window = model.intrinsics_report()["windows"][0]
    assert window["misread"] and not window["used"]
    assert window["lens"]["grown_through"] and window["lens"]["search"]["taken"]
