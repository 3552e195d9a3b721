"""The focal length of a window whose bundle adjustment did not converge in it: a 1-D profile search.

On forward motion the cost is nearly flat in the focal length along a curved valley (the focal
trades against depth and the forward translation), and Levenberg-Marquardt with the focal free
crawls along it: where it stops depends on where it started. With the focal fixed the rest is well
conditioned, so the profile cost ``c(log f)`` (every pose and point re-optimised at that focal)
is cheap to evaluate, a dozen iterations from a neighbouring solution. A parabola through its
lowest evaluations gives the minimum, from where the adjustment with the focal free (and the
stream's prior) converges; its curvature there is the window's evidence on the focal
(``bundle.FocalEvidence``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recon.default.bundle import BundleProblem, BundleResult, FocalEvidence, bundle_adjust

MIN_STEP, MAX_STEP = 0.05, 0.3  # first probe distance in log f, from the window's local sigma
FOCAL_RANGE = (0.1, 10.0)  # times the longest image side: fields of view from 157 to 6 degrees


def _solve(problem: BundleProblem, base: BundleResult, log_f: float) -> BundleResult:
    K = base.K.copy()
    K[0, 0] = K[1, 1] = float(np.exp(log_f))
    q = replace(problem, rvecs=base.rvecs, tvecs=base.tvecs, points=base.points, K=K, refine_focal=False,
                focal_prior=None, radial_k1=base.radial_k1)
    return bundle_adjust(q)


def _parabola(lfs: np.ndarray, costs: np.ndarray) -> tuple[float, float] | None:
    """Vertex and curvature (second derivative) of the parabola through three points, if convex."""
    a, b, _ = np.polyfit(lfs, costs, 2)
    if not np.isfinite(a) or a <= 0:
        return None
    return float(-b / (2 * a)), float(2 * a)


def profile_focal(problem: BundleProblem, start: BundleResult, sigma_hint: float,
                  max_evaluations: int = 6) -> tuple[BundleResult, FocalEvidence | None]:
    """The window re-solved from the minimum of its profile cost, and the observations' evidence on
    the focal; ``start`` is where the free-focal adjustment stopped, ``sigma_hint`` its local sigma
    (log units). Costs ``max_evaluations`` fixed-focal adjustments and one free one at most.

    Bracket first (from the start, probes at +-h, then steps doubling downhill while the lowest
    cost is at an end), then parabolic steps through the lowest point and its two neighbours, which
    stay inside the bracket. The profile is far from quadratic over a wide range (flat towards long
    focals, steep towards short ones), so nothing is extrapolated.
    """
    lf0 = float(np.log(start.K[0, 0]))
    side = 2.0 * max(start.K[0, 2], start.K[1, 2]) + 1.0
    lo, hi = float(np.log(FOCAL_RANGE[0] * side)), float(np.log(FOCAL_RANGE[1] * side))
    if not lo < lf0 < hi:
        return start, None
    h = float(np.clip(sigma_hint, MIN_STEP, MAX_STEP))
    evals: dict[float, BundleResult] = {}

    def probe(lf: float) -> None:
        evals[lf] = _solve(problem, evals[min(evals, key=lambda k: abs(k - lf))] if evals else start, lf)

    for lf in (lf0, max(lf0 - h, lo), min(lf0 + h, hi)):
        probe(lf)
    step = h
    while len(evals) < max_evaluations:
        lfs = sorted(evals)
        costs = [evals[k].cost for k in lfs]
        i = int(np.argmin(costs))
        if i == 0 or i == len(lfs) - 1:  # not bracketed: further downhill, within the plausible range
            step *= 2
            nxt = float(np.clip(lfs[i] + (step if i else -step), lo, hi))
            if min(abs(nxt - k) for k in evals) < 0.005:
                break
            probe(nxt)
            continue
        fit = _parabola(np.array(lfs[i - 1:i + 2]), np.array(costs[i - 1:i + 2]))
        if fit is None:
            break
        nxt = float(np.clip(fit[0], lfs[i - 1], lfs[i + 1]))
        if min(abs(nxt - k) for k in evals) < 0.005:
            break
        probe(nxt)
    lfs = sorted(evals)
    costs = [evals[k].cost for k in lfs]
    i = int(np.argmin(costs))
    if i == 0 or i == len(lfs) - 1:
        # No minimum within reach (sideways motion leaves the focal free, the cost falls all the way
        # to a pinhole at infinity): the focal is not observable here. Keep where the adjustment
        # stopped, and tell the stream nothing.
        return start, None
    best_lf = lfs[i]
    fit = _parabola(np.array(lfs[i - 1:i + 2]), np.array(costs[i - 1:i + 2]))
    if fit is not None:
        best_lf = float(np.clip(fit[0], lfs[i - 1], lfs[i + 1]))
    # Polish with the focal free again (and the stream's prior): near the minimum the adjustment
    # converges, and its curvature there is the window's evidence. The profile costs are only as
    # exact as each adjustment's stopping rule, too coarse for a curvature.
    base = evals[min(evals, key=lambda k: abs(k - best_lf))]
    K = base.K.copy()
    K[0, 0] = K[1, 1] = float(np.exp(best_lf))
    res = bundle_adjust(replace(problem, rvecs=base.rvecs, tvecs=base.tvecs, points=base.points, K=K,
                                radial_k1=base.radial_k1))
    return res, res.focal_evidence
