"""Re-attaching a lost segment: keyframes, the 3D-3D similarity, and the aligner's use of them."""

from dataclasses import replace

import numpy as np
import pytest
from align_scenes import room_window

from align.aligner import AlignConfig, StreamAligner
from align.reattach import ReattachConfig, SegmentLinker, lift_keyframe, ransac_sim3
from align.synthetic import random_sim3, window_from_geometry
from stream4d.geometry import Sim3, project_points, rotation_angle_deg
from stream4d.synthetic import make_scene, make_trajectory, render_view

W, H = 256, 192




def test_ransac_similarity_is_recovered_through_40_percent_outliers():
    rng = np.random.default_rng(0)
    truth = random_sim3(rng)
    src = rng.uniform(-2, 2, (200, 3)) + [0, 0, 5]
    dst = truth.apply(src) + rng.normal(0, 1e-3, src.shape)
    bad = rng.choice(200, 80, replace=False)
    dst[bad] += rng.uniform(-3, 3, (80, 3))
    S, inliers = ransac_sim3(src, dst, np.full(200, 0.05), 300, rng)
    assert inliers.sum() >= 115 and inliers[bad].sum() <= 2
    assert S.s == pytest.approx(truth.s, rel=1e-3)
    assert rotation_angle_deg(S.R @ truth.R.T) < 0.05
    np.testing.assert_allclose(S.t, truth.t, atol=0.02)


def test_a_segment_that_sees_the_earlier_world_again_is_placed_back_in_it(room):
    rng = np.random.default_rng(1)
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    to_world = random_sim3(rng)  # the first window defines the world: truth = to_world(scene)
    first = aligner.add(room_window(room, range(0, 8), to_world))
    # Frames 8-9 are lost; the next window shares no frame with frames 6-7 and comes in its own frame.
    later = aligner.add(room_window(room, range(10, 18), random_sim3(rng)))
    assert first.segment == 0 and later.segment == 0
    link = later.reattached
    assert link is not None and (link.from_segment, link.to_segment) == (1, 0) and link.inliers >= 25
    assert later.info["placement"] == "new segment" and later.info["reattached"]["to_segment"] == 0
    # The link's matches stay for a final adjustment (loop closure on or off).
    [pairs] = aligner.link_pairs
    assert (pairs.query_frame, pairs.match_frame) == (link.frame_index, link.keyframe_index)
    assert len(pairs.query_uv) == len(pairs.match_uv) >= 20
    truth_c2w = to_world.apply_c2w(room.c2w[10:18])
    extent = np.ptp(to_world.apply(room.c2w[:, :3, 3]), axis=0).max()
    err = np.linalg.norm(later.prediction.c2w[:, :3, 3] - truth_c2w[:, :3, 3], axis=1)
    assert err.max() < 0.02 * extent
    assert max(rotation_angle_deg(a[:3, :3] @ b[:3, :3].T) for a, b in zip(later.prediction.c2w, truth_c2w)) < 1.0
    # The next window registers as usual, in world 0.
    after = aligner.add(room_window(room, range(16, 20), random_sim3(rng)))
    assert after.segment == 0 and after.reattached is None and after.info["placement"] == "registered"


def _linked_pair(room, to_world: Sim3):
    """Frame 6 kept as segment 0's keyframe (the room's own world), frame 10 as a query of segment 1 in the
    world ``to_world`` maps the room into; the linker that holds them and the link it found."""
    linker = SegmentLinker(ReattachConfig())

    def lift(i, world: Sim3):
        return lift_keyframe(room.images[i], room.depth[i] * world.s, room.depth[i] > 0, room.K,
                             world.apply_c2w(room.c2w[i][None])[0], i, 2000)

    linker.remember(0, lift(6, Sim3.identity()))
    query = lift(10, to_world)
    link = linker.try_link(1, [query])
    assert link is not None and link.to_segment == 0
    return linker, link, query


def test_a_link_measures_its_noise_by_pnp_and_owns_up_to_being_off(room):
    """Exact geometry: the link's noise is a small PnP covariance. The same link turned by 1 degree, or
    scaled by 5 %, owns up to it: the PnP pose and the depth ratio disagree with it by that much."""
    from scipy.spatial.transform import Rotation

    to_world = random_sim3(np.random.default_rng(4))
    linker, link, query = _linked_pair(room, to_world)
    noise = linker.measure(link, [query])
    rotation, centre, log_scale = noise.sigma
    extent = np.ptp(room.c2w[:, :3, 3], axis=0).max()
    assert 0 < np.degrees(rotation) < 0.05 and 0 < centre < 0.005 * extent and 0 < log_scale < 0.005
    np.testing.assert_allclose(noise.centre, room.c2w[10, :3, 3], atol=0.005 * extent)
    # The PnP inliers come along as image matches: the same scene point in the query and the keyframe.
    assert len(noise.query_uv) == len(noise.match_uv) >= 20
    uv = noise.query_uv.astype(np.float64)
    z = room.depth[10][np.rint(uv[:, 1]).astype(int), np.rint(uv[:, 0]).astype(int)]
    world = (np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(room.K).T * z[:, None]) @ \
        room.c2w[10][:3, :3].T + room.c2w[10][:3, 3]
    seen, _ = project_points(world, room.K, room.c2w[6])
    assert np.median(np.linalg.norm(seen - noise.match_uv, axis=1)) < 1.0

    turn = Sim3(1.0, Rotation.from_rotvec(np.radians([0.0, 1.0, 0.0])).as_matrix(), np.zeros(3))
    turned = replace(link, sim3=turn.compose(link.sim3))
    assert np.degrees(linker.measure(turned, [query]).sigma[0]) == pytest.approx(1.0, rel=0.05)
    scaled = replace(link, sim3=Sim3(1.05, np.eye(3), np.zeros(3)).compose(link.sim3))
    assert linker.measure(scaled, [query]).sigma[2] == pytest.approx(np.log(1.05), rel=0.05)


def test_a_link_whose_keyframe_is_gone_is_not_measured(room):
    linker, link, query = _linked_pair(room, random_sim3(np.random.default_rng(5)))
    assert linker.measure(replace(link, keyframe_index=99), [query]) is None
    assert linker.measure(link, []) is None


def test_a_segment_of_unrelated_content_stays_detached(room):
    rng = np.random.default_rng(2)
    street = make_scene("street", seed=5)
    c2w = make_trajectory("sideways", 6, seed=5, scene=street)
    views = [render_view(street, c, room.K, W, H) for c in c2w]
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 8), random_sim3(rng)))
    elsewhere = window_from_geometry(np.arange(30, 36), np.stack([v.rgb for v in views]),
                                     np.stack([v.depth for v in views]), c2w, room.K, random_sim3(rng))
    out = aligner.add(elsewhere)
    assert out.segment == 1 and out.reattached is None


def test_reattaching_can_be_switched_off(room):
    rng = np.random.default_rng(1)
    config = AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False,
                         reattach=ReattachConfig(enabled=False))
    aligner = StreamAligner(config)
    aligner.add(room_window(room, range(0, 8), random_sim3(rng)))
    later = aligner.add(room_window(room, range(10, 18), random_sim3(rng)))
    assert later.segment == 1 and later.reattached is None


def test_segment_numbers_are_not_reused_after_a_reattachment(room):
    rng = np.random.default_rng(4)
    aligner = StreamAligner(AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 8), random_sim3(rng)))
    assert aligner.add(room_window(room, range(10, 16), random_sim3(rng))).segment == 0  # 1 came back as 0
    street = make_scene("street", seed=5)
    c2w = make_trajectory("sideways", 4, seed=5, scene=street)
    views = [render_view(street, c, room.K, W, H) for c in c2w]
    lost = window_from_geometry(np.arange(40, 44), np.stack([v.rgb for v in views]),
                                np.stack([v.depth for v in views]), c2w, room.K, random_sim3(rng))
    assert aligner.add(lost).segment == 2


def test_a_detached_window_with_no_new_frame_is_aligned_without_a_reattach_attempt(room):
    """A window whose posed frames were all emitted before (the model posed only the overlap)."""
    rng = np.random.default_rng(5)
    street = make_scene("street", seed=5)
    c2w = make_trajectory("sideways", 6, seed=5, scene=street)
    views = [render_view(street, c, room.K, W, H) for c in c2w]
    rgb, depth = np.stack([v.rgb for v in views]), np.stack([v.depth for v in views])
    aligner = StreamAligner(AlignConfig(window=6, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    aligner.add(room_window(room, range(0, 6), random_sim3(rng)))
    lost = aligner.add(window_from_geometry(np.arange(30, 36), rgb, depth, c2w, room.K, random_sim3(rng)))
    assert lost.segment == 1
    again = aligner.add(window_from_geometry(np.arange(34, 36), rgb[4:], depth[4:], c2w[4:], room.K,
                                             random_sim3(rng)))
    assert not again.is_new.any() and again.segment == 1 and again.reattached is None


def _gap_stream(room, depth_bias: float, config: AlignConfig):
    """Frames 0-7, then 10-17 whose depth is ``depth_bias`` x what its own poses say (the window lost
    its overlap frames 8-9 and its depth disagrees with its poses), then 16-19. Returns the outputs and
    the RMS camera-centre error (after one similarity on all frames) over the path's extent."""
    from stream4d.geometry import umeyama

    rng = np.random.default_rng(1)
    aligner = StreamAligner(config)
    span = np.arange(10, 18)
    outs = [aligner.add(room_window(room, range(0, 8), random_sim3(rng))),
            aligner.add(window_from_geometry(span, room.images[span], room.depth[span] * depth_bias,
                                             room.c2w[span], room.K, random_sim3(rng))),
            aligner.add(room_window(room, range(16, 20), random_sim3(rng)))]
    idx = np.concatenate([o.prediction.frame_indices[o.is_new] for o in outs])
    est = np.concatenate([o.prediction.c2w[o.is_new][:, :3, 3] for o in outs])
    truth = room.c2w[idx][:, :3, 3]
    err = np.linalg.norm(umeyama(est, truth).apply(est) - truth, axis=1)
    return outs, float(np.sqrt((err ** 2).mean()) / np.ptp(truth, axis=0).max())


def test_a_window_that_lost_its_overlap_is_bridged_at_its_poses_scale_not_its_depths(room):
    """The lifted 3D-3D fit takes the scale of the window's depth (here half what its poses say); only
    the reprojection into all its views at their poses tells, and the pose fit wins the bridge."""
    outs, ate = _gap_stream(room, 0.5, AlignConfig(window=8, overlap=2, new_segment_on_gap=True,
                                                    fix_intrinsics=False))
    bridged = outs[1]
    assert [o.segment for o in outs] == [0, 0, 0] and bridged.info.get("bridged") is True
    assert bridged.info["reattached"]["depth_factor"] == pytest.approx(2.0, rel=0.05)
    assert bridged.sim3_scale == pytest.approx(outs[0].sim3_scale, rel=0.1)  # no scale jump
    # The depth is put right too: the next window registers on it at the poses' scale.
    assert outs[2].info["placement"] == "registered" and ate < 0.005


def test_a_bridge_whose_scale_jumps_from_the_window_before_the_gap_is_refused(room):
    config = AlignConfig(window=8, overlap=2, new_segment_on_gap=True, fix_intrinsics=False,
                         reattach=ReattachConfig(bridge_max_scale_change=1.02))
    outs, _ = _gap_stream(room, 1.0, config)  # the random frames differ in scale by much more than 2 %
    assert outs[1].segment == 1 and outs[1].reattached is None and "scale" in outs[1].info["bridge_rejected"]



def _walk_turn_walk(room, walk_on_scene: str | None = None):
    """A walk down the street (frames 0-7) that turns on the spot (8-12) and walks on (13-20); with
    ``walk_on_scene`` the walk on films that scene instead. Three windows as a video's: the walk
    with the turn's first views, the turn alone (no parallax, so no depth), the turn's end with the
    walk on, each in a random frame. Returns the aligner's outputs and the true poses [21, 4, 4]."""
    from align_scenes import yaw

    street = make_scene("street", seed=2)
    walk = make_trajectory("forward", 16, seed=2, scene=street, step=0.25)
    spot = walk[7]
    turn = np.repeat(spot[None], 5, axis=0)
    for k, deg in enumerate((15, 30, 45, 30, 15)):
        turn[k, :3, :3] = yaw(deg) @ spot[:3, :3]
    c2w = np.concatenate([walk[:8], turn, walk[8:]])
    scenes = [street] * 13 + [make_scene(walk_on_scene, seed=2) if walk_on_scene else street] * 8
    views = [render_view(scene, c, room.K, W, H) for scene, c in zip(scenes, c2w)]
    rgb, depth = np.stack([v.rgb for v in views]), np.stack([v.depth for v in views])
    rng = np.random.default_rng(2)

    def window(span, with_depth=True):
        span = np.asarray(span)
        d = depth[span] if with_depth else np.zeros_like(depth[span])
        return window_from_geometry(span, rgb[span], d, c2w[span], room.K, random_sim3(rng))

    aligner = StreamAligner(AlignConfig(window=10, overlap=2, new_segment_on_gap=True, fix_intrinsics=False))
    outs = [aligner.add(window(range(0, 10))), aligner.add(window(range(8, 13), with_depth=False)),
            aligner.add(window(range(11, 21)))]
    return outs, c2w


def test_a_window_whose_overlap_is_a_turn_on_the_spot_is_bridged_to_the_right_scale(room):
    """The window of the turn saw no parallax, so the next window's shared frames fix its rotation
    but not its scale, which is arbitrary. It is bridged through the walk's keyframes instead of
    being taken at scale 1, and the turn's frames stand where the walk stopped."""
    from stream4d.geometry import umeyama

    outs, c2w = _walk_turn_walk(room)
    assert outs[1].prediction.rotation_only.all() and outs[2].info["unscaled_overlap"]
    assert [o.segment for o in outs] == [0, 0, 0] and outs[2].info.get("bridged") is True
    idx = np.concatenate([o.prediction.frame_indices[o.is_new] for o in outs])
    est = np.concatenate([o.prediction.c2w[o.is_new][:, :3, 3] for o in outs])
    truth = c2w[idx, :3, 3]
    err = np.linalg.norm(umeyama(est, truth).apply(est) - truth, axis=1)
    assert np.sqrt((err ** 2).mean()) / np.ptp(truth, axis=0).max() < 0.01



def test_a_window_after_a_turn_that_no_bridge_holds_starts_a_world_of_its_own(room):
    """The walk on films what no keyframe saw: nothing to bridge to. Its scale is unknown, so it is
    a segment of its own (relocalisation may find it later), not the old world at scale 1; the
    frames it shares with the turn stay where the turn's window put them."""
    outs, _ = _walk_turn_walk(room, walk_on_scene="room")
    after = outs[2]
    assert after.info["unscaled_overlap"] and after.reattached is None
    assert after.segment == 1 and after.info["placement"] == "new segment"
    assert not after.is_new[:2].any() and after.is_new[2:].all()
