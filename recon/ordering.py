"""Frame order for finite photo collections: consecutive frames that overlap, found by retrieval.

Sliding windows assume that consecutive frames overlap (the default model matches each view with
its next few views only). A folder of photos out of capture order breaks that assumption, so
before windowing a finite input can be put in an order where it holds:

1. ``pair_scores``: every pair of frames is scored by how many SIFT matches pass the ratio test
   (RootSIFT, the ``max_features`` strongest keypoints of the frame as the run sized it, matched by
   ``recon.features.match_descriptors``: one BLAS product per pair); then each frame's best
   ``verify_top`` candidates, and the given consecutive pairs, are verified with a fundamental
   matrix (MAGSAC). A pair's score is its number of verified matches (0 when unverified).
2. ``chain_order``: a maximum spanning tree of those scores, walked depth first from one end of
   its longest path (side branches before the trunk, so each detour returns next to where it
   left), then improved by 2-opt moves that raise the sum of consecutive scores.

Cost: N detections plus N(N-1)/2 descriptor products plus about N * (verify_top + 1) RANSAC
fits. Above ``all_pairs_frames`` frames the descriptor products are limited to each frame's
``retrieval_top`` most similar frames by a global descriptor (``recon.retrieval``: VLAD over the
same RootSIFT, its vocabulary trained on the input), so the cost grows as N * retrieval_top.
Ordering buffers the frames and their features (about 0.6 MB + 0.5 MB a frame at the run's
512 px and 1024 keypoints; full-size photos under ``--resize none`` hold far more), so it is
capped at ``max_frames``; a longer input keeps its order. A video keeps the all-pairs limit: it
is looked at only when its first frames do not overlap, and its first window waits for the order.

Frames of different connected parts share no verified match: ``OrderReport.groups`` tells the
run to window each part on its own (a part becomes its own segment) rather than to put windows
across the jump. A window model takes frames of one size, so a collection of several image sizes
(portrait photos among landscape ones) is chained one size at a time, each size its own groups;
re-attachment joins their segments where they show the same place. A size with a single photo
makes no window (a window needs two views) and that photo stays unposed.

``order_frames`` wraps a frame iterator and decides (``mode``): "given" never reorders,
"retrieval" always reorders a finite input, "auto" keeps an image collection whose consecutive
pairs all overlap well (``keep_overlap``), else reorders it when its given consecutive pairs
overlap far less than the retrieval chain's (the median verified count below ``auto_ratio``
times the chain's), and a video only when its first consecutive frames do not
overlap at all. Above ``all_pairs_frames`` frames, "auto" checks ``probe_pairs`` consecutive
pairs spread over the input instead of every one. Live sources are never reordered. Frames keep
their ``index`` and ``source``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice

import numpy as np

from recon.features import Features, detect_features, match_descriptors, verified_matches
from recon.ingest.options import ORDER_MODES
from recon.retrieval import similar_pairs
from stream4d.contracts import Frame

log = logging.getLogger("recon.ordering")

LIVE_KINDS = ("camera", "push")


@dataclass(frozen=True)
class OrderingConfig:
    """Knobs of the retrieval ordering (see the module docstring)."""

    max_frames: int = 400  # frames buffered to be ordered: longer inputs keep their order (videos: all_pairs_frames)
    all_pairs_frames: int = 100  # up to this many frames every pair is scored; above, retrieval candidates
    retrieval_top: int = 20  # candidates per frame by global-descriptor similarity (above all_pairs_frames)
    vocabulary_size: int = 32  # VLAD words (recon.retrieval)
    probe_pairs: int = 24  # consecutive pairs auto checks above all_pairs_frames, spread over the input
    max_features: int = 1024  # SIFT keypoints per frame, the strongest, detected at ``feature_scale``
    feature_scale: float = 1.0  # at 0.5 the wide-baseline pairs of a 1 fps video (room.mp4) verified no
    # better than unrelated ones (docs/benchmarks.md)
    verify_top: int = 6  # candidates per frame verified geometrically
    min_inliers: int = 20  # verified matches for a pair to count as overlapping: above what unrelated
    # pairs verify by chance (docs/default_backend.md)
    auto_ratio: float = 0.5  # auto reorders when given median < auto_ratio * chain median
    video_probe: int = 5  # frames of a video whose consecutive pairs decide whether to look further
    keep_overlap: int = 50  # auto keeps a video's order when the median of those pairs reaches this,
    # and a collection's without scoring all pairs when every consecutive pair does
    threads: int = 2


@dataclass
class OrderReport:
    """What ``order_frames`` did, for run.json."""

    mode: str
    reordered: bool = False
    reason: str = ""
    frames: int = 0
    given_median: float | None = None  # median verified matches of the given consecutive pairs
    chain_median: float | None = None  # same for the retrieval chain
    seconds: float = 0.0
    order: list[int] = field(default_factory=list)  # Frame.index in the order fed to the windows
    groups: dict[int, int] = field(default_factory=dict)  # Frame.index -> group: frames of different
    # groups share no verified match, so no window should span two (empty: one group)


def describe(frames: list[Frame], cfg: OrderingConfig) -> list[Features]:
    """Cheap features per frame for scoring pairs."""
    with ThreadPoolExecutor(cfg.threads) as pool:
        return list(pool.map(lambda f: detect_features(f.image, cfg.max_features, cfg.feature_scale), frames))


def _verified_count(fa: Features, fb: Features, cfg: OrderingConfig) -> int:
    m = verified_matches(fa, fb, 0, 1, threshold_px=1.5 * cfg.feature_scale + 0.5, min_inliers=cfg.min_inliers)
    return 0 if m is None else len(m.idx_i)


def pair_scores(feats: list[Features], cfg: OrderingConfig, extra_pairs: list[tuple[int, int]] = ()) -> np.ndarray:
    """Symmetric [N, N] int array: verified matches of each frame's best candidates and of
    ``extra_pairs``; 0 for pairs not verified or below ``cfg.min_inliers``. Candidates: every pair
    up to ``cfg.all_pairs_frames`` frames, else each frame's retrieval neighbours (module doc)."""
    n = len(feats)
    ratio = np.zeros((n, n), np.int64)
    if n <= cfg.all_pairs_frames:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        pairs = similar_pairs([f.descriptors for f in feats], cfg.retrieval_top, cfg.vocabulary_size)
    with ThreadPoolExecutor(cfg.threads) as pool:
        counts = list(pool.map(lambda ij: len(match_descriptors(feats[ij[0]], feats[ij[1]])[0]), pairs))
    for (i, j), c in zip(pairs, counts):
        ratio[i, j] = ratio[j, i] = c
    todo = {tuple(sorted(p)) for p in extra_pairs}
    top = min(cfg.verify_top, n - 1)
    for i in range(n):
        row = ratio[i].copy()
        row[i] = -1
        for j in np.argsort(-row, kind="stable")[:top]:
            if row[j] >= cfg.min_inliers:
                todo.add((min(i, int(j)), max(i, int(j))))
    todo_list = sorted(todo)
    with ThreadPoolExecutor(cfg.threads) as pool:
        verified = list(pool.map(lambda ij: _verified_count(feats[ij[0]], feats[ij[1]], cfg), todo_list))
    scores = np.zeros((n, n), np.int64)
    for (i, j), c in zip(todo_list, verified):
        scores[i, j] = scores[j, i] = c
    return scores


def _max_spanning_tree(scores: np.ndarray) -> list[list[int]]:
    """Adjacency lists of a maximum spanning forest (Prim, dense); zero-score edges are not edges."""
    n = len(scores)
    adj: list[list[int]] = [[] for _ in range(n)]
    in_tree = np.zeros(n, bool)
    for root in range(n):
        if in_tree[root]:
            continue
        in_tree[root] = True
        best = np.where(in_tree, -1, scores[root]).astype(np.float64)
        parent = np.full(n, root)
        while True:
            j = int(np.argmax(best))
            if best[j] <= 0:
                break
            adj[j].append(int(parent[j]))
            adj[int(parent[j])].append(j)
            in_tree[j] = True
            best[j] = -1
            better = (~in_tree) & (scores[j] > best)
            best[better] = scores[j][better]
            parent[better] = j
    return adj


def _farthest(adj: list[list[int]], start: int) -> tuple[int, dict[int, int]]:
    """The node farthest (in hops) from ``start`` in its tree, and every reached node's depth."""
    depth = {start: 0}
    stack = [start]
    while stack:
        u = stack.pop()
        for v in adj[u]:
            if v not in depth:
                depth[v] = depth[u] + 1
                stack.append(v)
    far = max(depth, key=lambda v: (depth[v], -v))
    return far, depth


def _walk(adj: list[list[int]], start: int) -> list[int]:
    """Depth-first order from ``start``, shallow branches first so the deepest one comes last."""
    height: dict[int, int] = {}

    def subtree_height(u: int, parent: int) -> int:  # iterative: trees of a few hundred nodes
        order, stack = [], [(u, parent)]
        while stack:
            a, p = stack.pop()
            order.append((a, p))
            stack.extend((b, a) for b in adj[a] if b != p)
        for a, p in reversed(order):
            height[a] = 1 + max((height[b] for b in adj[a] if b != p), default=0)
        return height[u]

    subtree_height(start, -1)
    out, stack = [], [(start, -1)]
    while stack:
        u, p = stack.pop()
        out.append(u)
        children = sorted((b for b in adj[u] if b != p), key=lambda b: height[b])
        stack.extend((b, u) for b in reversed(children))  # shallowest popped first
    return out


def _two_opt(order: list[int], scores: np.ndarray, max_sweeps: int = 20) -> list[int]:
    """Reverse segments while that raises the sum of consecutive scores (an open path)."""
    seq = np.array(order)
    n = len(seq)
    for _ in range(max_sweeps):
        improved = False
        for i in range(1, n - 1):
            a = seq[i - 1]
            for j in range(i + 1, n):
                # Reversing seq[i..j] replaces edges (a, seq[i]) and (seq[j], seq[j+1]).
                old = scores[a, seq[i]] + (scores[seq[j], seq[j + 1]] if j + 1 < n else 0)
                new = scores[a, seq[j]] + (scores[seq[i], seq[j + 1]] if j + 1 < n else 0)
                if new > old:
                    seq[i:j + 1] = seq[i:j + 1][::-1].copy()
                    improved = True
        if not improved:
            break
    return [int(v) for v in seq]


def chain_parts(scores: np.ndarray) -> list[list[int]]:
    """Frames (positions into ``scores``) in chains whose consecutive frames overlap as much as
    possible, one chain per connected part of the overlap graph, largest first; frames that
    overlap no other frame end the first chain (the model, with more features, may still pose them).

    Each part's maximum spanning tree is walked from one end of its longest path, then 2-opt.
    """
    n = len(scores)
    adj = _max_spanning_tree(scores)
    seen: set[int] = set()
    parts, alone = [], []
    for v in range(n):
        if v in seen:
            continue
        end, depth = _farthest(adj, v)
        seen.update(depth)
        if len(depth) == 1:
            alone.append(v)
        else:
            parts.append(_two_opt(_walk(adj, _farthest(adj, end)[0]), scores))
    parts.sort(key=len, reverse=True)
    if not parts:
        return [alone]
    parts[0] += alone
    return parts


def chain_parts_by_size(scores: np.ndarray, sizes: list[tuple[int, int]]) -> list[list[int]]:
    """``chain_parts`` of the frames of each image size on their own (a window takes frames of one
    size), every part largest first."""
    parts = []
    for size in dict.fromkeys(sizes):
        members = [k for k, s in enumerate(sizes) if s == size]
        parts += [[members[v] for v in part] for part in chain_parts(scores[np.ix_(members, members)])]
    return sorted(parts, key=len, reverse=True)


def chain_order(scores: np.ndarray) -> list[int]:
    """A permutation of range(N): the chains of ``chain_parts`` one after another."""
    return [v for part in chain_parts(scores) for v in part]


def _consecutive_probe(buf: list[Frame], cfg: OrderingConfig) -> tuple[list[int], dict[int, Features]]:
    """Verified matches of consecutive pairs: every one up to ``cfg.all_pairs_frames`` frames, else
    ``cfg.probe_pairs`` of them spread evenly; and the features of the frames described for it
    (position in ``buf`` -> features), for the scoring to reuse."""
    n = len(buf)
    if n <= cfg.all_pairs_frames:
        starts = list(range(n - 1))
    else:
        starts = sorted({int(k) for k in np.linspace(0, n - 2, cfg.probe_pairs).round()})
    frames = sorted({k for s in starts for k in (s, s + 1)})
    feats = dict(zip(frames, describe([buf[k] for k in frames], cfg)))
    with ThreadPoolExecutor(cfg.threads) as pool:
        return list(pool.map(lambda k: _verified_count(feats[k], feats[k + 1], cfg), starts)), feats


def consecutive_median(scores: np.ndarray, order: list[int]) -> float:
    return float(np.median([scores[a, b] for a, b in zip(order, order[1:])])) if len(order) > 1 else 0.0


def order_frames(frames: Iterator[Frame], kind: str, mode: str = "auto",
                 cfg: OrderingConfig | None = None, report: OrderReport | None = None) -> Iterator[Frame]:
    """``frames`` in the order sliding windows need (see the module docstring).

    ``kind`` is the source's kind ("video", "images", "dataset", "camera", "push"). Frames that
    are buffered to be ordered are yielded only once the order is known; an input longer than
    ``cfg.max_frames`` is passed through in its own order. ``report`` (if given) is filled in.
    """
    if mode not in ORDER_MODES:
        raise ValueError(f"order must be one of {ORDER_MODES}, got {mode!r}")
    cfg = cfg or OrderingConfig()
    report = report if report is not None else OrderReport(mode)
    report.mode = mode
    if mode == "given" or kind in LIVE_KINDS:
        report.reason = "given order" if mode == "given" else "live input"
        yield from frames
        return
    it = iter(frames)
    t0 = time.perf_counter()
    buf: list[Frame] = []

    def take(n: int) -> BaseException | None:
        """Up to ``n`` more frames into ``buf``; what broke the input, if it did."""
        try:
            buf.extend(islice(it, n))
        except Exception as exc:  # noqa: BLE001 - re-raised after the frames before it
            return exc
        return None

    known: dict[int, Features] = {}  # position in buf -> features, each frame described once
    if mode == "auto" and kind == "video":
        broken = take(cfg.video_probe)
        feats = describe(buf, cfg) if broken is None else []
        known = dict(enumerate(feats))
        probe = [_verified_count(a, b, cfg) for a, b in zip(feats, feats[1:])]
        if broken is None and (not probe or np.median(probe) >= cfg.keep_overlap):
            report.reason = "a video whose consecutive frames overlap"
            report.seconds = time.perf_counter() - t0
            yield from chain(buf, it)
            return
    # A video waits for its order no longer than the all-pairs limit: its frames are its first window.
    cap = cfg.all_pairs_frames if kind == "video" else cfg.max_frames
    broken = take(cap + 1 - len(buf))
    if broken is not None:  # as without ordering: the frames before the break, then the error
        report.reason = "the input broke before it was ordered: kept in order"
        yield from buf
        raise broken
    if len(buf) > cap:
        report.reason = f"more than {cap} frames: kept in order"
        report.seconds = time.perf_counter() - t0
        yield from chain(buf, it)
        return
    report.frames = len(buf)
    if len(buf) < 3:
        report.reason = "fewer than 3 frames"
        yield from buf
        return
    given = list(range(len(buf)))
    sizes = [f.size for f in buf]
    mixed = len(set(sizes)) > 1  # windows take one size: each size is ordered and windowed apart
    if mode == "auto" and kind != "video" and not mixed:
        steps, known = _consecutive_probe(buf, cfg)
        if min(steps) >= cfg.keep_overlap:
            report.given_median = float(np.median(steps))
            report.reason = ("every consecutive pair overlaps" if len(steps) == len(buf) - 1
                             else f"{len(steps)} consecutive pairs spread over the input overlap")
            report.seconds = time.perf_counter() - t0
            yield from buf
            return
    rest = [k for k in given if k not in known]
    known.update(zip(rest, describe([buf[k] for k in rest], cfg)))
    feats = [known[k] for k in given]
    scores = pair_scores(feats, cfg, extra_pairs=list(zip(given, given[1:])))
    parts = chain_parts_by_size(scores, sizes) if mixed else chain_parts(scores)
    order = [v for part in parts for v in part]
    report.given_median = consecutive_median(scores, given)
    report.chain_median = consecutive_median(scores, order)
    reorder = mode == "retrieval" or mixed or report.given_median < cfg.auto_ratio * report.chain_median
    report.reordered = reorder and order != given
    report.reason = ("the given order overlaps as well" if not report.reordered
                     else f"retrieval order, {len(set(sizes))} image sizes apart" if mixed else "retrieval order")
    report.seconds = time.perf_counter() - t0
    final = order if reorder else given
    report.order = [buf[k].index for k in final]
    if reorder and len(parts) > 1:
        report.groups = {buf[k].index: g for g, part in enumerate(parts) for k in part}
    log.info("frame order: %s (%d frames, median verified matches of consecutive frames: given %.0f, "
             "retrieval %.0f; %.1f s)", report.reason, len(buf), report.given_median, report.chain_median,
             report.seconds)
    for k in final:
        yield buf[k]
