"""A live push stream through the pipeline: every frame is tracked as it arrives against the newest
aligned window, and its pose reaches the observers before the window around it is aligned."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from recon.ingest.options import IngestOptions
from recon.ingest.push import PushSource
from stream4d.contracts import StreamObserver
from stream4d.pipeline import ReconstructConfig, reconstruct
from stream4d.synthetic import intrinsics_for, make_scene, make_trajectory, render_sequence

W, H = 192, 144
FPS = 30.0


@pytest.fixture(scope="module")
def walk():
    """10 s of a sideways walk at 30 fps, 2 cm a frame."""
    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 300, seed=0, scene=scene, step=0.02)
    return [v.rgb for v in render_sequence(scene, c2w, intrinsics_for(W, H), W, H, fps=FPS)]


class Events(StreamObserver):
    """What the observers saw, in order, with the time: live poses, final poses, aligned windows."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.first_window = threading.Event()

    def on_window(self, window) -> None:
        self.log.append(("window", time.monotonic(), [int(i) for i in window.prediction.frame_indices]))
        self.first_window.set()

    def on_pose(self, pose) -> None:
        self.log.append(("pose", time.monotonic(), pose.index, pose.final, pose.kind))


def push_in_real_time(frames, events: Events, out, wait_for_a_map_at: int | None = None, **settings):
    """Push ``frames`` at 30 fps into a live run (windows of 5 sharing 2; ``settings``: more config
    overrides) and return its summary; from frame ``wait_for_a_map_at`` on, a slow machine waits for
    the first map so that some frames meet one."""
    src = PushSource("live", capacity=64, options=IngestOptions(resize=None))

    def push():
        t0 = time.monotonic()
        try:
            for i, image in enumerate(frames):
                if i == wait_for_a_map_at and not events.first_window.is_set():
                    events.first_window.wait(120)
                    t0 = time.monotonic() - i / FPS
                time.sleep(max(0.0, t0 + i / FPS - time.monotonic()))
                src.push(image, i / FPS)
        finally:
            src.close()

    pusher = threading.Thread(target=push)
    pusher.start()
    config = ReconstructConfig().override({"gaussians": False, "rrd": False, "align.window": 5,
                                           "align.overlap": 2, "ingest.resize": None, **settings})
    summary = reconstruct(src, out, config, observers=[events], progress=False)
    pusher.join()
    return summary


def test_pushed_frames_are_posed_live_before_their_window_and_latency_is_recorded(walk, tmp_path):
    events = Events()
    summary = push_in_real_time(walk, events, tmp_path / "out", wait_for_a_map_at=len(walk) - 60)
    s = summary.stats
    assert s.frames_received + s.frames_dropped == len(walk) and s.frames_posed == s.frames_received

    live = {e[2]: i for i, e in enumerate(events.log) if e[0] == "pose" and not e[3]}
    final = {e[2]: i for i, e in enumerate(events.log) if e[0] == "pose" and e[3]}
    assert live and all(events.log[i][4] == "tracked" for i in live.values())
    # From the first live pose on (a map exists), frames are posed as they arrive ...
    later = range(min(live), len(walk))
    assert len(live) >= 0.8 * (len(later) - s.frames_dropped), (len(live), min(live), s)
    # ... before the window around them is aligned: their live pose precedes the pose their window gives
    # them (frames between keyframes) and the window holding them (keyframes).
    windows = [(i, e[2]) for i, e in enumerate(events.log) if e[0] == "window"]
    for frame, at in live.items():
        assert final.get(frame, len(events.log)) > at, frame
        assert all(i > at for i, frames in windows if frame in frames), frame
    assert len(set(final) & set(live)) >= 0.5 * len(live)

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["live_tracking"] is True
    assert run["model_process"] == {"restarts": 0}  # the window model ran in a process of its own
    latency = run["latency_s"]
    assert latency["frames"] == s.frames_posed and 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert latency["live"]["frames"] == s.frames_posed_live == len(live) and latency["live"]["p95"] > 0
    assert 0 < run["stats"]["latency_p50_s"] <= run["stats"]["latency_p95_s"]


def test_a_video_file_is_not_tracked_live_but_its_latency_is_recorded(walk, tmp_path):
    from stream4d.synthetic import write_sequence

    scene = make_scene("room", seed=0)
    c2w = make_trajectory("sideways", 40, seed=0, scene=scene, step=0.02)
    write_sequence(tmp_path / "clip", render_sequence(scene, c2w, intrinsics_for(W, H), W, H, fps=FPS),
                   video="clip.mp4", fps=FPS)
    config = ReconstructConfig().override({"gaussians": False, "rrd": False, "align.window": 5,
                                           "align.overlap": 2, "ingest.resize": None})
    summary = reconstruct(tmp_path / "clip" / "clip.mp4", tmp_path / "out", config, progress=False)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["live_tracking"] is False and summary.stats.frames_posed_live == 0 and run["model_process"] is None
    assert run["latency_s"]["frames"] == 40 and run["latency_s"]["p50"] > 0 and run["latency_s"]["live"]["frames"] == 0


class Poses(Events):
    """Events, with every pose's c2w kept: (index, final) -> c2w."""

    def __init__(self) -> None:
        super().__init__()
        self.c2w: dict[tuple[int, bool], object] = {}
        self.window_c2w: dict[int, object] = {}

    def on_window(self, window) -> None:
        for k in np.nonzero(window.is_new)[0]:
            self.window_c2w[int(window.prediction.frame_indices[k])] = window.prediction.c2w[k]
        super().on_window(window)

    def on_pose(self, pose) -> None:
        self.c2w[(pose.index, pose.final)] = pose.c2w
        super().on_pose(pose)


def test_a_two_view_bootstrap_poses_frames_before_the_first_window(walk, tmp_path):
    """From the stream's first frames, before any window: a two-view map, the frames held since its
    reference posed at once, the next ones tracked on it; provisional poses that never reach
    trajectory.json (the handover to the first window's map: tests/recon/test_live_bootstrap.py)."""
    frames = walk[:90]
    events = Poses()
    summary = push_in_real_time(frames, events, tmp_path / "out")
    s = summary.stats
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    boot = run["live_bootstrap"]
    assert boot["maps"] == 1 and boot["frames_posed_at_init"] > 1 and boot["lost"] == 0, boot

    first_window = next(i for i, e in enumerate(events.log) if e[0] == "window")
    before = {e[2] for e in events.log[:first_window] if e[0] == "pose" and not e[3]}
    # The reference (the stream's first frame) and most frames before the first window are posed live.
    arrived_before = max(before) + 1
    assert 0 in before and len(before) >= 0.8 * arrived_before and arrived_before > 30, (len(before), arrived_before)

    latency = run["latency_s"]
    assert latency["bootstrap"]["frames"] >= len(before) and latency["bootstrap"]["p50"] > 0
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"] and latency["live"]["p95"] > 0
    assert latency["frames"] == s.frames_posed == s.frames_received

    # trajectory.json holds the windows' poses only: each frame's is its final pose, not a provisional one.
    from stream4d.outputs import read_trajectory

    written = {p.index: p for p in read_trajectory(tmp_path / "out")}
    assert len(written) == s.frames_posed
    provisional, apart = 0, 0
    for i, p in written.items():
        final = events.c2w.get((i, True), events.window_c2w.get(i))
        assert final is not None and np.allclose(p.c2w, final, atol=1e-6), i
        if (i, False) in events.c2w and i in before and i > 0:  # both worlds have the first camera at the origin
            provisional += 1
            apart += not np.allclose(p.c2w, events.c2w[(i, False)], atol=1e-3)
    # The provisional world is not the written one (a frame a few mm from the first camera may be
    # within 1e-3 of its final pose in both).
    assert provisional > 10 and apart >= 0.8 * provisional, (apart, provisional)


def test_a_keyframer_behind_the_stream_lets_frames_pass_unjudged_and_every_frame_is_still_posed(walk, tmp_path):
    """The keyframer on its own thread behind tracking (``live.keyframe_queue``); with
    ``live.keyframer_lag_s`` 0 it is always behind and judges every third frame: the others are held
    between keyframes, posed live and then by their window like any frame."""
    frames = walk[:120]
    events = Events()
    summary = push_in_real_time(frames, events, tmp_path / "out", **{"live.keyframer_lag_s": 0.0})
    s = summary.stats
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    judged = s.frames_received - run["keyframes"]["unjudged"]
    assert abs(judged - s.frames_received / 3) <= 1, (judged, s.frames_received)  # the first one and every third
    assert s.frames_received + s.frames_dropped == len(frames) and s.frames_posed == s.frames_received
    assert s.frames_keyframes >= 4 and s.frames_posed_live > 0.5 * s.frames_received
    assert run["latency_s"]["frames"] == s.frames_posed
