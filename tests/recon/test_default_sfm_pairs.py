"""Window SfM registering views from their pairs (recon/default/sfm.py, ``register_from_pair``).

Exact geometry without rendering: cameras and points are made up, observations are their
projections plus 0.3 px of noise, and the tracks are built the way wide baselines leave them: each
pair of overlapping views has its own matches, and only a handful of points are seen by three
views (room.mp4, docs/default_backend.md). Each scene takes well under a second.
"""

from __future__ import annotations

import numpy as np

from recon.default.sfm import SfmConfig, WindowSfm
from recon.default.tracks import build_tracks
from recon.features import Features, PairMatches
from stream4d.geometry import rotation_angle_deg

W, H = 512, 384
K = np.array([[360.0, 0, (W - 1) / 2], [0, 360.0, (H - 1) / 2], [0, 0, 1]])


def yaw_pose(centre, yaw_deg: float) -> np.ndarray:
    """Camera-to-world [4, 4], OpenCV axes, looking along +z turned by ``yaw_deg`` about +y."""
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, centre
    return T


def project(c2w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [N, 2] of world points [N, 3] and whether each is in front and inside the image."""
    w2c = np.linalg.inv(c2w)
    pc = X @ w2c[:3, :3].T + w2c[:3, 3]
    uv = (pc @ K.T)[:, :2] / pc[:, 2:3]
    inside = (pc[:, 2] > 0.1) & (uv[:, 0] > 2) & (uv[:, 0] < W - 3) & (uv[:, 1] > 2) & (uv[:, 1] < H - 3)
    return uv, inside


def points_seen_by(views: list[np.ndarray], count: int, rng: np.random.Generator,
                   depth=(3.0, 6.0)) -> np.ndarray:
    """``count`` world points [count, 3] that every camera of ``views`` (c2w) sees."""
    centre = np.mean([v[:3, 3] for v in views], axis=0)
    forward = np.mean([v[:3, 2] for v in views], axis=0)
    forward /= np.linalg.norm(forward)
    found = np.zeros((0, 3))
    for _ in range(50):
        if len(found) >= count:
            return found[:count]
        d = forward + rng.uniform(-0.6, 0.6, (4000, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        X = centre + d * rng.uniform(*depth, (4000, 1))
        ok = np.ones(len(X), bool)
        for v in views:
            ok &= project(v, X)[1]
        found = np.concatenate([found, X[ok]])
    raise AssertionError(f"the scene has no {count} points that views {len(views)} all see")


def window(c2w: list[np.ndarray], tracks_spec: list[tuple], seed: int = 0):
    """Features and pair matches of the views ``c2w`` for tracks ``(views, count)``: ``count``
    points seen by exactly those views. A third element ``{view: c2w}`` observes that spec's
    points from other poses: matches no camera of the scene explains (false matches)."""
    rng = np.random.default_rng(seed)
    n = len(c2w)
    keypoints: list[list[np.ndarray]] = [[] for _ in range(n)]
    pair_idx: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for views, count, *override in tracks_spec:
        poses = {v: (override[0] if override else {}).get(v, c2w[v]) for v in views}
        X = points_seen_by([poses[v] for v in views], count, rng)
        first = {}
        for v in views:
            uv = project(poses[v], X)[0] + rng.normal(0, 0.3, (len(X), 2))
            first[v] = sum(len(k) for k in keypoints[v]) + np.arange(len(X))
            keypoints[v].append(uv)
        for a in views:
            for b in views:
                if a < b:
                    ia, ib = pair_idx.setdefault((a, b), ([], []))
                    ia.extend(first[a].tolist())
                    ib.extend(first[b].tolist())
    feats = [Features(np.concatenate(k) if k else np.zeros((0, 2)), np.zeros((0, 128), np.float32))
             for k in keypoints]
    matches = [PairMatches(a, b, np.array(ia), np.array(ib), None) for (a, b), (ia, ib) in sorted(pair_idx.items())]
    return feats, matches


def solve(c2w, spec, config: SfmConfig | None = None, **kw):
    feats, matches = window(c2w, spec, **kw)
    sfm = WindowSfm(build_tracks(feats, matches), matches, len(c2w), K, True, config or SfmConfig(),
                    image_size=(W, H))
    return sfm.run(), sfm


def errors(result, c2w) -> tuple[float, float]:
    """Largest rotation error (deg) between registered views, and largest centre error after the
    best similarity, as a fraction of the true centres' extent."""
    views = sorted(result.w2c)
    est = [np.linalg.inv(result.w2c[v]) for v in views]
    ref = [c2w[v] for v in views]
    rot = max(rotation_angle_deg((ref[0][:3, :3].T @ r[:3, :3]).T @ (est[0][:3, :3].T @ e[:3, :3]))
              for e, r in zip(est, ref))
    P = np.array([e[:3, 3] for e in est])
    G = np.array([r[:3, 3] for r in ref])
    Pc, Gc = P - P.mean(0), G - G.mean(0)
    U, S, Vt = np.linalg.svd(Gc.T @ Pc)
    D = np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (Pc ** 2).sum()
    err = np.linalg.norm(s * Pc @ R.T - Gc, axis=1).max()
    return rot, err / np.ptp(G, axis=0).max()


# A sweep like a handheld phone turned round a room by someone standing near its middle: cameras
# 0.6 m off a centre, looking away from it, 30 degrees (0.31 m) apart; each pair has its own 150
# matches, and 8 points are seen by three consecutive views.
SWEEP = [yaw_pose(0.6 * np.array([np.sin(a), 0.0, np.cos(a)]), np.degrees(a)) for a in np.radians(30.0 * np.arange(5))]
SWEEP_TRACKS = [((k, k + 1), 150) for k in range(4)] + [((k, k + 1, k + 2), 8) for k in range(3)]


def test_a_sweep_whose_views_see_few_map_points_is_registered_from_pairs():
    before, _ = solve(SWEEP, SWEEP_TRACKS, SfmConfig(relative_registration=False, init_attempts=1))
    assert len(before.w2c) < len(SWEEP)  # PnP alone: 8 map points are too few for the next view
    result, sfm = solve(SWEEP, SWEEP_TRACKS)
    assert sorted(result.w2c) == list(range(len(SWEEP)))
    assert sfm.info["registered_from_pair"] >= 2
    rot, centre = errors(result, SWEEP)
    assert rot < 0.5
    assert centre < 0.02


def test_a_view_that_sees_no_map_point_is_placed_by_two_pairs():
    """Views 0 and 1 start the map; view 2 shares tracks with each of them but no point with both,
    so its centre is where its directions of travel from 0 and from 1 cross."""
    c2w = [yaw_pose((0.0, 0, 0), 0), yaw_pose((1.0, 0, 0), -5), yaw_pose((0.4, 0.1, 0.8), 5)]
    spec = [((0, 1), 200), ((0, 2), 120), ((1, 2), 100)]
    result, sfm = solve(c2w, spec)
    assert sfm.info["init_pair"] == [0, 1]
    assert sorted(result.w2c) == [0, 1, 2]
    rot, centre = errors(result, c2w)
    assert rot < 0.5
    assert centre < 0.02


def test_a_second_pair_that_disagrees_on_the_rotation_places_nothing():
    """The same three views, but the matches of view 2 with view 1 come from a camera turned by 30
    degrees (as false matches on a repeated texture would): no length can be trusted, and view 2
    stays unregistered rather than being put where neither pair says."""
    c2w = [yaw_pose((0.0, 0, 0), 0), yaw_pose((1.0, 0, 0), -5), yaw_pose((0.4, 0.1, 0.8), 5)]
    spec = [((0, 1), 200), ((0, 2), 120), ((1, 2), 100, {2: yaw_pose((0.4, 0.1, 0.8), 35)})]
    result, sfm = solve(c2w, spec)
    assert sorted(result.w2c) == [0, 1]
    assert sfm.info["unregistered"] == [2]


def test_views_the_best_initial_pair_cannot_reach_are_grown_from_the_next_pair():
    """Views 0-1 are the strongest pair but link to the rest by 20 matches only; views 2-4 share
    tracks among themselves. The structure grown from 0-1 poses two views, the one grown from the
    next pair three, and that one is kept."""
    c2w = [yaw_pose((0.5 * k, 0.0, 0.0), 0.0) for k in range(5)]
    spec = [((0, 1), 300), ((1, 2), 20), ((2, 3), 200), ((3, 4), 200), ((2, 3, 4), 40)]
    result, sfm = solve(c2w, spec)
    assert sorted(result.w2c) == [2, 3, 4]
    assert set(sfm.info["init_pair"]) <= {2, 3, 4} and sfm.info["init_attempts"] == 3
    rot, centre = errors(result, c2w)
    assert rot < 0.5
    assert centre < 0.02
    single, _ = solve(c2w, spec, SfmConfig(init_attempts=1))
    assert sorted(single.w2c) == [0, 1]


def test_a_repeated_image_costs_its_pair_not_the_window():
    # A live stream that loops, or a camera at rest: a window holds the same image twice. Their
    # matches have no motion at all, on which OpenCV's essential-matrix solver raises.
    feats, matches = window(SWEEP[:3], [((0, 1), 150), ((1, 2), 150), ((0, 1, 2), 30)])
    feats.append(Features(feats[1].keypoints.copy(), feats[1].descriptors.copy()))
    every = np.arange(len(feats[1].keypoints))
    repeated = [PairMatches(1, 3, every, every.copy(), None)]
    repeated += [PairMatches(m.i, 3, m.idx_i, m.idx_j, None) for m in matches if m.j == 1]
    repeated += [PairMatches(m.j, 3, m.idx_j, m.idx_i, None) for m in matches if m.i == 1]
    sfm = WindowSfm(build_tracks(feats, matches + repeated), matches + repeated, 4, K, True, SfmConfig(),
                    image_size=(W, H))
    result = sfm.run()
    assert {0, 1, 2} <= set(result.w2c)
    assert errors(result, SWEEP[:3] + [SWEEP[1]])[1] < 0.05


# A walk along a facade: 10 views 0.3 m apart looking at it. Near pairs (up to 3 views apart) share
# 250-310 points; every pair 5 or more views apart also matches 400 points of the repeated facade, half
# seen as from one step further on and half as from two: the next windows along it. Those pairs
# have the most shared tracks and image motion, which rank the candidates for the initial pair,
# but their essential matrices keep half their matches at most.
WALK = [yaw_pose(np.array([0.3 * k, 0.0, 0.0]), 0.0) for k in range(10)]
WALK_TRACKS = [((k, k + 1), 250) for k in range(9)] + [((k, k + 1, k + 2, k + 3), 60) for k in range(7)]
LOOK_ALIKES = [spec for i in range(5) for j in range(i + 5, 10)
               for spec in (((i, j), 200, {j: yaw_pose(np.array([0.3 * j + 1.0, 0.0, 0.0]), 0.0)}),
                            ((i, j), 200, {j: yaw_pose(np.array([0.3 * j + 2.0, 0.0, 0.0]), 0.0)}))]


def test_the_initial_pair_is_the_best_fit_even_when_far_pairs_fill_the_ranking():
    feats, matches = window(WALK, WALK_TRACKS + LOOK_ALIKES)
    tracks = build_tracks(feats, matches)
    ranked = WindowSfm(tracks, matches, 10, K, True, SfmConfig(), image_size=(W, H))
    assert all(j - i >= 5 for i, j in ranked._candidate_pairs(matches))  # no near pair is even fitted
    sfm = WindowSfm(tracks, matches, 10, K, True, SfmConfig(), image_size=(W, H), near_gap=3)
    result = sfm.run()
    i, j = result.info["init_pair"]
    assert j - i <= 3
    assert set(result.w2c) == set(range(10))
    assert errors(result, WALK)[1] < 0.02


def test_far_pairs_start_the_structure_when_no_near_pair_can():
    # Rows of a scan: the near pairs hold too few matches for an initial pair (40 needed), views 0
    # and 4 plenty.
    feats, matches = window(WALK[:8], [((k, k + 1), 20) for k in range(7)] + [((0, 4), 150)])
    sfm = WindowSfm(build_tracks(feats, matches), matches, 8, K, True, SfmConfig(), image_size=(W, H), near_gap=3)
    result = sfm.run()
    assert result.info["init_pair"] == [0, 4]
    assert {0, 4} <= set(result.w2c)


def test_a_start_pair_that_fits_is_the_only_candidate():
    feats, matches = window(WALK, WALK_TRACKS)
    tracks = build_tracks(feats, matches)
    ranked = WindowSfm(tracks, matches, 10, K, True, SfmConfig(), image_size=(W, H), near_gap=3).run()
    start = (6, 8) if ranked.info["init_pair"] != [6, 8] else (2, 4)
    sfm = WindowSfm(tracks, matches, 10, K, True, SfmConfig(), image_size=(W, H), near_gap=3, start_pair=start)
    result = sfm.run()
    assert result.info["init_pair"] == list(start)
    assert set(result.w2c) == set(range(10))
    assert errors(result, WALK)[1] < 0.02
    # views 0 and 9 share no track: no fit, so the candidates are ranked as without a start pair
    unmatched = WindowSfm(tracks, matches, 10, K, True, SfmConfig(), image_size=(W, H), near_gap=3,
                          start_pair=(0, 9)).run()
    assert unmatched.info["init_pair"] == ranked.info["init_pair"]
