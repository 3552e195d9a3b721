"""What a stream looks like in the .rrd: recorded by RerunObserver, read back with rerun's RrdReader."""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from viz_fixtures import make_snapshot, make_windows, rrd

from stream4d.contracts import Reattachment, StreamStats
from stream4d.geometry import Sim3
from viz import RerunObserver, VizConfig, paths


def record(tmp_path, windows, snapshots=(), name="run.rrd", **config):
    """Feed ``windows`` (with stats after each and ``snapshots[i]`` after window i) and close."""
    path = tmp_path / name
    stats = StreamStats()
    with RerunObserver(VizConfig(rrd_path=path, **config)) as obs:
        for i, w in enumerate(windows):
            obs.on_window(w)
            stats.windows += 1
            stats.frames_posed += int(w.is_new.sum())
            stats.fps, stats.gaussians, stats.frames_dropped = 2.0 + i, 1000 * (i + 1), i
            obs.on_stats(stats)
            if i < len(snapshots):
                obs.on_gaussians(snapshots[i])
    assert obs.errors == []
    return rrd(path), obs


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, fern_windows):
    snaps = [make_snapshot(fern_windows[: i + 1], n_static=3000, dynamic_per_frame=50, seed=i)
             for i in range(len(fern_windows))]
    # A queue that holds everything: this recording pins content, not the drop policy.
    return record(tmp_path_factory.mktemp("viz"), fern_windows, snaps, queue_size=64,
                  point_budget=2000, final_point_budget=2500, frame_point_budget=5000, cache_every=2,
                  keyframe_every=4)


def decoded_images(rec) -> list[np.ndarray]:
    """The JPEG images of the recording, decoded to RGB."""
    return [cv2.cvtColor(cv2.imdecode(np.frombuffer(bytes(blob[0]), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for blob in rec.values(f"/{paths.IMAGE}", "EncodedImage:blob")]


def test_one_camera_per_posed_frame_on_the_frame_and_time_timelines(recorded, fern_windows):
    rec, _ = recorded
    posed = [int(f) for w in fern_windows for f in w.prediction.frame_indices[w.is_new]]
    assert rec.frames(f"/{paths.CAMERA}") == posed == list(range(10))
    assert rec.frames(f"/{paths.PINHOLE}") == posed
    times = [r["time"] for r in rec.rows[f"/{paths.CAMERA}"]]
    np.testing.assert_allclose(times, np.array(posed) / 10.0)


def test_camera_pose_and_intrinsics_match_the_window(recorded, fern_windows):
    rec, _ = recorded
    pred = fern_windows[1].prediction  # frame 5 is the first new view of window 1
    v = int(np.flatnonzero(pred.frame_indices == 5)[0])
    row = rec.rows[f"/{paths.CAMERA}"][5]
    np.testing.assert_allclose(row["Transform3D:translation"][0], pred.c2w[v, :3, 3], rtol=1e-6)
    R = np.array(row["Transform3D:mat3x3"][0]).reshape(3, 3, order="F")  # rerun stores column-major
    np.testing.assert_allclose(R, pred.c2w[v, :3, :3], atol=1e-6)
    pinhole = rec.rows[f"/{paths.PINHOLE}"][5]
    K = np.array(pinhole["Pinhole:image_from_camera"][0]).reshape(3, 3, order="F")
    np.testing.assert_allclose(K, pred.K[v], rtol=1e-6)
    assert pinhole["Pinhole:resolution"][0] == [504.0, 378.0]


def test_every_posed_frame_has_a_jpeg_image_of_the_model_size(recorded, fern_windows):
    rec, _ = recorded
    assert rec.frames(f"/{paths.IMAGE}") == list(range(10))
    assert rec.values(f"/{paths.IMAGE}", "EncodedImage:media_type") == [["image/jpeg"]] * 10
    images = decoded_images(rec)
    assert {im.shape for im in images} == {(378, 504, 3)}
    original = fern_windows[0].prediction.images[0]
    assert np.abs(images[0].astype(int) - original).mean() < 6  # quality 80


def test_keyframes_carry_decimated_depth_and_confidence_under_their_own_camera(recorded, fern_windows):
    rec, _ = recorded
    keyframes = [0, 4, 8]  # every 4th posed frame, from the first
    for entity in (paths.KEYFRAME, paths.KEYFRAME_PINHOLE, paths.DEPTH, paths.CONFIDENCE):
        assert rec.frames(f"/{entity}") == keyframes, entity
    # 504x378 with at most 128 px a side: every 4th pixel each way, 126x95, intrinsics scaled by 1/4.
    for entity, component in [(paths.DEPTH, "DepthImage:format"), (paths.CONFIDENCE, "Image:format")]:
        sizes = {(f[0]["width"], f[0]["height"]) for f in rec.values(f"/{entity}", component)}
        assert sizes == {(126, 95)}, entity
    pred = fern_windows[1].prediction  # frame 4 is in window 1 (views 3-7)
    v = int(np.flatnonzero(pred.frame_indices == 4)[0])
    pinhole = rec.rows[f"/{paths.KEYFRAME_PINHOLE}"][1]
    K = np.array(pinhole["Pinhole:image_from_camera"][0]).reshape(3, 3, order="F")
    np.testing.assert_allclose(K, np.diag([0.25, 0.25, 1.0]) @ pred.K[v], rtol=1e-6)
    assert pinhole["Pinhole:resolution"][0] == [126.0, 95.0]
    pose = rec.rows[f"/{paths.KEYFRAME}"][1]
    np.testing.assert_allclose(pose["Transform3D:translation"][0], pred.c2w[v, :3, 3], rtol=1e-6)
    depth = np.frombuffer(bytes(rec.values(f"/{paths.DEPTH}", "DepthImage:buffer")[1][0]), np.float16)
    expected = np.where(pred.depth_conf[v] > 0, pred.depth[v], 0)[::4, ::4]  # the invalid border is 0
    np.testing.assert_allclose(depth.reshape(95, 126), expected, rtol=1e-3)


def test_frame_point_maps_are_logged_at_keyframes_masked_by_confidence_and_within_budget(recorded):
    rec, _ = recorded
    assert rec.frames(f"/{paths.FRAME_POINTS}") == [0, 4, 8]
    counts = [len(p) for p in rec.values(f"/{paths.FRAME_POINTS}", "Points3D:positions")]
    # 504x378 px minus the invalid border, then the lowest 30 % by confidence: >> budget, so capped.
    assert counts == [5000] * 3


def test_gaussian_cache_is_drawn_every_few_windows_within_the_point_budget(recorded):
    rec, obs = recorded
    static = rec.rows[f"/{paths.STATIC_GAUSSIANS}"]
    # 3 snapshots, cache_every=2: the first and third are due (point_budget), and the newest is
    # drawn again on close (final_point_budget); a snapshot still pending when the next arrives is
    # superseded (counted as dropped).
    assert len(static) + obs.dropped.get("gaussians", 0) == 3
    assert len(static[-1]["Points3D:positions"]) == 2500
    assert {len(r["Points3D:positions"]) for r in static[:-1]} <= {2000}
    # Drawn 2 sigma wide, widened by sqrt(3000 / 2500) to cover the gaps of the sample.
    np.testing.assert_allclose(static[-1]["Points3D:radii"], 2 * 0.05 * np.sqrt(1.2), rtol=1e-5)
    assert static[-1]["frame"] == 9  # drawn at the newest frame when the stream closed
    # Dynamic Gaussians: one group per timestamp, on that frame, 50 each.
    dynamic = rec.rows[f"/{paths.DYNAMIC_GAUSSIANS}"]
    assert [r["frame"] for r in dynamic] == list(range(10))
    assert {len(r["Points3D:positions"]) for r in dynamic} == {50}


def test_stats_and_alignment_scale_are_plotted(recorded, fern_windows):
    rec, obs = recorded
    for entity in (paths.FPS, paths.CACHE_SIZE, paths.DROPPED_LIVE_FRAMES, paths.DROPPED_VIEWER_ITEMS):
        assert rec.values(f"/{entity}", "Scalars:scalars"), entity
    fps = [v[0] for v in rec.values(f"/{paths.FPS}", "Scalars:scalars")]
    # Stats superseded while pending are dropped; the newest always arrives.
    assert len(fps) + obs.dropped.get("stats", 0) == 3
    assert fps[-1] == 4.0 and set(fps) <= {2.0, 3.0, 4.0}
    scales = [v[0] for v in rec.values(f"/{paths.ALIGN_SCALE}", "Scalars:scalars")]
    np.testing.assert_allclose(scales, [w.sim3_scale for w in fern_windows], rtol=1e-6)
    # One scale per window, at the window's last view.
    assert rec.frames(f"/{paths.ALIGN_SCALE}") == [4, 7, 9]


def test_trajectory_grows_with_the_posed_frames(recorded, fern_windows):
    rec, _ = recorded
    strips = rec.values(f"/{paths.TRAJECTORY}", "LineStrips3D:strips")
    assert [len(s[0]) for s in strips] == [5, 8, 10]
    np.testing.assert_allclose(strips[-1][0][-1], fern_windows[-1].prediction.c2w[-1, :3, 3], rtol=1e-6)


def test_a_reattached_segment_joins_the_earlier_trajectory_in_its_world(tmp_path, fern_windows):
    # Window 1 is recorded in a lost segment whose world is fern's shifted by 5 along x; window 2
    # re-attaches it (the aligner already put window 2 back in world 0).
    shift = Sim3(1.0, np.eye(3), np.array([5.0, 0.0, 0.0]))
    first, lost, found = fern_windows
    p = lost.prediction
    lost = replace(lost, segment=1, prediction=replace(p, c2w=shift.apply_c2w(p.c2w)))
    found = replace(found, reattached=Reattachment(from_segment=1, to_segment=0, sim3=shift.inverse(),
                                                   inliers=50, keyframe_index=4, frame_index=8))
    rec, _ = record(tmp_path, [first, lost, found], queue_size=64)
    strips = rec.values(f"/{paths.TRAJECTORY}", "LineStrips3D:strips")
    assert [len(s) for s in strips] == [1, 2, 1]  # one path, two while lost, one again
    path = np.asarray(strips[-1][0])
    truth = np.concatenate([w.prediction.c2w[w.is_new, :3, 3] for w in fern_windows])
    np.testing.assert_allclose(path, truth, atol=1e-5)


def test_recording_declares_opencv_world_axes_and_saves_the_blueprint(recorded):
    rec, obs = recorded
    assert rec.static[f"/{paths.WORLD}"]["ViewCoordinates:xyz"]  # RDF
    assert len(rec.recordings) == 1 and rec.recordings[0].recording_id == obs.recording_id
    assert len(rec.blueprints) == 1


def test_raw_images_and_every_frame_a_keyframe_on_request(tmp_path, fern_windows):
    rec, _ = record(tmp_path, fern_windows[:1], jpeg_quality=None, log_depth=False, keyframe_every=1)
    images = rec.values(f"/{paths.IMAGE}", "Image:buffer")
    assert len(images) == 5
    np.testing.assert_array_equal(np.asarray(images[0], np.uint8).reshape(378, 504, 3),
                                  fern_windows[0].prediction.images[0])
    assert f"/{paths.DEPTH}" not in rec.entities()
    assert rec.frames(f"/{paths.FRAME_POINTS}") == list(range(5))


def test_the_default_recording_is_over_ten_times_smaller_than_logging_every_pixel(tmp_path, fern_windows):
    sizes = {}
    everything = dict(jpeg_quality=None, keyframe_every=1, depth_max_side=None, frame_point_budget=30_000)
    for name, config in [("defaults", {}), ("everything", everything)]:
        path = tmp_path / f"{name}.rrd"
        with RerunObserver(VizConfig(rrd_path=path, queue_size=64, **config)) as obs:
            for w in fern_windows:
                obs.on_window(w)
        assert obs.errors == [] and obs.dropped == {}
        sizes[name] = path.stat().st_size
    # 10 detailed 504x378 frames: a JPEG each (~65 kB), 2 keyframes of depth, confidence and points.
    assert sizes["defaults"] < 10 * 100_000, sizes
    assert sizes["everything"] > 10 * sizes["defaults"], sizes


@pytest.mark.parametrize("style, component", [("ellipsoids", "Ellipsoids3D:half_sizes"),
                                              ("splats", "GaussianSplats3D:scales")])
def test_gaussian_styles_log_sizes_and_orientations(tmp_path, fern_windows, style, component):
    snap = make_snapshot(fern_windows[:1], n_static=500)
    rec, _ = record(tmp_path, fern_windows[:1], [snap], gaussian_style=style, log_images=False,
                    log_depth=False)
    row = rec.rows[f"/{paths.STATIC_GAUSSIANS}"][0]
    np.testing.assert_allclose(row[component], np.full((500, 3), 0.05), rtol=1e-6)


def test_observer_without_viewer_or_file_logs_nothing_and_starts_no_thread(fern_windows):
    obs = RerunObserver(VizConfig())
    assert obs.session is None and obs.viewer_url is None
    obs.on_window(fern_windows[0])
    obs.on_stats(StreamStats())
    obs.close()
    assert obs.dropped == {}


def test_a_slow_viewer_never_blocks_the_stream_and_keeps_every_camera(tmp_path):
    # 18 windows of 6-8 new 504x378 frames pushed with no pause: far faster than they can be logged.
    base = make_windows(n_frames=20, window=8, overlap=2)
    windows = []
    for k in range(6):
        for w in base:
            pred = w.prediction
            shifted = replace(pred, frame_indices=pred.frame_indices + 20 * k,
                              timestamps=pred.timestamps + 2.0 * k)
            windows.append(replace(w, prediction=shifted, window_index=len(windows)))
    path = tmp_path / "flood.rrd"
    obs = RerunObserver(VizConfig(rrd_path=path, queue_size=2))
    calls = []
    for w in windows:
        start = time.perf_counter()
        obs.on_window(w)
        obs.on_stats(StreamStats(windows=w.window_index + 1))
        calls.append(time.perf_counter() - start)
    # Logging one window takes ~0.3 s; handing it over takes microseconds (plus GIL waits).
    assert np.median(calls) < 0.005 and max(calls) < 0.25
    obs.close()
    assert obs.dropped.get("window", 0) > 0
    rec = rrd(path)
    posed = [int(f) for w in windows for f in w.prediction.frame_indices[w.is_new]]
    assert rec.frames(f"/{paths.CAMERA}") == posed  # not one camera lost
    # Dropped windows lost their pixels only: their frames show a cleared image, not a stale one.
    images = [r for r in rec.rows[f"/{paths.IMAGE}"] if r.get("EncodedImage:blob")]
    cleared = [r for r in rec.rows[f"/{paths.IMAGE}"] if r.get("Clear:is_recursive") is not None]
    assert 0 < len(images) < len(posed)
    assert sorted(r["frame"] for r in images + cleared) == posed
    assert len(rec.frames(f"/{paths.ALIGN_SCALE}")) == len(windows)
