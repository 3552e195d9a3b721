"""Live sources: PushSource, the drop-oldest buffer, cameras and network streams."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
import weakref

import numpy as np
import pytest
from _ingest_media import VIDEOS, textured_frame

from recon.ingest import CameraSource, IngestError, IngestOptions, PushSource, open_source


def test_push_drops_the_oldest_frames_when_full():
    push = PushSource(name="live", capacity=10)
    for i in range(100):
        push.push(textured_frame(i % 5, 32, 24), timestamp=5.0 + i / 30)
    push.close()
    frames = list(push)
    assert push.stats.dropped == 90
    assert [f.source for f in frames] == [f"live#{i}" for i in range(90, 100)]
    assert [f.index for f in frames] == list(range(10))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(90, 100) / 30)  # relative to first push


def test_dropped_frames_are_freed_at_once():
    push = PushSource(name="live", capacity=4)
    alive = []
    for i in range(12):
        image = textured_frame(i % 5, 32, 24)
        alive.append(weakref.ref(image))
        push.push(image, timestamp=i / 30)
        del image
    # The 8 oldest were dropped: nothing holds their pixels (no cycle waiting for the GC either).
    assert [ref() is None for ref in alive] == [True] * 8 + [False] * 4
    push.close()
    assert len(list(push)) == 4


def test_fast_producer_never_blocks_and_every_frame_is_yielded_or_counted_dropped():
    push = PushSource(name="cam", capacity=8)
    image = textured_frame(3, 64, 48)
    total = 400
    got = []
    taken_when_producer_done = []

    def produce():
        for i in range(total):
            push.push(image, timestamp=i / 100)
        taken_when_producer_done.append(len(got))
        push.close()

    producer = threading.Thread(target=produce)
    producer.start()
    for frame in push:
        got.append(int(frame.source.split("#")[1]))
        time.sleep(0.002)  # a consumer much slower than the producer
    producer.join()
    # A blocking queue would have made the producer wait for ~total - capacity frames.
    assert taken_when_producer_done[0] < total // 4
    assert push.stats.dropped > 0
    assert len(got) + push.stats.dropped == total
    assert got == sorted(got) and got[-1] == total - 1  # in order, and the newest frame survives


def test_push_after_close_and_bad_images_raise():
    push = PushSource()
    with pytest.raises(IngestError) as err:
        push.push(np.zeros((10, 10, 3), np.float32))
    assert err.value.reason == "bad_image"
    with pytest.raises(IngestError):
        push.push(np.zeros((10, 10, 4), np.uint8))
    push.push(np.zeros((10, 12), np.uint8))  # grey is accepted and becomes RGB
    push.close()
    with pytest.raises(IngestError) as err:
        push.push(np.zeros((10, 12, 3), np.uint8))
    assert err.value.reason == "closed"
    (frame,) = list(push)
    assert frame.image.shape == (10, 12, 3)


def test_push_source_applies_resize_and_keyframes():
    push = PushSource(capacity=16, options=IngestOptions(resize="vggt", keyframes=True))
    for image in [textured_frame(1, 160, 120)] * 3 + [textured_frame(2, 160, 120)]:
        push.push(image)
    push.close()
    frames = list(push)
    assert [f.source for f in frames] == ["live#0", "live#3"]
    assert frames[0].size == (518, 392) and frames[0].input_size == (160, 120)
    assert push.stats.skipped_keyframe == 2


def test_push_iteration_raises_when_the_producer_goes_silent():
    push = PushSource(idle_timeout=0.2)
    push.push(textured_frame(0, 16, 16))
    it = iter(push)
    next(it)
    start = time.monotonic()
    with pytest.raises(IngestError) as err:
        next(it)
    assert err.value.reason == "stalled" and time.monotonic() - start < 2


@pytest.mark.parametrize("spec", ["camera:57", 57, "rtsp://127.0.0.1:1/"])
def test_unreachable_camera_fails_fast_with_ingest_error(spec):
    start = time.monotonic()
    with pytest.raises(IngestError) as err:
        open_source(spec, IngestOptions(timeout=2.0))
    assert err.value.reason == "unreachable"
    assert str(spec) in str(err.value)
    assert time.monotonic() - start < 4.0


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung camera)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.parametrize("url", ["rtsp://127.0.0.1:{port}/cam", "http://127.0.0.1:{port}/mjpeg",
                                 "http://127.0.0.1:{port}/clip.mp4"])
def test_stream_that_never_answers_times_out_within_the_bound(silent_server, url):
    start = time.monotonic()
    with pytest.raises(IngestError) as err:
        open_source(url.format(port=silent_server), IngestOptions(timeout=1.0))
    assert err.value.reason == "unreachable"
    assert time.monotonic() - start < 2.5


def test_url_credentials_stay_out_of_names_and_errors():
    with pytest.raises(IngestError) as err:
        open_source("rtsp://admin:hunter2@127.0.0.1:1/stream", IngestOptions(timeout=2.0))
    assert "hunter2" not in str(err.value) and "127.0.0.1:1/stream" in str(err.value)


@pytest.fixture
def http_videos():
    """A local HTTP server for ../shared/data/videos (no outside network needed)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(VIDEOS))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_network_stream_is_read_in_the_background_and_drops_oldest(http_videos):
    # The reader thread keeps reading while nobody consumes: it must drop, not queue.
    src = CameraSource(f"{http_videos}/great_wall.mp4", IngestOptions(live_capacity=4, timeout=5.0))
    with src:
        assert src.info.kind == "camera" and src.info.size == (640, 360)
        deadline = time.monotonic() + 60
        while src.stats.dropped < 284 and time.monotonic() < deadline:
            time.sleep(0.05)
        frames = list(src)
    assert src.stats.dropped == 284
    assert [f.source for f in frames] == [f"{http_videos}/great_wall.mp4#{n}" for n in range(284, 288)]
    assert all(f.image.shape == (360, 640, 3) for f in frames)
    assert np.all(np.diff([f.timestamp for f in frames]) >= 0)
    assert src.stats.errors and "stream ended after 288 frames" in src.stats.errors[0]


def test_camera_source_stops_its_reader_when_closed_early(http_videos):
    src = CameraSource(f"{http_videos}/great_wall.mp4", IngestOptions(live_capacity=4, max_frames=3))
    with src:
        frames = list(src)
    assert len(frames) == 3
    src._reader.join(timeout=5)
    assert not src._reader.is_alive()
    # Same pixels, in RGB order, as decoding the file itself.
    numbers = [int(f.source.rsplit("#", 1)[1]) for f in frames]
    with open_source(VIDEOS / "great_wall.mp4", IngestOptions(max_frames=max(numbers) + 1)) as video:
        reference = {f.index: f.image.astype(np.int16) for f in video}
    for n, frame in zip(numbers, frames):
        diff = np.abs(frame.image.astype(np.int16) - reference[n]).mean()
        swapped = np.abs(frame.image[..., ::-1].astype(np.int16) - reference[n]).mean()
        assert diff < 2.0 and swapped > diff + 2.0


def test_http_video_file_url_is_decoded_like_a_file(http_videos):
    # great_wall.mp4 has its index first: the stdlib server does not serve byte ranges.
    with open_source(f"{http_videos}/great_wall.mp4", IngestOptions(max_frames=30)) as src:
        assert src.info.kind == "video" and src.info.name == "great_wall.mp4"
        assert src.info.frame_count == 288
        frames = list(src)
    assert len(frames) == 30 and frames[29].source == "great_wall.mp4#29"
    np.testing.assert_allclose(frames[29].timestamp, 29 / 24, atol=1e-6)
