"""Loop closure end to end through the aligner, place recognition, and the keyframe database's bound.

The windows are exact renders of an orbit through the layered room, each bent a little inside
(its later frames turned about its first one), so the chain of windows drifts the way a real
window model's does; the orbit comes back past its start, where a loop must pull the drift out.
"""

import numpy as np
import pytest

from align.aligner import AlignConfig, StreamAligner
from align.config import LoopClosureConfig
from align.placerec import KeyframeDatabase
from align.reattach import lift_keyframe
from align.synthetic import layered_room, random_sim3, window_from_geometry, window_spans

W, H = 256, 192
FRAMES, WINDOW, OVERLAP = 44, 8, 2
# Per frame inside a window: 1.2 degrees a window, inside the pose graph's prior of 0.02 rad a step. A
# window model drifting further is judged by its first loop against that prior and loses the loop: it
# cannot be told from a look-alike place (align.posegraph, the chain test).
BEND_DEG = 0.2


@pytest.fixture(scope="module")
def orbit():
    """A 420-degree orbit: frames 36-43 see again what frames 0-7 saw."""
    from stream4d.synthetic import intrinsics_for, make_trajectory, render_view

    scene, _ = layered_room(5)
    c2w = make_trajectory("orbit", FRAMES, seed=5, scene=scene, arc_deg=420 * (FRAMES - 1) / FRAMES)
    K = intrinsics_for(W, H, fov_deg=60)
    views = [render_view(scene, c2w[i], K, W, H, index=i) for i in range(FRAMES)]
    return np.stack([v.rgb for v in views]), np.stack([v.depth for v in views]), c2w, K


def _bent(c2w: np.ndarray) -> np.ndarray:
    """The window's poses with frame j turned by j x BEND_DEG about the first frame's centre (vertical axis)."""
    out = c2w.copy()
    centre = c2w[0, :3, 3]
    for j in range(len(c2w)):
        a = np.radians(BEND_DEG * j)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        out[j, :3, :3] = R @ c2w[j, :3, :3]
        out[j, :3, 3] = R @ (c2w[j, :3, 3] - centre) + centre
    return out


def _run(orbit, loop_closure: bool, record_map: bool = False):
    images, depth, c2w, K = orbit
    rng = np.random.default_rng(2)
    config = AlignConfig(window=WINDOW, overlap=OVERLAP, new_segment_on_gap=True, fix_intrinsics=False,
                         layerwise=False, loop_closure=LoopClosureConfig(enabled=loop_closure, keyframe_stride=3))
    aligner = StreamAligner(config)
    if record_map:
        aligner.record_map()
    poses: dict[int, np.ndarray] = {}
    frame_window: dict[int, int] = {}
    to_world = None
    for span in window_spans(FRAMES, WINDOW, OVERLAP):
        to_window = random_sim3(rng)
        to_world = to_world or to_window  # the first window defines the world
        out = aligner.add(window_from_geometry(span, images[span], depth[span], _bent(c2w[span]), K, to_window))
        for i, w in frame_window.items():  # what the sink does with the frames of windows a loop moved
            if w in out.moved:
                poses[i] = out.moved[w].apply_c2w(poses[i])
        for k in np.flatnonzero(out.is_new):
            poses[int(span[k])] = out.prediction.c2w[k]
            frame_window[int(span[k])] = out.window_index
        assert out.segment == 0
    truth = to_world.apply_c2w(c2w)
    err = [np.linalg.norm(poses[i][:3, 3] - truth[i, :3, 3]) for i in range(FRAMES)]
    if record_map:
        return np.array(err), aligner, poses
    return np.array(err), aligner



def test_loop_closure_pulls_the_end_of_an_orbit_back(orbit):
    err_off, _ = _run(orbit, loop_closure=False)
    err_on, aligner = _run(orbit, loop_closure=True)
    summary = aligner.global_map.summary()
    assert summary["loops_accepted"] >= 1
    # A loop spans at least three windows: across one window the chain is better than a loop edge.
    assert all(loop["match_window"] <= loop["query_window"] - 3 for loop in summary["loops"])
    radius = 2.4  # the layered room's camera ring
    assert err_off[-1] > 0.1 * radius  # the bent windows really drifted
    assert err_on[-1] < err_off[-1] / 3
    assert np.sqrt((err_on ** 2).mean()) < np.sqrt((err_off ** 2).mean()) / 2
    # Each kept loop keeps its matches for a final adjustment: the same points seen in the two frames,
    # so they meet the true cameras' epipolar geometry.
    _, _, c2w, K = orbit
    pairs = list(aligner.global_map.loop_pairs)
    kept = {(loop["query_frame"], loop["match_frame"]) for loop in summary["loops"]}
    assert pairs and {(p.query_frame, p.match_frame) for p in pairs} <= kept
    for p in pairs:
        assert len(p.query_uv) == len(p.match_uv) >= 6
        assert np.median(_sampson_px(p.query_uv, p.match_uv, c2w[p.query_frame], c2w[p.match_frame], K)) < 1.0


def _sampson_px(uv_a, uv_b, c2w_a, c2w_b, K) -> np.ndarray:
    """Sampson distance (pixels) of matches uv_a [M, 2] in camera a and uv_b in camera b from their epipolar lines."""
    a_to_b = np.linalg.inv(c2w_b) @ c2w_a
    t = a_to_b[:3, 3]
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ a_to_b[:3, :3]
    F = np.linalg.inv(K).T @ E @ np.linalg.inv(K)
    xa = np.column_stack([uv_a, np.ones(len(uv_a))])
    xb = np.column_stack([uv_b, np.ones(len(uv_b))])
    Fa, Ftb = xa @ F.T, xb @ F
    num = np.einsum("ij,ij->i", xb, Fa) ** 2
    return np.sqrt(num / (Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2))


def test_place_recognition_finds_the_revisited_place_not_an_unrelated_one(orbit):
    images, depth, c2w, K = orbit
    db = KeyframeDatabase(vocabulary_size=16)
    for i in range(0, 36, 3):  # one loop's keyframes
        kf = lift_keyframe(images[i], depth[i], depth[i] > 0, K, c2w[i], i, 1000)
        db.add(i // 6, 0, kf, c2w[i], K)
    revisit = lift_keyframe(images[37], depth[37], depth[37] > 0, K, c2w[37], 37, 1000)  # 420/44*37 = 353 deg
    hits = db.query(revisit.features.descriptors, 3)
    assert hits[0][0].frame_index in (0, 3)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, images[0].shape, dtype=np.uint8)  # texture no place has
    unrelated = lift_keyframe(noise, depth[0], depth[0] > 0, K, c2w[0], 99, 1000)
    top_unrelated = db.query(unrelated.features.descriptors, 1)[0][1]
    assert top_unrelated < hits[0][1] - 0.2


def test_keyframe_database_memory_is_capped(orbit):
    images, depth, c2w, K = orbit
    db = KeyframeDatabase(vocabulary_size=8, max_keyframes=10)
    per = []
    for i in range(FRAMES):
        kf = lift_keyframe(images[i], depth[i], depth[i] > 0, K, c2w[i], i, 400)
        db.add(i // 6, 0, kf, c2w[i], K)
        per.append(db.entries[-1].nbytes if db.entries else 0)
    assert len(db) == 10 and db.evicted == FRAMES - 10
    # Per keyframe: 400 features (OpenCV may return a few more on ties) x (8 + 128 + 12 + 4 + 1) bytes
    # + pose, plus its 8 x 128 float16 descriptor.
    assert db.nbytes <= 10 * (410 * 153 + 200 + 8 * 128 * 2) + db.centres.nbytes
    # Distinct places stay: the kept keyframes still span the orbit.
    kept = sorted(e.frame_index for e in db.entries)
    assert kept[-1] - kept[0] >= FRAMES // 2


def test_recorded_map_keyframes_follow_the_windows_a_loop_moves(orbit):
    """A saved map must hold the corrected world: its keyframes sit where the outputs put their frames."""
    _, aligner, poses = _run(orbit, loop_closure=True, record_map=True)
    assert aligner.global_map.summary()["optimisations"]  # a solve moved earlier windows
    keyframes = aligner.map_keyframes()
    assert len(keyframes) >= 5
    for m in keyframes:
        np.testing.assert_allclose(m.c2w, poses[m.frame_index], atol=1e-6)


@pytest.fixture(scope="module")
def double_orbit():
    """Two laps of the layered room's orbit (720 degrees): the second lap sees again what the first saw."""
    from stream4d.synthetic import intrinsics_for, make_trajectory, render_view

    frames = 64
    scene, _ = layered_room(5)
    c2w = make_trajectory("orbit", frames, seed=5, scene=scene, arc_deg=720 * (frames - 1) / frames)
    K = intrinsics_for(W, H, fov_deg=60)
    views = [render_view(scene, c2w[i], K, W, H, index=i) for i in range(frames)]
    return np.stack([v.rgb for v in views]), np.stack([v.depth for v in views]), c2w, K


def _database_sizes(orbit, cover_fraction: float) -> tuple[list[tuple[int, int]], StreamAligner]:
    """(last frame of the window, keyframes in the database) after each window of a bent-window run."""
    images, depth, c2w, K = orbit
    rng = np.random.default_rng(2)
    config = AlignConfig(window=WINDOW, overlap=OVERLAP, new_segment_on_gap=True, fix_intrinsics=False,
                         layerwise=False, loop_closure=LoopClosureConfig(keyframe_stride=3,
                                                                         cover_fraction=cover_fraction))
    aligner = StreamAligner(config)
    sizes = []
    for span in window_spans(len(images), WINDOW, OVERLAP):
        aligner.add(window_from_geometry(span, images[span], depth[span], _bent(c2w[span]), K, random_sim3(rng)))
        sizes.append((int(span[-1]), len(aligner.global_map.database)))
    return sizes, aligner


def test_the_database_stops_growing_when_the_stream_goes_over_mapped_ground(double_orbit):
    lap = len(double_orbit[0]) // 2
    sizes, aligner = _database_sizes(double_orbit, cover_fraction=0.3)
    summary = aligner.global_map.summary()
    first_lap = max(n for last, n in sizes if last < lap)
    second_lap = [n for last, n in sizes if last >= lap + WINDOW]  # once a loop could be accepted
    assert summary["loops_accepted"] >= 2 and summary["keyframes_covered"] >= 4
    assert summary["keyframes"] == summary["keyframes_added"]
    assert max(second_lap) - first_lap <= 2  # the second lap stores (almost) nothing new
    # Storing every keyframe (the rule off) grows with time instead.
    sizes_all, aligner_all = _database_sizes(double_orbit, cover_fraction=0.0)
    assert aligner_all.global_map.summary()["keyframes_covered"] == 0
    assert sizes_all[-1][1] >= sizes[-1][1] + summary["keyframes_covered"] - 1
    assert aligner_all.global_map.summary()["loops_accepted"] >= 2


def test_cover_fraction_is_checked():
    with pytest.raises(ValueError, match="cover_fraction"):
        LoopClosureConfig(cover_fraction=1.5)



def test_a_window_two_windows_on_is_not_a_loop():
    """A 60-degree arc in five windows: window 2 sees what window 0 saw, but one window of chain lies
    between them, which drifts less than a loop edge is wrong; loops span three windows or more."""
    from stream4d.synthetic import intrinsics_for, make_trajectory, render_view

    frames = 30
    scene, _ = layered_room(5)
    c2w = make_trajectory("orbit", frames, seed=5, scene=scene, arc_deg=60)
    K = intrinsics_for(W, H, fov_deg=60)
    views = [render_view(scene, c2w[i], K, W, H, index=i) for i in range(frames)]
    images, depth = np.stack([v.rgb for v in views]), np.stack([v.depth for v in views])
    rng = np.random.default_rng(2)
    config = AlignConfig(window=WINDOW, overlap=OVERLAP, new_segment_on_gap=True, fix_intrinsics=False,
                         layerwise=False, loop_closure=LoopClosureConfig(keyframe_stride=3))
    aligner = StreamAligner(config)
    for span in window_spans(frames, WINDOW, OVERLAP):
        aligner.add(window_from_geometry(span, images[span], depth[span], c2w[span], K, random_sim3(rng)))
    loops = [(loop["query_window"], loop["match_window"]) for loop in aligner.global_map.summary()["loops"]]
    assert loops and all(query - match >= 3 for query, match in loops), loops


def test_a_bridge_off_the_window_before_the_gap_is_tied_to_it_by_its_link():
    """A window that lost its overlap and was bridged back onto the window just before the gap has
    no sequential edge (it registered on nothing): its link is the edge that ties it to the graph,
    carrying the noise its PnP measured; without it the segment after the gap would float free."""
    from align.globalmap import GlobalMap

    gmap = GlobalMap(LoopClosureConfig())
    step = np.eye(4)
    for window, registered in ((0, False), (1, True)):
        step[0, 3] = window
        gmap.add_window(window, 0, step.copy(), registered, [])
    step[0, 3] = 2
    gmap.add_window(2, 0, step.copy(), False, [], linked_to=1, link_sigma=(1e-3, 1e-2, 1e-3))
    ties = [(e.i, e.j, e.kind, e.sigma) for e in gmap.graph.edges]
    assert ties == [(0, 1, "sequential", None), (1, 2, "link", (1e-3, 1e-2, 1e-3))]
    assert gmap.summary()["links"] == [{"window": 2, "linked_to": 1, "measured": True, "sigma_deg": 0.0573,
                                        "sigma_centre": 0.01, "sigma_log_scale": 0.001}]


def test_a_keyframe_through_a_lens_is_lifted_where_the_lens_saw_it(orbit):
    from stream4d.geometry import project_points, radial_distorted
    from stream4d.synthetic import render_view

    _, _, c2w, K = orbit
    scene, _ = layered_room(5)
    k1 = -0.2
    views = [render_view(scene, c2w[i], K, W, H, index=i, radial_k1=k1) for i in (0, 1)]

    def surface_share(kf) -> float:
        """Share of the lifted points that the next view, through the lens, sees at their own depth (corners
        at depth edges may miss it by a pixel)."""
        uv, z = project_points(kf.points, K, c2w[1])
        uv = radial_distorted(uv, K, k1)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        seen = views[1].depth[np.rint(uv[inside, 1]).astype(int), np.rint(uv[inside, 0]).astype(int)]
        return float(np.mean(np.abs(seen / z[inside] - 1) < 0.01))

    depth = views[0].depth
    lensed = lift_keyframe(views[0].rgb, depth, depth > 0, K, c2w[0], 0, 1000, k1)
    pinhole = lift_keyframe(views[0].rgb, depth, depth > 0, K, c2w[0], 0, 1000)
    assert len(lensed.points) > 100
    # The keyframe's keypoints are the pinhole K's: its points project onto them without the lens.
    np.testing.assert_allclose(project_points(lensed.points, K, c2w[0])[0], lensed.features.keypoints, atol=1e-3)
    assert surface_share(lensed) > 0.7 and surface_share(pinhole) < surface_share(lensed) - 0.3
