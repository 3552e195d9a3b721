"""One consistent world: keyframe database, loop detection and the window pose graph together.

The aligner hands each placed window's lifted keyframes to :meth:`GlobalMap.add_window`:

1. the window becomes a pose-graph node (its anchor: the last new frame's camera-to-world, scale
   1), tied to the previous window of its segment by a sequential edge when it was registered
   on it (not after a gap);
2. its keyframes are looked up in the database (:mod:`align.loops`): verified loops with
   windows at least ``min_window_gap`` older;
3. when a loop is accepted the segment's graph is optimised (:mod:`align.posegraph`) and every
   window gets a world-frame correction ``C_i``; the keyframes in the database follow;
4. the window's keyframes are stored (after the lookup, so a window never finds itself), except
   those whose place the database already holds: a keyframe that matched a stored one with at
   least ``cover_fraction`` of its features, on a loop the pose graph kept, is "covered" and not
   stored. The stored keyframe stays the place's view for later lookups, so the database grows
   with the area explored and stops growing when the stream goes over mapped ground again.

The caller applies the corrections to what was emitted (trajectory, points, splat cache) and to
its own state. The kept loops' and relocations' image matches (:attr:`GlobalMap.loop_pairs`) stay for a
final bundle adjustment, which holds the loops and the relocated frames with them (the aligner keeps its
re-attachment links' the same way). Work happens once per window (a few
keyframes), in the alignment thread.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from align.config import LoopClosureConfig
from align.loops import LoopDetector, LoopMatch, Relocation
from align.placerec import KeyframeDatabase
from align.posegraph import MEASURED_GUARD, Edge, PoseGraph, relative, sim3_from_pose
from align.reattach import Keyframe
from stream4d.geometry import Sim3

# The kept loops' image matches held for a final adjustment: each pair set is M (at most a few hundred)
# x 2 x 2 float32, a few kB; past this many sets the oldest go.
MAX_LOOP_PAIR_SETS = 4096


@dataclass(frozen=True)
class LoopPairs:
    """A kept loop's, relocation's or re-attachment link's PnP inliers as matches between two keyframes'
    images (model pixels): ``query_frame`` is the later frame, ``match_frame`` the one it found."""

    query_frame: int
    match_frame: int
    query_uv: np.ndarray  # float32 [M, 2]
    match_uv: np.ndarray  # float32 [M, 2]


@dataclass
class GlobalMapUpdate:
    corrections: dict[int, Sim3] = field(default_factory=dict)  # window -> world-frame correction
    accepted: list[LoopMatch] = field(default_factory=list)
    rejected: int = 0  # loop candidates that failed verification or the scale check
    dropped: int = 0  # verified loops the pose graph found contradicting the chain
    relocations: list[Relocation] = field(default_factory=list)  # frames of this window re-posed by PnP
    seconds: float = 0.0


class GlobalMap:
    """Keyframe database + loop detector + pose graph of one stream (see the module docstring)."""

    def __init__(self, config: LoopClosureConfig | None = None):
        self.config = config or LoopClosureConfig()
        cfg = self.config
        self.database = KeyframeDatabase(cfg.vocabulary_size, cfg.max_keyframes, seed=cfg.seed)
        self.detector = LoopDetector(
            self.database, top_k=cfg.top_k, min_window_gap=cfg.min_window_gap, min_frame_gap=cfg.min_frame_gap,
            min_similarity=cfg.min_similarity,
            min_inliers=cfg.min_inliers, min_inlier_fraction=cfg.min_inlier_fraction, inlier_rel=cfg.inlier_rel,
            ransac_iterations=cfg.ransac_iterations, max_reprojection_px=cfg.max_reprojection_px,
            max_scale_change=cfg.max_scale_change, scale_agreement=cfg.scale_agreement,
            relocate_min_deg=cfg.relocate_min_deg, relocate_min_shift=cfg.relocate_min_shift, seed=cfg.seed)
        self.graph = PoseGraph(cfg.sigma_rotation, cfg.sigma_translation, cfg.sigma_scale, cfg.chi_limit,
                               min_sigma=(cfg.min_sigma_rotation, cfg.min_sigma_translation, cfg.min_sigma_scale),
                               estimate_variances=cfg.estimate_variances, min_sequential_sigma=MEASURED_GUARD)
        self._segment_of: dict[int, int] = {}  # window -> segment
        self._last_of_segment: dict[int, int] = {}  # segment -> its latest window
        self.loops: list[dict] = []  # accepted loops (run.json)
        self.links: list[dict] = []  # re-attachment edges and their measured noise (run.json)
        self.relocated: list[dict] = []  # frames re-posed by PnP on an old keyframe (run.json)
        self.loop_pairs: deque[LoopPairs] = deque(maxlen=MAX_LOOP_PAIR_SETS)  # of the kept loops and relocations
        self.found = 0  # loop candidates verified geometrically
        self.accepted = 0  # ... and kept by the pose graph
        self.consistent = 0  # ... of which the chain already agreed with (no optimisation needed)
        self.rejected = 0  # candidates refused by verification, scale check or the pose graph
        self.optimisations: list[dict] = []  # {"window", "nodes", "seconds", "iterations"}
        self.seconds = 0.0  # global-map work in add_window (lookups, verification, pose graph)
        self.lift_seconds = 0.0  # the caller's lifting of the keyframes it hands in (SIFT), reported with it
        self.keyframes_added = 0
        self.keyframes_covered = 0  # lifted and looked up, not stored: their place was stored already
        self.stored_frames: list[int] = []  # frame index of every keyframe stored, in order (run.json)

    @property
    def nbytes(self) -> int:
        pairs = sum(lp.query_uv.nbytes + lp.match_uv.nbytes for lp in self.loop_pairs)
        return self.database.nbytes + self.graph.nbytes + pairs

    def add_window(self, window: int, segment: int, anchor_c2w: np.ndarray, registered: bool,
                   keyframes: list[tuple[Keyframe, np.ndarray, np.ndarray]],
                   linked_to: int | None = None, weak_frames: frozenset[int] = frozenset(),
                   sequential_sigma: tuple[float, float, float] | None = None,
                   link_sigma: tuple[float, float, float] | None = None) -> GlobalMapUpdate:
        """A placed window: ``anchor_c2w [4, 4]`` (world), ``registered`` on the segment's previous window,
        ``keyframes`` as (lifted keyframe, c2w [4, 4], K [3, 3]) in the current world; ``linked_to``: the
        window whose keyframe this one's segment was re-attached by (an edge holds that placement);
        ``sequential_sigma``: the noise of the registration on the previous window, as the aligner measured
        it on their shared frames (rad, world units, log scale; None: the graph's learnt sigmas);
        ``link_sigma``: the re-attachment's noise at this window's anchor, measured by PnP as a loop's is
        (``SegmentLinker.measure``; None: the graph's sequential sigmas)."""
        start = time.perf_counter()
        update = GlobalMapUpdate()
        self.graph.add_node(window, sim3_from_pose(anchor_c2w))
        previous = self._last_of_segment.get(segment)
        if registered and previous is not None:
            self.graph.add_sequential(previous, window, sigma=sequential_sigma)
        # A link edge, unless a sequential edge already joins the same pair (a bridge off the window
        # before the gap registers nothing, and the link is then its only edge).
        if linked_to is not None and linked_to in self.graph.poses and not (registered and linked_to == previous):
            self.graph.add_sequential(linked_to, window, self.config.loop_weight, kind="link", sigma=link_sigma)
            self.links.append(_link_summary(linked_to, window, link_sigma))
        self._segment_of[window] = segment
        self._last_of_segment[segment] = window
        matches, refusals, update.relocations, verified = self.detector.detect(window, segment, keyframes,
                                                                               weak_frames)
        self.relocated.extend(r.summary() for r in update.relocations)
        # What placed a relocated frame, for the final adjustment (its window's tracks do not hold it).
        self.loop_pairs.extend(LoopPairs(r.frame_index, r.match_frame, *r.pairs)
                               for r in update.relocations if r.pairs is not None)
        relocated = {r.frame_index for r in update.relocations}
        self.found += len(matches)
        update.rejected = len(refusals)
        if matches:
            update = self._close(window, segment, matches, update)
        covered = self._covered(keyframes, verified, {m.match_window for m in update.accepted})
        for kf, c2w, K in keyframes:
            if kf.frame_index in relocated:  # its lifted points came from the broken geometry
                continue
            if kf.frame_index in covered:
                self.keyframes_covered += 1
                continue
            c = update.corrections.get(window)
            stored = self.database.add(window, segment, kf, c2w, K)
            if c is not None:
                stored.transform(c)
            self.keyframes_added += 1
            self.stored_frames.append(int(kf.frame_index))
        self.rejected += update.rejected + update.dropped
        update.seconds = time.perf_counter() - start
        self.seconds += update.seconds
        return update

    def _keep_pairs(self, matches: list[LoopMatch]) -> None:
        self.loop_pairs.extend(LoopPairs(m.query_frame, m.match_frame, *m.pairs) for m in matches if m.pairs is not None)

    def _covered(self, keyframes: list[tuple[Keyframe, np.ndarray, np.ndarray]], verified: list[LoopMatch],
                 kept_windows: set[int]) -> set[int]:
        """Frames of ``keyframes`` whose place is stored already: a verified match with at least
        ``cover_fraction`` of the keyframe's features into a window whose loop the graph kept (a match
        on a loop the graph dropped may be a look-alike place, and does not count)."""
        fraction = self.config.cover_fraction
        if fraction <= 0:
            return set()
        features = {kf.frame_index: len(kf.features.keypoints) for kf, _, _ in keyframes}
        return {m.query_frame for m in verified
                if m.match_window in kept_windows and m.matches >= fraction * features.get(m.query_frame, 0) > 0}

    def _close(self, window: int, segment: int, matches: list[LoopMatch], update: GlobalMapUpdate) -> GlobalMapUpdate:
        T_b = self.graph.poses[window]
        edges = []
        for m in matches:
            Z = relative(self.graph.poses[m.match_window], m.sim3.compose(T_b))
            edge = Edge(m.match_window, window, Z, self.config.loop_weight, "loop", _loop_sigma(m, T_b))
            self.graph.add_edge(edge)
            edges.append((edge, m))
        step = self.graph.step()
        surprise = max(self.graph.whitened_norm(e, step) for e, _ in edges)
        if surprise <= self.config.optimise_above:
            # The chain already agrees with the loop within its noise: the edge stays in the graph for
            # later solves, nothing moves now (no rewrite of outputs for a correction below the noise).
            update.accepted = [m for _, m in edges]
            self.accepted += len(edges)
            self.consistent += len(edges)
            self.loops.extend(dict(m.summary(), moved=False) for m in update.accepted)
            self._keep_pairs(update.accepted)
            return update
        nodes = [w for w, s in self._segment_of.items() if s == segment]
        before = {n: self.graph.poses[n] for n in nodes}
        result = self.graph.optimise(nodes, new=[e for e, _ in edges])
        kept = [(e, m) for e, m in edges if e not in result.rejected]
        update.dropped = len(edges) - len(kept)
        self.optimisations.append({"window": window, "nodes": result.nodes, "seconds": round(result.seconds, 4),
                                   "evaluations": result.iterations, "loops_dropped": update.dropped})
        if not kept:  # every loop contradicted the chain: nothing moves, and the nodes stay where the
            self.graph.poses.update(before)  # outputs are (a solve without them still drifts to older edges)
            return update
        update.accepted = [m for _, m in kept]
        update.corrections = {n: c for n, c in result.corrections.items() if not _is_identity(c)}
        self.accepted += len(kept)
        self.loops.extend(dict(m.summary(), moved=True) for m in update.accepted)
        self._keep_pairs(update.accepted)
        self.database.move_windows(update.corrections)
        return update

    def move_segment(self, from_segment: int, to_segment: int, sim3: Sim3) -> None:
        """A re-attached segment: its nodes and keyframes move by ``sim3`` and join ``to_segment``."""
        moved = [w for w, s in self._segment_of.items() if s == from_segment]
        self.graph.move_nodes(moved, sim3)
        for w in moved:
            self._segment_of[w] = to_segment
        self.database.move_segment(from_segment, to_segment, sim3)
        self._last_of_segment.pop(from_segment, None)
        if moved:
            self._last_of_segment[to_segment] = max(moved)

    def window_of_frame(self, frame_index: int) -> int | None:
        """The window whose stored keyframe is ``frame_index`` (None when it is not stored)."""
        for e in self.database.entries:
            if e.frame_index == frame_index:
                return e.window
        return None

    def summary(self) -> dict:
        return {"loops_found": self.found, "loops_accepted": self.accepted, "loops_rejected": self.rejected,
                "loops_consistent": self.consistent,
                "keyframes": len(self.database), "keyframes_added": self.keyframes_added,
                "keyframes_covered": self.keyframes_covered, "stored_frames": self.stored_frames,
                "keyframes_evicted": self.database.evicted, "database_bytes": self.database.nbytes,
                "frames_relocated": self.relocated, "graph_nodes": len(self.graph), "graph_edges": len(self.graph.edges),
                "graph_noise": _rounded(self.graph.noise()),
                "seconds": round(self.seconds, 4), "lift_seconds": round(self.lift_seconds, 4),
                "seconds_per_keyframe": round((self.seconds + self.lift_seconds) /
                                              max(1, self.keyframes_added + self.keyframes_covered), 5),
                "optimisations": self.optimisations, "loops": self.loops, "links": self.links}


def _loop_sigma(m: LoopMatch, anchor: Sim3) -> tuple[float, float, float] | None:
    """A loop edge's noise at the window's anchor: the query camera's PnP sigmas, its rotation's
    lever arm to the anchor added to the translation (the window moves rigidly with that camera)."""
    if m.sigma is None:
        return None
    rotation, centre, log_scale = m.sigma
    lever = 0.0 if m.query_centre is None else float(np.linalg.norm(anchor.t - m.query_centre))
    return rotation, centre + rotation * lever, log_scale


def _link_summary(linked_to: int, window: int, sigma: tuple[float, float, float] | None) -> dict:
    out: dict = {"window": window, "linked_to": linked_to, "measured": sigma is not None}
    if sigma is not None:
        out.update(sigma_deg=round(float(np.degrees(sigma[0])), 5), sigma_centre=round(float(sigma[1]), 6),
                   sigma_log_scale=round(float(sigma[2]), 6))
    return out


def _rounded(noise: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {kind: {k: float(f"{v:.4g}") for k, v in parts.items()} for kind, parts in noise.items()}


def _is_identity(c: Sim3, tol: float = 1e-9) -> bool:
    return abs(c.s - 1.0) < tol and np.allclose(c.R, np.eye(3), atol=tol) and np.allclose(c.t, 0.0, atol=tol)
