"""A window's evidence on the focal length: its sigma, the prior taken out, the profile search."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_default_bundle import _problem

from recon.default.bundle import bundle_adjust
from recon.default.focal_profile import profile_focal

TRUE_F = 400.0  # test_default_bundle._scene


def test_focal_sigma_is_honest_and_a_prior_is_taken_out_of_the_evidence():
    problem, _, _ = _problem(refine_focal=True)
    free = bundle_adjust(problem)
    ev = free.focal_evidence
    assert ev is not None and 0 < ev.sigma_log < 0.01
    assert abs(np.log(TRUE_F) - ev.log_focal) < 4 * ev.sigma_log + 0.002
    # A prior 5 % short, as strong as the window's own evidence, pulls the solution half way;
    # the evidence handed back is still what the observations say.
    prior = (TRUE_F * 0.95, ev.noise_px2 / ev.sigma_log ** 2)
    held = bundle_adjust(replace(problem, focal_prior=prior))
    assert held.K[0, 0] < free.K[0, 0] - 0.01 * TRUE_F
    assert held.focal_evidence.log_focal == pytest.approx(ev.log_focal, abs=0.2 * ev.sigma_log + 1e-3)


def test_profile_search_finds_the_focal_where_the_free_adjustment_stopped_short():
    problem, _, _ = _problem(refine_focal=True)
    K_long = problem.K.copy()
    K_long[0, 0] = K_long[1, 1] = 1.5 * TRUE_F
    # Where a crawling adjustment might stop: everything fitted to a focal 50 % long.
    stopped = bundle_adjust(replace(problem, K=K_long, refine_focal=False))
    assert np.median(stopped.residuals_px) > 0.5
    res, ev = profile_focal(problem, stopped, sigma_hint=0.1)
    assert ev is not None
    assert abs(np.exp(ev.log_focal) / TRUE_F - 1) < 0.01
    assert abs(res.K[0, 0] / TRUE_F - 1) < 0.01
    assert np.median(res.residuals_px) < 0.5


def test_an_off_centre_principal_point_is_estimated_from_the_window():
    problem, _, _ = _problem(refine_focal=True)
    W, H = 512, 384  # test_default_bundle._scene's K has its principal point at this image's centre
    true_pp = np.array([255.5 + 6.0, 191.5 - 5.0])
    K_true = problem.K.copy()
    K_true[0, 0] = K_true[1, 1] = TRUE_F
    K_true[:2, 2] = true_pp
    # The same observations as if the camera's principal point were off centre ...
    shifted = problem.obs_uv + (true_pp - problem.K[:2, 2])
    held = bundle_adjust(replace(problem, obs_uv=shifted, image_size=(W, H)))
    ev = held.focal_evidence
    assert ev is not None and ev.principal_step_px is not None
    # ... pin its x down: the cameras turn about their y axis, so a shift in x cannot pass for a
    # common turn (sigma far below the prior's 2 % of 512 px); y, which a common tilt mimics, less so
    sigma, step = ev.principal_sigma_px, ev.principal_step_px
    assert sigma[0] < 0.25 * 0.02 * W and sigma[1] > 2 * sigma[0]
    assert abs(problem.K[0, 2] + step[0] - true_pp[0]) < 3 * sigma[0] + 0.3
    assert abs(problem.K[1, 2] + step[1] - true_pp[1]) < 3 * sigma[1] + 0.3
    # With the principal point where the observations put it, nothing is left to step
    K_pp = problem.K.copy()
    K_pp[:2, 2] = true_pp
    at_truth = bundle_adjust(replace(problem, obs_uv=shifted, K=K_pp, image_size=(W, H))).focal_evidence
    assert np.all(np.abs(at_truth.principal_step_px) < 3 * at_truth.principal_sigma_px)
