"""Synthetic scenes: exact depth, consistent views, valid paths, moving object, writers, determinism."""

from __future__ import annotations

import json
import pickle
import types

import av
import cv2
import numpy as np
import pytest

from stream4d.cli import main as cli_main
from stream4d.geometry import project_points, unproject_depth
from stream4d.outputs import read_cameras_json
from stream4d.synthetic import (
    TRAJECTORY_KINDS,
    Rect,
    Scene,
    Sphere,
    intrinsics_for,
    look_at,
    make_scene,
    make_trajectory,
    render_sequence,
    render_view,
    write_sequence,
)

W, H = 128, 96


@pytest.fixture(scope="module")
def room():
    return make_scene("room", seed=0)


@pytest.fixture(scope="module")
def moving_room():
    return make_scene("room", seed=0, moving_object=True)


@pytest.fixture(scope="module")
def street():
    return make_scene("street", seed=0)


def _rays(K, width, height):
    """Camera-frame rays [H, W, 3] with z = 1."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T


def test_depth_of_a_tilted_plane_and_a_sphere_equals_the_analytic_z_depth():
    normal = np.array([0.3, -0.2, -1.0]) / np.linalg.norm([0.3, -0.2, -1.0])
    plane_point = np.array([0.0, 0.0, 6.0])
    centre, radius = np.array([0.6, 0.3, 3.0]), 0.5
    scene = Scene([Rect.facing(plane_point, normal, 40, 40)], [Sphere(centre, radius)])
    K = intrinsics_for(W, H, 70)
    # A camera turned and moved: world = R @ cam + t, so the analytic check runs in the camera frame.
    c2w = look_at([0.2, -0.1, -0.5], [0.3, 0.0, 3.0])
    view = render_view(scene, c2w, K, W, H)
    assert view.valid.all()

    w2c = np.linalg.inv(c2w)
    n_cam = w2c[:3, :3] @ normal
    p_cam = w2c[:3, :3] @ plane_point + w2c[:3, 3]
    c_cam = w2c[:3, :3] @ centre + w2c[:3, 3]
    rays = _rays(K, W, H)
    plane_depth = (n_cam @ p_cam) / (rays @ n_cam)
    # Ray/sphere: |z * ray - c|^2 = r^2, nearest root.
    a = np.einsum("hwk,hwk->hw", rays, rays)
    b = rays @ c_cam
    disc = b * b - a * (c_cam @ c_cam - radius ** 2)
    on_sphere = disc > 0
    sphere_depth = np.where(on_sphere, (b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    expected = np.minimum(plane_depth, sphere_depth)

    assert 200 < on_sphere.sum() < W * H / 2  # the sphere covers a fair part of the image
    np.testing.assert_allclose(view.depth, expected, rtol=1e-4)
    # The points the renderer reports lie on the surfaces it claims.
    pts = unproject_depth(view.depth.astype(np.float64), K, c2w)
    assert np.abs(np.linalg.norm(pts[on_sphere] - centre, axis=1) - radius).max() < 1e-4 * 3.0
    assert np.abs((pts[~on_sphere] - plane_point) @ normal).max() < 1e-4 * 6.0


def test_fronto_parallel_plane_has_constant_depth():
    scene = Scene([Rect.facing((0, 0, 4.25), (0, 0, -1), 30, 30)])
    view = render_view(scene, np.eye(4), intrinsics_for(W, H), W, H)
    np.testing.assert_allclose(view.depth, 4.25, rtol=1e-6)


def test_depth_reprojects_between_two_views_and_colours_agree(room):
    K = intrinsics_for(W, H)
    c2w = make_trajectory("orbit", 2, scene=room, step_deg=6.0)
    a, b = (render_view(room, c, K, W, H) for c in c2w)
    pts = unproject_depth(a.depth.astype(np.float64), K, a.c2w)  # [H, W, 3] world
    uv, z = project_points(pts, K, b.c2w)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= W - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= H - 1) & (z > 0)
    assert inside.mean() > 0.8
    mx, my = uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)
    depth_b = cv2.remap(b.depth, mx, my, cv2.INTER_NEAREST)
    rel = np.abs(depth_b - z) / z
    # Nearest-pixel lookup: disagreement only at occlusions and silhouettes.
    agree = inside & (rel < 0.02)
    assert agree.sum() / inside.sum() > 0.9
    assert np.median(rel[inside]) < 5e-3
    # Lambertian shading + view-independent texture: the same point has the same colour in both views.
    rgb_b = cv2.remap(b.rgb, mx, my, cv2.INTER_LINEAR).astype(np.float64)
    diff = np.abs(rgb_b - a.rgb.astype(np.float64)).mean(axis=-1)
    assert np.median(diff[agree]) < 5.0


@pytest.mark.parametrize("scene_kind", ["room", "street"])
@pytest.mark.parametrize("kind", TRAJECTORY_KINDS)
def test_trajectories_are_rigid_and_always_see_geometry(scene_kind, kind, room, street):
    scene = room if scene_kind == "room" else street
    c2w = make_trajectory(kind, 12, seed=3, scene=scene)
    assert c2w.shape == (12, 4, 4) and c2w.dtype == np.float64
    R = c2w[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    np.testing.assert_array_equal(c2w[:, 3], np.broadcast_to([0, 0, 0, 1], (12, 4)))
    assert np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum() > 0.05  # it moves
    K = intrinsics_for(64, 48)
    for c in c2w[::3]:
        view = render_view(scene, c, K, 64, 48)
        assert view.valid.mean() >= 0.95
        assert view.depth[view.valid].min() > 0.3  # never inside or against geometry


def test_room_paths_also_stay_free_in_the_street(street):
    K = intrinsics_for(48, 36)
    for kind in TRAJECTORY_KINDS:
        for c in make_trajectory(kind, 5, seed=1)[::2]:  # fitted to the room (default)
            view = render_view(street, c, K, 48, 36)
            assert view.valid.mean() >= 0.95 and view.depth[view.valid].min() > 0.3, kind


def test_long_paths_slow_down_instead_of_leaving_the_scene(room):
    stage = room.stage
    c2w = make_trajectory("forward", 2000, scene=room)
    travelled = c2w[-1, :3, 3] - c2w[0, :3, 3]
    assert travelled[2] <= stage.drive_length + 1e-9
    c2w = make_trajectory("sideways", 2000, scene=room)
    assert np.linalg.norm(c2w[-1, :3, 3] - c2w[0, :3, 3]) <= np.linalg.norm(stage.walk_end - stage.walk_start) + 0.05


@pytest.mark.parametrize("scene_kind", ["room", "street"])
def test_figure8_closes_every_lap_walks_evenly_and_looks_where_it_goes(scene_kind, room, street):
    scene = room if scene_kind == "room" else street
    stage = scene.stage
    c2w = make_trajectory("figure8", 201, seed=4, scene=scene, laps=2)  # 100 steps a lap
    assert c2w.shape == (201, 4, 4) and c2w.dtype == np.float64
    R = c2w[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    # Closed after each lap, and the second lap retraces the first pose for pose (same places, same heading).
    np.testing.assert_allclose(c2w[100], c2w[0], atol=1e-9)
    np.testing.assert_allclose(c2w[200], c2w[0], atol=1e-9)
    np.testing.assert_allclose(c2w[100:], c2w[:101], atol=1e-9)
    # A figure-eight: the path crosses itself at the start half way round a lap, looking about 90 deg apart.
    eye = c2w[:, :3, 3]
    np.testing.assert_allclose(eye[50, [0, 2]], eye[0, [0, 2]], atol=1e-6)
    assert 45 < np.degrees(np.arccos(R[50, :, 2] @ R[0, :, 2])) < 135
    # Constant walking speed (the bob adds a little), a few centimetres a frame.
    steps = np.linalg.norm(np.diff(eye[:, [0, 2]], axis=0), axis=1)
    assert steps.std() / steps.mean() < 0.02 and 0.1 < steps.mean() < 0.3
    # Looking along the direction of travel, 15 degrees down.
    forward = R[:, :, 2]
    travel = np.gradient(eye[:, [0, 2]], axis=0)
    travel /= np.linalg.norm(travel, axis=1, keepdims=True)
    level = forward[:, [0, 2]] / np.linalg.norm(forward[:, [0, 2]], axis=1, keepdims=True)
    assert np.min(np.sum(level * travel, axis=1)) > np.cos(np.radians(5))
    np.testing.assert_allclose(np.degrees(np.arcsin(forward[:, 1])), 15.0, atol=1e-6)
    # On the free floor, and clear of everything that rises to eye height (the room's column included).
    offset = np.abs(eye[:, [0, 2]] - stage.center[[0, 2]])
    assert np.all(offset <= stage.free_half_extent)
    assert np.all(np.abs(eye[:, 1] - stage.eye_y) <= 0.02 + 1e-9)
    ground = eye[:, [0, 2]]
    for rect in scene.rects:
        c = rect.corners()
        if abs(rect.normal[1]) > 0.5 or c[:, 1].min() > stage.eye_y + 0.3 or c[:, 1].max() < stage.eye_y - 0.3:
            continue  # floors, tops and anything well below (or above) the eye
        along = np.array([-rect.normal[2], rect.normal[0]])  # the wall's horizontal direction in (x, z)
        a, b = c[np.argmin(c[:, [0, 2]] @ along), [0, 2]], c[np.argmax(c[:, [0, 2]] @ along), [0, 2]]
        t = np.clip((ground - a) @ (b - a) / max((b - a) @ (b - a), 1e-12), 0, 1)
        assert np.linalg.norm(ground - (a + t[:, None] * (b - a)), axis=1).min() > 0.4, c
    for sphere in scene.spheres:
        assert np.linalg.norm(eye - sphere.center, axis=1).min() > sphere.radius + 0.2
    K = intrinsics_for(48, 36)
    for c in c2w[:100:4]:
        view = render_view(scene, c, K, 48, 36)
        assert view.valid.mean() >= 0.95 and view.depth[view.valid].min() > 0.3


def test_figure8_options_are_checked(room):
    lap = make_trajectory("figure8", 101, scene=room, laps=1)
    np.testing.assert_allclose(lap[-1], lap[0], atol=1e-9)
    by_step = make_trajectory("figure8", 101, scene=room, step=0.05)
    assert np.linalg.norm(np.diff(by_step[:, [0, 2], 3], axis=0), axis=1).mean() == pytest.approx(0.05, rel=0.02)
    for kw, message in (({"laps": 0}, "laps must be > 0"), ({"step": -0.1}, "step must be > 0"),
                        ({"width": 0}, "width must be > 0"), ({"length": -1}, "length must be > 0"),
                        ({"pitch_deg": 80}, "pitch_deg must be within"), ({"bob": -0.1}, "bob must be >= 0"),
                        ({"length": 4.5}, "leaves the free floor"), ({"width": 2.0, "yaw_deg": 90}, "free floor")):
        with pytest.raises(ValueError, match=message):
            make_trajectory("figure8", 20, scene=room, **kw)


def test_moving_object_moves_over_time_and_the_mask_covers_exactly_it(moving_room, room):
    K = intrinsics_for(W, H)
    eye = moving_room.stage.handheld_eye
    masks = []
    for t in (0.0, 2.0):
        centre = moving_room.moving_pose(t)[:3, 3]
        view = render_view(moving_room, look_at(eye, centre), K, W, H, time=t)
        assert view.timestamp == t
        assert view.dynamic_mask.sum() > 50
        pts = unproject_depth(view.depth.astype(np.float64), K, view.c2w)
        radius = moving_room.moving.size[0]
        # Mask pixels see the ball at its position at time t; other pixels see static geometry.
        dist = np.linalg.norm(pts - centre, axis=-1)
        assert np.abs(dist[view.dynamic_mask] - radius).max() < 1e-4
        assert np.all(dist[~view.dynamic_mask] > radius - 1e-3)
        masks.append(view)
    c0, c1 = moving_room.moving_pose(0.0)[:3, 3], moving_room.moving_pose(2.0)[:3, 3]
    assert np.linalg.norm(c1 - c0) > 1.0
    # From a fixed camera: the static background is identical, only the ball's pixels change.
    fixed = look_at(eye, moving_room.stage.center)
    v0, v1 = (render_view(moving_room, fixed, K, W, H, time=t) for t in (0.0, 2.0))
    static = render_view(room, fixed, K, W, H)
    assert not np.array_equal(v0.dynamic_mask, v1.dynamic_mask)
    background = ~(v0.dynamic_mask | v1.dynamic_mask)
    np.testing.assert_array_equal(v0.depth[background], static.depth[background])
    np.testing.assert_array_equal(v1.depth[background], static.depth[background])


def test_surface_points_lie_on_the_geometry_with_the_colours_a_camera_sees():
    centre, radius = np.array([0.0, 0.0, 3.0]), 0.6
    scene = Scene([Rect.facing((0, 0, 5), (0, 0, -1), 4, 3)], [Sphere(centre, radius)])
    pts, colours = scene.surface_points(4000, seed=1)
    assert pts.shape == (4000, 3) and colours.shape == (4000, 3)
    assert colours.min() >= 0 and colours.max() <= 1
    on_sphere = np.abs(np.linalg.norm(pts - centre, axis=1) - radius) < 1e-9
    on_plane = (np.abs(pts[:, 2] - 5) < 1e-9) & (np.abs(pts[:, 0]) <= 2) & (np.abs(pts[:, 1]) <= 1.5)
    assert np.all(on_sphere | on_plane)
    expected = 4 * np.pi * radius ** 2 / (4 * np.pi * radius ** 2 + 12)  # area share of the sphere
    assert abs(on_sphere.mean() - expected) < 0.03
    # The colour of a sample is the rendered colour where the camera sees that sample.
    K = intrinsics_for(256, 192, 50)
    view = render_view(scene, np.eye(4), K, 256, 192)
    uv, z = project_points(pts, K, np.eye(4))
    px = np.round(uv).astype(int)
    ok = (px[:, 0] >= 0) & (px[:, 0] < 256) & (px[:, 1] >= 0) & (px[:, 1] < 192)
    ok[ok] &= np.abs(view.depth[px[ok, 1], px[ok, 0]] - z[ok]) < 1e-3 * z[ok]  # visible, not occluded
    assert ok.sum() > 500
    seen = view.rgb[px[ok, 1], px[ok, 0]] / 255.0
    assert np.median(np.abs(seen - colours[ok])) < 0.06

    inside = scene.surface_points(500, seed=2, bounds=([-3, -3, 4.9], [3, 3, 5.1]))[0]
    assert np.all(np.abs(inside[:, 2] - 5) < 1e-9)


def test_images_are_textured_enough_for_sift_matches_that_agree_with_the_geometry(room):
    K = intrinsics_for(256, 192)
    c2w = make_trajectory("sideways", 2, scene=room, step=0.15)
    a, b = (render_view(room, c, K, 256, 192) for c in c2w)
    sift = cv2.SIFT_create()
    ka, da = sift.detectAndCompute(cv2.cvtColor(a.rgb, cv2.COLOR_RGB2GRAY), None)
    kb, db = sift.detectAndCompute(cv2.cvtColor(b.rgb, cv2.COLOR_RGB2GRAY), None)
    assert len(ka) > 300 and len(kb) > 300
    pairs = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.75 * n.distance]
    assert len(pairs) > 150
    pa = np.array([ka[m.queryIdx].pt for m in pairs])
    pb = np.array([kb[m.trainIdx].pt for m in pairs])
    # Where the ground truth says each matched pixel of A lands in B.
    pts = unproject_depth(a.depth.astype(np.float64), K, a.c2w)[np.round(pa[:, 1]).astype(int),
                                                                  np.round(pa[:, 0]).astype(int)]
    uv, _ = project_points(pts, K, b.c2w)
    assert np.mean(np.linalg.norm(uv - pb, axis=1) < 2.0) > 0.85


def test_low_resolution_render_matches_a_downsampled_high_resolution_one(street):
    # Mip-mapped textures and silhouette supersampling: no aliasing even far down the street.
    c2w = make_trajectory("forward", 1, scene=street)[0]
    small = render_view(street, c2w, intrinsics_for(128, 96), 128, 96)
    large = render_view(street, c2w, intrinsics_for(512, 384), 512, 384)
    reduced = cv2.resize(large.rgb, (128, 96), interpolation=cv2.INTER_AREA)
    diff = np.abs(small.rgb.astype(np.float64) - reduced.astype(np.float64))
    assert diff.mean() < 5.5  # without mip-mapping it is ~9.6


def test_rendering_is_deterministic_for_a_seed_and_noise_follows_the_seed():
    K = intrinsics_for(64, 48)
    s1, s2 = make_scene("room", seed=0), make_scene("room", seed=0)
    c1, c2 = make_trajectory("handheld", 4, seed=2), make_trajectory("handheld", 4, seed=2)
    np.testing.assert_array_equal(c1, c2)
    v1 = render_view(s1, c1[1], K, 64, 48, noise_std=3.0, seed=7)
    v2 = render_view(s2, c2[1], K, 64, 48, noise_std=3.0, seed=7)
    np.testing.assert_array_equal(v1.rgb, v2.rgb)
    np.testing.assert_array_equal(v1.depth, v2.depth)
    v3 = render_view(s1, c1[1], K, 64, 48, noise_std=3.0, seed=8)
    assert not np.array_equal(v1.rgb, v3.rgb)
    np.testing.assert_array_equal(v1.depth, v3.depth)
    clean = render_view(s1, c1[1], K, 64, 48)
    noise = v1.rgb.astype(np.float64) - clean.rgb
    assert 2.0 < noise.std() < 4.0
    assert not np.array_equal(make_trajectory("handheld", 4, seed=3), c1)
    other = render_view(make_scene("room", seed=1), c1[1], K, 64, 48)
    assert not np.array_equal(other.rgb, clean.rgb)
    # A scene survives pickling (worker processes): same pixels after the round trip.
    revived = pickle.loads(pickle.dumps(s1))
    np.testing.assert_array_equal(render_view(revived, c1[1], K, 64, 48).rgb, clean.rgb)


def test_render_sequence_is_lazy_and_timestamps_follow_fps(room):
    c2w = make_trajectory("orbit", 3, scene=room)
    views = render_sequence(room, c2w, intrinsics_for(32, 24), 32, 24, fps=4.0)
    assert isinstance(views, types.GeneratorType)
    got = [(v.index, v.timestamp) for v in views]
    assert got == [(0, 0.0), (1, 0.25), (2, 0.5)]
    with pytest.raises(ValueError, match="K must be"):
        render_sequence(room, c2w, np.eye(4), 32, 24)  # raises when called, not when iterated


def test_write_sequence_writes_pngs_depth_masks_and_a_readable_cameras_json(tmp_path, moving_room):
    K = intrinsics_for(64, 48)
    c2w = make_trajectory("orbit", 3, scene=moving_room)
    views = list(render_sequence(moving_room, c2w, K, 64, 48, fps=5.0))
    path = write_sequence(tmp_path, iter(views), fps=5.0, depth=True, masks=True, meta={"scene": {"kind": "room"}})
    doc = json.loads(path.read_text())
    assert doc["scene"] == {"kind": "room"} and doc["units"] == "metres"
    assert [f["image"] for f in doc["frames"]] == [f"images/{i:06d}.png" for i in range(3)]
    ref = read_cameras_json(path)  # the project's reader of the shared-data format
    for view, frame, entry in zip(views, ref, doc["frames"]):
        np.testing.assert_allclose(frame.c2w, view.c2w)
        np.testing.assert_allclose(frame.K, view.K)
        assert frame.timestamp == pytest.approx(view.timestamp)
        png = cv2.cvtColor(cv2.imread(str(tmp_path / entry["image"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(png, view.rgb)
        np.testing.assert_array_equal(np.load(tmp_path / entry["depth"]), view.depth)
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / entry["mask"]), 0) > 0, view.dynamic_mask)


def test_write_sequence_video_is_h264_with_every_frame(tmp_path, room):
    K = intrinsics_for(64, 48)
    c2w = make_trajectory("orbit", 6, scene=room)
    views = list(render_sequence(room, c2w, K, 64, 48, fps=10.0))
    path = write_sequence(tmp_path, iter(views), video="clip.mp4", fps=10.0)
    doc = json.loads(path.read_text())
    assert [f["image"] for f in doc["frames"]] == [f"clip.mp4#{i}" for i in range(6)]
    assert [f["timestamp"] for f in doc["frames"]] == pytest.approx([i / 10 for i in range(6)])
    assert not (tmp_path / "images").exists()
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 6
    for frame, view in zip(decoded, views):
        assert frame.shape == (48, 64, 3)
        assert np.abs(frame.astype(np.float64) - view.rgb).mean() < 8.0


def test_bad_inputs_raise_errors_that_name_them(tmp_path, room):
    K = intrinsics_for(32, 24)
    with pytest.raises(ValueError, match="scene kind"):
        make_scene("forest")
    with pytest.raises(ValueError, match="trajectory kind"):
        make_trajectory("zigzag", 5)
    with pytest.raises(ValueError, match="unknown option"):
        make_trajectory("orbit", 5, speed=3)
    with pytest.raises(ValueError, match="num_frames"):
        make_trajectory("orbit", 0)
    with pytest.raises(ValueError, match="orthonormal"):
        render_view(room, np.diag([2.0, 1.0, 1.0, 1.0]), K, 32, 24)
    with pytest.raises(ValueError, match="image size"):
        render_view(room, np.eye(4), K, 0, 24)
    views = render_sequence(room, make_trajectory("orbit", 1), intrinsics_for(33, 24), 33, 24)
    with pytest.raises(ValueError, match="even image size"):
        write_sequence(tmp_path, views, video="odd.mp4")


def test_synth_command_writes_a_data_folder(tmp_path, capsys):
    out = tmp_path / "set"
    code = cli_main(["synth", "--scene", "street", "--trajectory", "forward", "--frames", "3", "--size", "64x48",
                     "--depth", "--noise", "1", "--traj-kw", "step=0.5", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "cameras.json").read_text())
    assert len(doc["frames"]) == 3 and doc["trajectory"]["step"] == 0.5
    assert (out / "images" / "000002.png").is_file() and (out / "depth" / "000002.npy").is_file()
    z = [np.array(f["c2w"])[2, 3] for f in doc["frames"]]
    assert np.diff(z) == pytest.approx([0.5, 0.5], abs=0.01)
    assert cli_main(["synth", "--traj-kw", "bogus=1", "--frames", "2", "--out", str(tmp_path / "x")]) == 2
    assert "bogus" in capsys.readouterr().err
    assert cli_main(["synth", "--trajectory", "figure8", "--traj-kw", "laps=0", "--frames", "2",
                     "--out", str(tmp_path / "y")]) == 2
    assert "laps must be > 0" in capsys.readouterr().err
    out = tmp_path / "eight"
    assert cli_main(["synth", "--trajectory", "figure8", "--frames", "5", "--size", "32x24", "--traj-kw", "laps=1",
                     "--out", str(out)]) == 0
    doc = json.loads((out / "cameras.json").read_text())
    assert doc["trajectory"] == {"kind": "figure8", "frames": 5, "laps": 1.0}
    np.testing.assert_allclose(doc["frames"][4]["c2w"], doc["frames"][0]["c2w"], atol=1e-9)


@pytest.mark.parametrize("seed", [301, 302])
def test_a_street_whose_last_block_is_a_sliver_still_builds(seed):
    # These seeds end a row of buildings with a block shorter than a shop sign.
    scene = make_scene("street", seed=seed)
    c2w = make_trajectory("forward", 3, seed=seed, scene=scene)
    view = render_view(scene, c2w[0], intrinsics_for(64, 36, 70), 64, 36)
    assert np.isfinite(view.depth).all() and view.depth.min() > 0


def test_a_lens_bends_the_pinhole_image_as_radial_distorted_says(room, tmp_path, capsys):
    """A view through a lens (k1 = -0.08, barrel) sees at each pixel what the pinhole view sees where
    ``radial_undistorted`` puts it: its depth, sampled there, agrees; the principal point is not moved.
    ``stream4d synth --radial`` records the lens in cameras.json and refuses one that folds the image."""
    from stream4d.geometry import radial_undistorted

    K = intrinsics_for(W, H, 70.0)
    c2w = make_trajectory("orbit", 1, scene=room)[0]
    pinhole, lens = render_view(room, c2w, K, W, H), render_view(room, c2w, K, W, H, radial_k1=-0.08)
    assert lens.radial_k1 == -0.08 and pinhole.radial_k1 == 0.0
    grid = np.stack(np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)), -1)
    at = radial_undistorted(grid, K, -0.08).astype(np.float32)
    inside = (at[..., 0] >= 0) & (at[..., 0] <= W - 1) & (at[..., 1] >= 0) & (at[..., 1] <= H - 1)
    sampled = cv2.remap(pinhole.depth, at[..., 0], at[..., 1], cv2.INTER_NEAREST)
    rel = np.abs(sampled - lens.depth) / np.maximum(lens.depth, 1e-6)
    assert inside.mean() > 0.85 and np.median(rel[inside]) < 5e-3  # barrel: the edges see beyond the pinhole
    moved = np.linalg.norm(at - grid, axis=-1)
    assert moved.max() > 3.0 and moved[int(K[1, 2]), int(K[0, 2])] < 0.05  # corners bend, the centre stays
    bent = inside & (moved > 2)  # where the lens moves the view, the pinhole's own pixel disagrees more
    assert np.abs(lens.depth - pinhole.depth)[bent].mean() > 3 * np.abs(sampled - lens.depth)[bent].mean()

    out = tmp_path / "lens"
    assert cli_main(["synth", "--frames", "2", "--size", "32x24", "--radial", "-0.05", "--out", str(out)]) == 0
    doc = json.loads((out / "cameras.json").read_text())
    assert doc["radial_k1"] == -0.05 and [f["radial_k1"] for f in doc["frames"]] == [-0.05, -0.05]
    assert cli_main(["synth", "--frames", "2", "--size", "32x24", "--radial", "-0.9", "--out",
                     str(tmp_path / "folded")]) == 2
    assert "folds the image" in capsys.readouterr().err
