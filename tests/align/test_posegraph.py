"""Sim(3) pose graph: a drifting chain around a circle, one loop edge, the drift goes."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from align.posegraph import Edge, PoseGraph, relative
from stream4d.geometry import Sim3


def _circle(n: int, radius: float = 10.0) -> list[Sim3]:
    """Camera anchors on a circle, looking at its centre (the true poses)."""
    poses = []
    for k in range(n):
        a = 2 * np.pi * k / n
        R = Rotation.from_euler("y", -a).as_matrix()
        poses.append(Sim3(1.0, R, np.array([radius * np.sin(a), 0.0, radius * np.cos(a)])))
    return poses


def _drifted(truth: list[Sim3], rng) -> list[Sim3]:
    """The chain integrated from relative poses with a small rotation, translation and scale bias each step."""
    bias = Sim3(1.01, Rotation.from_rotvec([0.0, 0.01, 0.004]).as_matrix(), np.array([0.02, 0.01, 0.0]))
    est = [truth[0]]
    for k in range(1, len(truth)):
        rel = relative(truth[k - 1], truth[k])
        noisy = bias.compose(rel) if k % 2 else rel.compose(bias)
        noisy = Sim3(noisy.s * np.exp(rng.normal(0, 0.002)), noisy.R, noisy.t)
        est.append(est[-1].compose(noisy))
    return est


def _end_error(poses: list[Sim3], truth: list[Sim3]) -> float:
    return float(np.linalg.norm(poses[-1].t - truth[-1].t))


def test_loop_edge_removes_drift():
    rng = np.random.default_rng(0)
    truth = _circle(40)
    est = _drifted(truth, rng)
    graph = PoseGraph()
    for k, T in enumerate(est):
        graph.add_node(k, T)
    for k in range(1, len(est)):
        graph.add_sequential(k - 1, k)
    # The last node sees the first: the loop measures the true relative pose.
    graph.add_edge(Edge(0, len(est) - 1, relative(truth[0], truth[-1]), weight=5.0, kind="loop"))
    before = _end_error(est, truth)
    result = graph.optimise()
    after_poses = [result.corrections[k].compose(est[k]) for k in range(len(est))]
    after = _end_error(after_poses, truth)
    assert before > 1.0  # the chain really drifted (radius 10)
    assert after < before / 10
    # Not only the end: the whole chain comes back (mid-way error well below the drift).
    mid = len(est) // 2
    assert np.linalg.norm(after_poses[mid].t - truth[mid].t) < 0.5 * np.linalg.norm(est[mid].t - truth[mid].t)
    assert result.corrections[0].s == 1.0 and np.allclose(result.corrections[0].t, 0)  # the gauge stays
    assert not result.rejected


def test_contradicting_loop_is_rejected():
    truth = _circle(20)
    graph = PoseGraph()
    for k, T in enumerate(truth):
        graph.add_node(k, T)
    for k in range(1, len(truth)):
        graph.add_sequential(k - 1, k, weight=1.0)
    good = Edge(0, 19, relative(truth[0], truth[19]), weight=1.0, kind="loop")
    wrong = Edge(2, 17, Sim3(3.0, np.eye(3), np.array([40.0, 0, 0])), weight=1.0, kind="loop")
    graph.add_edge(good)
    graph.add_edge(wrong)
    result = graph.optimise()
    assert result.rejected == [wrong]
    assert wrong not in graph.edges and good in graph.edges
    for k in range(20):  # the consistent loop leaves the exact chain where it was
        assert np.allclose(result.corrections[k].compose(truth[k]).t, truth[k].t, atol=1e-6)


def _rotation_deg(a: Sim3, b: Sim3) -> float:
    return float(np.degrees(Rotation.from_matrix(a.R.T @ b.R).magnitude()))


def test_loops_are_weighed_by_their_own_noise():
    """An exact double orbit: precise correct loops tie the second turn to the first, and one imprecise
    loop 2 degrees / 0.3 m off (a wide-baseline PnP on few bunched points) ties node 0 to node 2. Each
    whitened by its own sigma, the precise loops contradict the imprecise one, which is dropped, and the
    chain stays exact. Weighed alike (no sigma: the configured sequential sigmas for every edge, the
    behaviour before) the imprecise loop is kept and bends the exact chain."""
    truth = _circle(8) * 2  # two turns over the same ring: node k + 8 sees what node k saw
    off = Sim3(1.0, Rotation.from_rotvec([0.0, np.radians(2.0), 0.0]).as_matrix(), np.array([0.3, 0.0, 0.0]))

    def solve(sigmas: bool):
        graph = PoseGraph()
        for k, T in enumerate(truth):
            graph.add_node(k, T)
        for k in range(1, len(truth)):
            graph.add_sequential(k - 1, k)
        for i, j in ((0, 8), (0, 9), (1, 9), (1, 10), (2, 10), (2, 11)):
            graph.add_edge(Edge(i, j, relative(truth[i], truth[j]), kind="loop",
                                sigma=(1e-4, 2e-3, 1e-3) if sigmas else None))
        wrong = Edge(0, 2, relative(truth[0], truth[2]).compose(off), kind="loop",
                     sigma=(np.radians(0.4), 0.05, 0.01) if sigmas else None)
        graph.add_edge(wrong)
        result = graph.optimise()
        return [result.corrections[k].compose(truth[k]) for k in range(len(truth))], wrong in result.rejected

    (weighed, dropped), (alike, dropped_alike) = solve(True), solve(False)
    worst = max(_rotation_deg(T, truth[k]) for k, T in enumerate(weighed))
    worst_alike = max(_rotation_deg(T, truth[k]) for k, T in enumerate(alike))
    assert not dropped_alike and worst_alike > 0.2  # weighed alike, the wrong loop bends the exact chain
    assert dropped and worst < 1e-3
    assert max(np.linalg.norm(T.t - truth[k].t) for k, T in enumerate(weighed)) < 1e-3



def test_a_chain_measured_precise_holds_against_a_loop_off_by_more_than_its_own_sigma():
    """Six windows on an arc, the chain exact, one loop from the first to the last 0.5 degrees, 0.1 and 1 %
    off while it claims 0.3 degrees, 0.05 and 0.1 % (a wide-baseline loop: its PnP and depth ratios
    take the stored window's points as exact). Sequential edges that carry the noise the aligner
    measured on their shared frames (0.006 degrees, 0.002, 0.02 %) keep the chain where it is; held
    at the configured sigmas (the behaviour before) the chain is the looser side and the loop bends it."""
    truth = _circle(24)[:6]
    off = Sim3(1.01, Rotation.from_rotvec([0.0, np.radians(0.5), 0.0]).as_matrix(), np.array([0.1, 0.0, 0.0]))

    def solve(measured: bool) -> float:
        graph = PoseGraph(min_sequential_sigma=(1e-6, 1e-6, 1e-6))
        for k, T in enumerate(truth):
            graph.add_node(k, T)
        for k in range(1, len(truth)):
            graph.add_sequential(k - 1, k, sigma=(1e-4, 2e-3, 2e-4) if measured else None)
        graph.add_edge(Edge(0, 5, relative(truth[0], truth[5]).compose(off), kind="loop",
                            sigma=(np.radians(0.3), 0.05, 1e-3)))
        result = graph.optimise()
        return max(_rotation_deg(result.corrections[k].compose(truth[k]), truth[k]) for k in range(len(truth)))

    assert solve(measured=False) > 0.2
    assert solve(measured=True) < 0.01


def test_a_link_measured_by_pnp_holds_a_re_attached_segment_against_an_overconfident_loop():
    """The same arc in two segments: windows 0-2, then 3-5 re-attached to window 0 by a link edge (PnP on
    window 0's keyframe), each chain measured precise. Unmeasured, the link is the one loose edge and
    takes the loop's whole 0.5 degrees; measured, it holds as the chain does. The link is never dropped."""
    truth = _circle(24)[:6]
    off = Sim3(1.01, Rotation.from_rotvec([0.0, np.radians(0.5), 0.0]).as_matrix(), np.array([0.1, 0.0, 0.0]))

    def solve(link_sigma) -> float:
        graph = PoseGraph(min_sequential_sigma=(1e-6, 1e-6, 1e-6))
        for k, T in enumerate(truth):
            graph.add_node(k, T)
        for k in (1, 2, 4, 5):
            graph.add_sequential(k - 1, k, sigma=(1e-4, 2e-3, 2e-4))
        graph.add_sequential(0, 3, kind="link", sigma=link_sigma)
        graph.add_edge(Edge(0, 5, relative(truth[0], truth[5]).compose(off), kind="loop",
                            sigma=(np.radians(0.3), 0.05, 1e-3)))
        result = graph.optimise()
        assert sum(e.kind == "link" for e in graph.edges) == 1
        return max(_rotation_deg(result.corrections[k].compose(truth[k]), truth[k]) for k in range(len(truth)))

    assert solve(None) > 0.2
    assert solve((1e-4, 2e-3, 2e-4)) < 0.01


def test_windows_that_stand_still_do_not_make_the_walk_look_exact():
    """A turn on the spot, then a walk: three windows anchored at one spot (a tenth of a millimetre
    apart), and one 0.3 further on, placed from the first by a bridge across the turn (the overlap
    gave no scale) that left it 6 mm off and 0.65 % small. A precise loop from the first window to it
    says where it is. The usual distance between windows is the walk's step: were it the median
    edge (the turn's near-zero ones), the bridge's translation would look exact to a micrometre, the
    loop would contradict it and be dropped, and the walk would stay where the bridge put it."""
    truth = [Sim3(1.0, Rotation.from_euler("y", np.radians(a)).as_matrix(), np.array([1e-4 * k, 0.0, 0.0]))
             for k, a in enumerate((0.0, 45.0, 90.0))]
    truth.append(Sim3(1.0, truth[2].R, truth[2].t + truth[2].R @ np.array([0.0, 0.0, 0.3])))
    est = truth[:3] + [Sim3(0.9935, truth[3].R, truth[3].t + np.array([0.006, 0.0, 0.0]))]
    graph = PoseGraph()
    for k, T in enumerate(est):
        graph.add_node(k, T)
    graph.add_sequential(0, 1)
    graph.add_sequential(1, 2)
    graph.add_sequential(0, 3)  # the bridge
    graph.add_edge(Edge(0, 3, relative(truth[0], truth[3]), kind="loop", sigma=(1e-4, 1e-4, 5e-4)))
    assert abs(graph.step() - 0.3) < 0.01  # the walk's step, not the turn's
    result = graph.optimise()
    assert not result.rejected
    after = result.corrections[3].compose(est[3])
    assert np.linalg.norm(after.t - truth[3].t) < 5e-4 and abs(np.log(after.s)) < 1e-3


def _noisy(Z: Sim3, rng, rotation: float, translation: float, scale: float) -> Sim3:
    """``Z`` times a random similarity with the given standard deviations (rad, units, log)."""
    E = Sim3(float(np.exp(rng.normal(0, scale))), Rotation.from_rotvec(rng.normal(0, rotation, 3)).as_matrix(),
             rng.normal(0, translation, 3))
    return Z.compose(E)


def _chained(first: Sim3, steps: list[Sim3], loops: list[tuple[int, int, Sim3]], sigma, estimate: bool):
    """A graph whose nodes are ``first`` chained by ``steps`` (held by sequential edges) and whose
    ``loops`` (i, j, measured T_i^-1 T_j) claim noise ``sigma``; the graph and the chained poses."""
    graph = PoseGraph(estimate_variances=estimate)
    est = [first]
    for Z in steps:
        est.append(est[-1].compose(Z))
    for k, T in enumerate(est):
        graph.add_node(k, T)
    for k in range(1, len(est)):
        graph.add_sequential(k - 1, k)
    for i, j, Z in loops:
        graph.add_edge(Edge(i, j, Z, kind="loop", sigma=sigma))
    return graph, est


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_variance_components_learn_a_chain_better_than_its_prior(seed):
    """Two turns around a ring of 24 windows: the chain's steps are off by 2e-4 rad (100x below the
    graph's prior of 0.02), and 16 loops (node k to k + 12) are off by 5x the sigma they claim. With
    the prior the loops outweigh the chain and bend it; with variance components the graph learns from
    its own residuals that the chain is the precise part, and the poses come out closer to the truth."""
    truth = _circle(12) * 2
    rng = np.random.default_rng(seed)
    steps = [_noisy(relative(truth[k - 1], truth[k]), rng, 2e-4, 2e-4, 2e-4) for k in range(1, len(truth))]
    claimed = (1e-3, 1e-3, 1e-3)
    loops = [(k, k + 12, _noisy(relative(truth[k], truth[k + 12]), rng, 5e-3, 5e-3, 5e-3)) for k in range(12)]
    loops += [(k, k + 11, _noisy(relative(truth[k], truth[k + 11]), rng, 5e-3, 5e-3, 5e-3)) for k in range(1, 5)]

    def solve(estimate: bool):
        graph, est = _chained(truth[0], steps, loops, claimed, estimate)
        result = graph.optimise()
        poses = [result.corrections[k].compose(est[k]) for k in range(len(est))]
        return graph, float(np.mean([_rotation_deg(T, truth[k]) for k, T in enumerate(poses)]))

    (prior, with_prior), (learnt, with_learnt) = solve(False), solve(True)
    assert with_learnt < 0.25 * with_prior
    sequential = np.sqrt(learnt.variance["sequential", 0]) * learnt.sigma_rotation
    loop = np.sqrt(learnt.variance["loop", 0]) * claimed[0]
    assert 5e-5 < sequential < 8e-4  # the chain's own 2e-4, not the prior's 0.02
    assert 3 * claimed[0] < loop < 8 * claimed[0]  # the loops are 5x worse than they claim
    assert prior.variance["sequential", 0] == 1.0  # off: the graph's sigmas as given


def test_a_step_the_window_model_got_wrong_does_not_drop_right_loops():
    """With learnt noise the chain is held tight, so one step 50x worse than the rest strains its own
    edge past ``chi_limit`` once the loops pull it straight. That step is the chain's fault: the right
    loops that expose it stay, and they correct it (least squares spreads the correction over the
    steps the loops span, so not all of it)."""
    truth = _circle(12) * 2
    rng = np.random.default_rng(0)
    steps = [_noisy(relative(truth[k - 1], truth[k]), rng, 2e-4, 2e-4, 2e-4) for k in range(1, len(truth))]
    steps[15] = _noisy(relative(truth[15], truth[16]), rng, 1e-2, 1e-2, 1e-2)
    loops = [(k, k + 12, _noisy(relative(truth[k], truth[k + 12]), rng, 2e-4, 2e-4, 2e-4)) for k in range(12)]
    graph, est = _chained(truth[0], steps, loops, (2e-4, 2e-4, 2e-4), estimate=True)
    result = graph.optimise()
    assert not result.rejected
    poses = [result.corrections[k].compose(est[k]) for k in range(len(est))]
    before = max(_rotation_deg(T, truth[k]) for k, T in enumerate(est))
    after = max(_rotation_deg(T, truth[k]) for k, T in enumerate(poses))
    assert before > 1.0 and after < 0.4 * before


def test_a_look_alike_place_that_would_bend_the_chain_is_dropped():
    """A straight drive of 13 windows a step apart, each step right to 2e-4; a loop from window 10 to
    window 0 (a facade that repeats down the street) claims, with a sigma of 1e-4, that window 10 sits 1.5
    steps from where the chain put it. Learning the noise must not let that loop teach the graph that its
    steps are this bad: no chain drifts that much, so the loop goes and the chain stays as it was."""
    truth = [Sim3(1.0, np.eye(3), np.array([0.0, 0.0, float(k)])) for k in range(13)]
    rng = np.random.default_rng(0)
    steps = [_noisy(relative(truth[k - 1], truth[k]), rng, 2e-4, 2e-4, 2e-4) for k in range(1, len(truth))]
    look_alike = relative(truth[0], Sim3(1.0, np.eye(3), np.array([0.0, 0.0, 8.5])))
    graph, est = _chained(truth[0], steps, [(0, 10, look_alike)], (1e-4, 1e-4, 1e-4), estimate=True)
    result = graph.optimise()
    assert len(result.rejected) == 1 and result.rejected[0].kind == "loop"
    assert set(graph.variance.values()) == {1.0}  # nothing learnt from the loop that went
    moved = max(np.linalg.norm(result.corrections[k].apply(est[k].t[None])[0] - est[k].t) for k in range(len(est)))
    assert moved < 1e-6, moved
