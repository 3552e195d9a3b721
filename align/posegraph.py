"""Sim(3) pose graph over windows, solved by Levenberg-Marquardt (scipy ``least_squares``).

Each node is one window's anchor pose ``T_i`` in Sim(3): the camera-to-world of a
representative frame with a scale (1 when the window is placed). An edge ``(i, j, Z_ij)``
says ``T_i^-1 T_j`` should equal ``Z_ij``; sequential edges take ``Z`` from the placement the
aligner gave (so they hold the chain as it is, and only bend where a loop pulls), loop edges
from a verified loop match. Residuals are expressed in node ``i``'s frame, so a rotation
about a far-away origin costs what it costs locally:

    E = Z_ij^-1 T_i^-1 T_j,   r = [rotvec(E.R) / sigma_rot, E.t / (step sigma_trans), log(E.s) / sigma_scale] * weight

``step`` is the median length of the sequential edges that moved (translation in units of the usual
distance between windows; windows anchored on one spot are left out, see :meth:`PoseGraph.step`);
the sigmas are the noise of one sequential alignment, so a whitened residual above ``chi_limit`` is
an edge the rest of the graph contradicts. An edge that carries its own noise (``Edge.sigma``:
measured where it was made) is whitened by that instead, each part at least the graph's floor
(``min_sigma``): a loop is then weighed against the chain by how well each was actually measured,
not by one fixed ratio. A sequential edge the aligner measured (``add_sequential(sigma=...)``: how
far the two windows still disagree on their shared frames, carried to the anchor) is whitened by
that, with only a guard against zero (``min_sequential_sigma``): without it a loop that claims a
tenth of a degree would be the tighter side against a chain whose steps are a hundredth of a degree
apart, and bend it. After a solve, the loop edge with the largest whitened residual is dropped
while any edge is above that limit (a wrong loop strains its own edge or the chain it bends), and
the graph is solved again from where it was.

Neither the configured sequential sigmas nor a loop's own are right (measured against ground
truth: a window step is 25-100x more precise than the configured sigmas, a loop 2-20x less than
its own). With ``estimate_variances`` the graph learns both from its residuals (variance-component
estimation): after each solve, the rotation, translation and scale rows of each edge kind get the
variance factor that makes their whitened residuals match their share of the redundancy, and the
graph is solved again, until the factors settle. The factors persist between solves, so later loops
are judged (``whitened_norm``, ``chi_limit``) against the learnt noise. A chain held that tight shows
a step the window model got wrong as a strain on that step's own edge, so then a loop is dropped for
its own residual, or when the solve bent the chain past ``chi_limit`` of the configured sigmas (which
allow far more than a step is ever off; the learnt noise where larger): a look-alike place (a facade
repeated down a street) matched with a tight sigma would otherwise teach the graph that its steps are
that bad and stay. The new loop that asked for the largest move goes then. The first node of the
graph is held fixed (the gauge of a monocular world is 7 degrees of freedom: one whole Sim(3)). The Jacobian is sparse (an edge
touches two nodes), which ``least_squares`` uses through ``jac_sparsity``.

What the caller gets back is one correction per node, ``C_i = T_i_new T_i_old^-1``: a
similarity in the world frame that maps everything the window emitted to where it belongs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeResult, least_squares
from scipy.sparse import lil_matrix
from scipy.spatial.transform import Rotation

from stream4d.geometry import Sim3


@dataclass(frozen=True, eq=False)  # identity: two measurements of the same pair are two edges
class Edge:
    i: int  # node ids (window indices)
    j: int
    Z: Sim3  # measured T_i^-1 T_j
    weight: float = 1.0
    kind: str = "sequential"  # or "loop"
    # The edge's own noise (rotation rad, translation world units, log scale), measured where the edge was
    # made (a loop: its PnP covariance and depth-ratio spread); None: the graph's sigmas.
    sigma: tuple[float, float, float] | None = None


@dataclass
class GraphResult:
    corrections: dict[int, Sim3]  # node -> C_i (world-frame similarity to apply to what it emitted)
    edge_errors: list[tuple[Edge, float, float, float]]  # edge, rotation (deg), translation (/ step), |log s|
    iterations: int
    cost_before: float
    cost_after: float
    seconds: float
    nodes: int = 0
    rejected: list[Edge] = field(default_factory=list)  # loop edges dropped as outliers


STILL_FRACTION = 0.01  # a sequential edge shorter than this x the longest stood still
KINDS = ("sequential", "loop")
PARTS = ((0, slice(0, 3)), (1, slice(3, 6)), (2, slice(6, 7)))  # rotation, translation, log scale rows
VARIANCE_BOUNDS = (1e-6, 1e6)  # a variance factor's range (its sigmas change by at most 1000x)
# A measured sequential sigma below this (rad, fraction of the step, log) is taken as this: shared frames
# that agree exactly (a still camera) must not make a rigid edge.
MEASURED_GUARD = (1e-6, 1e-6, 1e-6)
VARIANCE_MAX_NODES = 150  # past this the learnt factors are kept: the dense redundancy would cost O(nodes^3)


def sim3_from_pose(c2w: np.ndarray, s: float = 1.0) -> Sim3:
    """A node pose from a camera-to-world ``[4, 4]`` (and a scale)."""
    return Sim3(float(s), np.asarray(c2w[:3, :3], np.float64).copy(), np.asarray(c2w[:3, 3], np.float64).copy())


def relative(Ti: Sim3, Tj: Sim3) -> Sim3:
    """``T_i^-1 T_j``."""
    return Ti.inverse().compose(Tj)


def _rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation vector of ``R [3, 3]`` (scipy's Rotation costs ~20x more per call, and the solver calls
    this once per edge per evaluation)."""
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-6:
        return 0.5 * w
    if angle > np.pi - 1e-4:  # near half a turn the antisymmetric part vanishes
        return Rotation.from_matrix(R).as_rotvec()
    return angle / (2.0 * np.sin(angle)) * w


def _matrix(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def _pack(T: Sim3) -> np.ndarray:
    return np.concatenate([_rotvec(T.R), T.t, [np.log(T.s)]])


def _unpack(x: np.ndarray) -> Sim3:
    return Sim3(float(np.exp(x[6])), _matrix(x[:3]), x[3:6].copy())


def _kind(edge: Edge) -> str:
    """The noise group an edge belongs to: a loop, or held like a sequential alignment. A link that
    carries its own noise was measured as a loop is (PnP on a stored keyframe) and is weighed with the
    loops; it is never dropped, though (``Edge.kind`` stays "link")."""
    if edge.kind == "link" and edge.sigma is not None:
        return "loop"
    return edge.kind if edge.kind in KINDS else "sequential"


def edge_error(Ti: Sim3, Tj: Sim3, Z: Sim3) -> Sim3:
    return Z.inverse().compose(relative(Ti, Tj))


class PoseGraph:
    """Nodes (window anchor poses) and edges; :meth:`optimise` moves the nodes and reports corrections."""

    def __init__(self, sigma_rotation: float = 0.02, sigma_translation: float = 0.05, sigma_scale: float = 0.03,
                 chi_limit: float = 5.0, max_iterations: int = 100,
                 min_sigma: tuple[float, float, float] = (1e-4, 1e-3, 1e-3),
                 estimate_variances: bool = False, min_redundancy: float = 3.0, variance_rounds: int = 10,
                 variance_tolerance: float = 0.05, min_sequential_sigma: tuple[float, float, float] | None = None):
        self.poses: dict[int, Sim3] = {}
        self.edges: list[Edge] = []
        self.sigma_rotation = sigma_rotation  # rad
        self.sigma_translation = sigma_translation  # fraction of the median sequential step
        self.sigma_scale = sigma_scale  # log scale
        self.chi_limit = chi_limit
        self.max_iterations = max_iterations
        self.min_sigma = min_sigma  # floor of an edge's own sigmas (rad, fraction of the step, log scale)
        # the same for sequential edges that carry their own (default: min_sigma)
        self.min_sequential_sigma = min_sigma if min_sequential_sigma is None else min_sequential_sigma
        # (kind, part) -> factor on the variance of that part of every edge of that kind (1: as given)
        self.variance = {(k, p): 1.0 for k in KINDS for p, _ in PARTS}
        self.estimate_variances = estimate_variances
        self.min_redundancy = min_redundancy
        self.variance_rounds = variance_rounds
        self.variance_tolerance = variance_tolerance  # |log| change of every factor below which rounds stop

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def nbytes(self) -> int:
        return 8 * 13 * len(self.poses) + 8 * 16 * len(self.edges)

    def add_node(self, node: int, pose: Sim3) -> None:
        self.poses[node] = pose

    def add_edge(self, edge: Edge) -> None:
        if edge.i not in self.poses or edge.j not in self.poses:
            raise ValueError(f"edge {edge.i}-{edge.j} names a node the graph does not have")
        self.edges.append(edge)

    def add_sequential(self, i: int, j: int, weight: float = 1.0, kind: str = "sequential",
                       sigma: tuple[float, float, float] | None = None) -> None:
        """An edge that holds the current relative placement of ``i`` and ``j`` (``kind`` "link": a segment's
        re-attachment, which spans windows; its noise is learnt with the loops' when it carries its own,
        else with the sequential edges'). ``sigma``: the noise the alignment measured for it (rad, world
        units, log scale; None: the graph's sigmas)."""
        self.add_edge(Edge(i, j, relative(self.poses[i], self.poses[j]), weight, kind, sigma))

    def move_nodes(self, nodes, sim3: Sim3) -> None:
        """Nodes mapped by a world-frame similarity (a segment re-attached elsewhere)."""
        for n in nodes:
            self.poses[n] = sim3.compose(self.poses[n])

    def step(self) -> float:
        """Median translation length of the sequential edges that moved (1 when none did). Windows
        that stand on one spot (a pause, a turn on the spot) are left out: the usual distance between
        windows is what the camera covers when it moves, and a step near zero would make every
        sequential translation look exact."""
        lengths = np.array([np.linalg.norm(e.Z.t) for e in self.edges if _kind(e) == "sequential"])
        moved = lengths[lengths > STILL_FRACTION * lengths.max()] if len(lengths) else lengths
        med = float(np.median(moved)) if len(moved) else 1.0
        return med if med > 1e-12 else 1.0

    def whitened_norm(self, edge: Edge, step: float | None = None) -> float:
        """Norm of an edge's whitened residual at the current poses (how surprising it is)."""
        E = edge_error(self.poses[edge.i], self.poses[edge.j], edge.Z)
        return float(np.linalg.norm(self._whiten(_pack(E), edge, self.step() if step is None else step)))

    def _chain_strain(self, edges: list[Edge], step: float, before: dict[int, Sim3],
                      learnt: dict[tuple[str, int], float]) -> float:
        """How far this solve bent the chain from where it was (``before``), in the configured sequential
        sigmas, or the noise learnt before this solve (``learnt`` factors) where that is larger: the norm
        of every window step's change, whitened by them. One loop's bend spread over n steps gives its
        distance from the chain over the sigma x sqrt(n). The prior allows far more than a window step is
        ever off, so a bend past ``chi_limit`` came from a loop that cannot be right (a look-alike place),
        not from drift. Bends of earlier solves are settled and not counted again."""
        prior = np.array([self.sigma_rotation, step * self.sigma_translation, self.sigma_scale])
        factor = np.sqrt([learnt["sequential", part] for part, _ in PARTS])
        squares = 0.0
        for e in edges:
            if e.kind == "sequential":
                own = prior if e.sigma is None else np.array(e.sigma)
                sigma = np.repeat(np.maximum(prior, own * factor), [3, 3, 1])
                was = relative(before[e.i], before[e.j])
                r = _pack(edge_error(self.poses[e.i], self.poses[e.j], was)) / sigma
                squares += float(r @ r)
        return float(np.sqrt(squares))

    def _whiten(self, r: np.ndarray, edge: Edge, step: float) -> np.ndarray:
        """An edge's residual ``[7]`` divided by its noise, times its weight."""
        if edge.sigma is None:
            r[:3] /= self.sigma_rotation
            r[3:6] /= step * self.sigma_translation
            r[6] /= self.sigma_scale
        else:
            floor = self.min_sigma if _kind(edge) == "loop" else self.min_sequential_sigma
            r[:3] /= max(edge.sigma[0], floor[0])
            r[3:6] /= max(edge.sigma[1], step * floor[1])
            r[6] /= max(edge.sigma[2], floor[2])
        for part, rows in PARTS:
            r[rows] /= np.sqrt(self.variance[_kind(edge), part])
        return edge.weight * r

    def _residuals(self, x: np.ndarray, order: list[int], fixed: int, edges: list[Edge], step: float) -> np.ndarray:
        poses = {n: self.poses[n] for n in order}
        for k, n in enumerate(o for o in order if o != fixed):
            poses[n] = _unpack(x[7 * k: 7 * k + 7])
        out = np.empty(7 * len(edges))
        for m, e in enumerate(edges):
            out[7 * m: 7 * m + 7] = self._whiten(_pack(edge_error(poses[e.i], poses[e.j], e.Z)), e, step)
        return out

    def optimise(self, nodes: list[int] | None = None, new: list[Edge] | None = None) -> GraphResult:
        """Optimise ``nodes`` (all by default; the first is held fixed) over the edges between them. ``new``:
        the loops added since the last solve (all loops by default), the only ones a bent chain drops."""
        start = time.perf_counter()
        order = sorted(self.poses if nodes is None else nodes)
        chosen = set(order)
        edges = [e for e in self.edges if e.i in chosen and e.j in chosen]
        rejected: list[Edge] = []
        old = {n: self.poses[n] for n in order}
        learnt = dict(self.variance)
        iterations, cost_before, cost_after = 0, 0.0, 0.0
        step = self.step()
        # How far each new loop asks the graph to move, at the poses it starts from.
        fresh = {id(e): self.whitened_norm(e, step) for e in (new if new is not None else edges) if e.kind == "loop"}
        rounds = 0
        while True:
            result = self._solve(order, edges, step)
            iterations += result.nfev
            if not cost_before:
                cost_before = float(0.5 * np.sum(self._residuals(self._x0(order), order, order[0], edges, step) ** 2))
            cost_after = float(result.cost)
            self._store(result.x, order)
            x = self._x0(order)
            norms = [float(np.linalg.norm(self._residuals(x, order, order[0], [e], step))) for e in edges]
            loops = [(n, k) for k, (n, e) in enumerate(zip(norms, edges)) if e.kind == "loop"]
            worst_loop = max(loops, default=(0.0, -1))
            chain = self._chain_strain(edges, step, old, learnt) if self.estimate_variances else 0.0
            suspects = [e for e in edges if id(e) in fresh]
            # With learnt noise a step the window model got wrong can strain its own edge: that is no
            # reason to drop a loop, so a loop's own residual counts, and the chain's against the prior.
            strain = worst_loop[0] if self.estimate_variances else max(norms, default=0.0)
            if not loops or (strain <= self.chi_limit and (chain <= self.chi_limit or not suspects)):
                if (self.estimate_variances and rounds < self.variance_rounds
                        and self._update_variances(result, order, edges, step) > self.variance_tolerance):
                    rounds += 1  # solve again from here with the new weights
                    continue
                break
            if strain > self.chi_limit:
                worst = edges[worst_loop[1]]
            else:  # the chain bent further than any chain drifts: the new loop that asked most for it goes
                worst = max(suspects, key=lambda e: fresh[id(e)])
            edges.remove(worst)
            rejected.append(worst)
            for n in order:  # start again from where the chain was, with the noise learnt without that loop
                self.poses[n] = old[n]
            self.variance = dict(learnt)
            rounds = 0
        self.edges = [e for e in self.edges if e not in rejected]
        corrections = {n: self.poses[n].compose(old[n].inverse()) for n in order}
        errors = []
        for e in edges:
            E = edge_error(self.poses[e.i], self.poses[e.j], e.Z)
            errors.append((e, float(np.degrees(Rotation.from_matrix(E.R).magnitude())),
                           float(np.linalg.norm(E.t) / step), float(abs(np.log(E.s)))))
        return GraphResult(corrections, errors, iterations, cost_before, cost_after,
                           time.perf_counter() - start, len(order), rejected)

    def noise(self) -> dict[str, dict[str, float]]:
        """Each edge kind's noise as the graph now weighs it: sequential edges' sigmas (their median:
        degrees, fraction of the window step, scale %) and loop edges' factors on their own sigmas (1: as
        measured)."""
        f = {key: float(np.sqrt(v)) for key, v in self.variance.items()}
        step = self.step()
        configured = (self.sigma_rotation, step * self.sigma_translation, self.sigma_scale)
        own = [e.sigma or configured for e in self.edges if e.kind == "sequential"] or [configured]
        floor = (self.min_sequential_sigma[0], step * self.min_sequential_sigma[1], self.min_sequential_sigma[2])
        median = [float(np.median([max(s[p], floor[p]) for s in own])) * f["sequential", p] for p in range(3)]
        return {"sequential": {"rotation_deg": float(np.degrees(median[0])), "translation_of_step": median[1] / step,
                               "scale_pct": 100.0 * median[2]},
                "loop_factor": {"rotation": f["loop", 0], "translation": f["loop", 1], "scale": f["loop", 2]}}

    def _update_variances(self, result: OptimizeResult, order: list[int], edges: list[Edge], step: float) -> float:
        """One step of variance-component estimation (Helmert / Foerstner): each group of rows (an edge
        kind's rotation, translation or scale parts) gets the variance factor that makes its whitened
        residuals' sum of squares equal its redundancy (the rows' share of the graph's degrees of freedom,
        ``1 - diag(J (J^T J)^-1 J^T)``). A kind with less redundancy than ``min_redundancy`` keeps its
        factors (too few rows to estimate from); a part below it takes its kind's pooled ratio. Returns
        the largest change (|log| of the factor's ratio)."""
        if getattr(result, "jac", None) is None or len(order) > VARIANCE_MAX_NODES or result.status == 0:
            return 0.0  # no Jacobian, too large, or a solve cut off by max_nfev (unconverged residuals)
        J = result.jac.toarray() if hasattr(result.jac, "toarray") else np.asarray(result.jac)
        q, _ = np.linalg.qr(J)
        redundancy = (1.0 - np.einsum("ij,ij->i", q, q)).reshape(-1, 7)  # [edges, 7]
        squares = (self._residuals(result.x, order, order[0], edges, step) ** 2).reshape(-1, 7)
        kinds = np.array([_kind(e) for e in edges])
        change = 0.0
        for kind in KINDS:
            dof, sq = redundancy[kinds == kind], squares[kinds == kind]
            if dof.sum() < self.min_redundancy:
                continue
            pooled = sq.sum() / dof.sum()
            for part, rows in PARTS:
                part_dof = float(dof[:, rows].sum())
                ratio = sq[:, rows].sum() / part_dof if part_dof >= self.min_redundancy else pooled
                old = self.variance[kind, part]
                new = float(np.clip(old * ratio, *VARIANCE_BOUNDS))
                self.variance[kind, part] = new
                change = max(change, abs(np.log(new / old)))
        return change

    def _x0(self, order: list[int]) -> np.ndarray:
        return np.concatenate([_pack(self.poses[n]) for n in order[1:]]) if len(order) > 1 else np.zeros(0)

    def _store(self, x: np.ndarray, order: list[int]) -> None:
        for k, n in enumerate(order[1:]):
            self.poses[n] = _unpack(x[7 * k: 7 * k + 7])

    def _solve(self, order: list[int], edges: list[Edge], step: float):
        x0 = self._x0(order)
        if x0.size == 0 or not edges:  # nothing to move: the result least_squares would give
            return OptimizeResult(x=x0, cost=0.0, nfev=0)
        col = {n: k for k, n in enumerate(order[1:])}
        sparsity = lil_matrix((7 * len(edges), x0.size), dtype=np.int8)
        for m, e in enumerate(edges):
            for n in (e.i, e.j):
                if n in col:
                    sparsity[7 * m: 7 * m + 7, 7 * col[n]: 7 * col[n] + 7] = 1
        return least_squares(self._residuals, x0, jac_sparsity=sparsity, method="trf", x_scale="jac",
                             max_nfev=self.max_iterations, args=(order, order[0], edges, step))
