"""Video ingest through PyAV: real files, byte streams, VFR, rotation, broken inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _ingest_media import VIDEOS, textured_frame, write_video

from recon.ingest import IngestError, IngestOptions, open_source

REAL_VIDEOS = [("room.mp4", 8, (512, 384)), ("fern.mp4", 20, (1008, 756)), ("great_wall.mp4", 288, (640, 360))]


@pytest.mark.parametrize("name,count,size", REAL_VIDEOS)
def test_real_video_yields_every_frame_at_its_size_with_increasing_timestamps(name, count, size):
    with open_source(VIDEOS / name) as src:
        assert src.info.kind == "video"
        assert src.info.frame_count == count
        assert src.info.size == size
        frames = list(src)
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    assert [f.source for f in frames] == [f"{name}#{i}" for i in range(count)]
    assert all(f.size == size and f.input_size == size for f in frames)
    assert all(f.image.dtype == np.uint8 and f.image.flags.c_contiguous for f in frames)
    t = np.array([f.timestamp for f in frames])
    assert t[0] == 0.0 and np.all(np.diff(t) > 0)
    assert src.stats.decoded == src.stats.yielded == count


def test_great_wall_timestamps_follow_its_24_fps():
    with open_source(VIDEOS / "great_wall.mp4", IngestOptions(max_frames=48)) as src:
        t = np.array([f.timestamp for f in src])
    assert src.info.fps == pytest.approx(24.0)
    np.testing.assert_allclose(np.diff(t), 1 / 24, atol=1e-6)


def test_stride_keeps_every_nth_frame_and_renumbers_index():
    with open_source(VIDEOS / "great_wall.mp4", IngestOptions(stride=5, max_frames=10)) as src:
        frames = list(src)
    assert [f.source for f in frames] == [f"great_wall.mp4#{i}" for i in range(0, 50, 5)]
    assert [f.index for f in frames] == list(range(10))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(0, 50, 5) / 24, atol=1e-6)
    assert src.stats.skipped_stride == 36 and src.stats.decoded == 46


def test_target_fps_subsamples_by_timestamp():
    with open_source(VIDEOS / "great_wall.mp4", IngestOptions(target_fps=6)) as src:
        frames = list(src)
    t = np.array([f.timestamp for f in frames])
    assert len(frames) == 72  # 12 s at 6 fps
    np.testing.assert_allclose(np.diff(t), 1 / 6, atol=1e-6)
    assert src.stats.skipped_stride == 288 - 72


def test_max_frames_stops_decoding_early():
    with open_source(VIDEOS / "great_wall.mp4", IngestOptions(max_frames=5)) as src:
        frames = list(src)
    assert len(frames) == 5
    assert src.stats.decoded == 5


def test_vggt_resize_of_video_frames_keeps_input_size_and_pixel_map():
    with open_source(VIDEOS / "room.mp4", IngestOptions(resize="vggt", max_frames=2)) as src:
        frame = next(iter(src))
    assert frame.size == (518, 392)  # 384 * 518 / 512 = 388.5 -> 28 patches of 14
    assert frame.input_size == (512, 384)
    np.testing.assert_allclose(frame.pixel_map[:2, :2], np.diag([518 / 512, 392 / 384]))


def test_file_sources_can_be_read_again_from_the_start():
    src = open_source(VIDEOS / "room.mp4")
    first = [f.source for f in src]
    second = [f.source for f in src]
    src.close()
    assert first == second and len(first) == 8
    assert src.stats.yielded == 8  # stats are per pass


def test_byte_stream_and_file_object_decode_like_the_file(tmp_path):
    data = (VIDEOS / "room.mp4").read_bytes()
    with open_source(data) as src:
        from_bytes = list(src)
    with open(VIDEOS / "room.mp4", "rb") as fh, open_source(fh) as src:
        from_file = list(src)
        assert src.info.name == "room.mp4"
    assert len(from_bytes) == len(from_file) == 8
    assert from_bytes[3].source == "stream#3"
    np.testing.assert_array_equal(from_bytes[5].image, from_file[5].image)


def test_byte_stream_is_single_pass():
    src = open_source(io.BytesIO((VIDEOS / "room.mp4").read_bytes()))
    assert len(list(src)) == 8
    with pytest.raises(IngestError) as err:
        iter(src)
    assert err.value.reason == "consumed"


def test_variable_frame_rate_video_gives_true_timestamps(tmp_path):
    pts_ms = [0, 40, 80, 200, 210, 500, 1000, 1033]
    path = write_video(tmp_path / "vfr.mp4", [textured_frame(i) for i in range(8)], pts_ms=pts_ms)
    with open_source(path) as src:
        t = [f.timestamp for f in src]
    np.testing.assert_allclose(t, np.array(pts_ms) / 1000, atol=1e-6)


def test_vfr_video_target_fps_uses_real_time(tmp_path):
    pts_ms = [0, 40, 80, 200, 210, 500, 1000, 1033]
    path = write_video(tmp_path / "vfr.mkv", [textured_frame(i) for i in range(8)], pts_ms=pts_ms)
    with open_source(path, IngestOptions(target_fps=5)) as src:  # 200 ms slots
        kept = [f.timestamp for f in src]
    np.testing.assert_allclose(kept, [0.0, 0.2, 0.5, 1.0], atol=1e-6)


@pytest.mark.parametrize("degrees,corner", [(90, "bottom_left"), (-90, "top_right"), (180, "bottom_right")])
def test_rotation_metadata_turns_the_image_like_a_player(tmp_path, degrees, corner):
    image = np.full((64, 96, 3), 40, np.uint8)
    image[:16, :16] = 255  # a white block in the top-left corner of the coded image
    path = write_video(tmp_path / f"rot{degrees}.mp4", [image] * 2, rotation=degrees)
    with open_source(path) as src:
        frame = next(iter(src))
        expect_size = (64, 96) if degrees % 180 else (96, 64)
        assert src.info.size == expect_size
    assert frame.size == expect_size and frame.input_size == expect_size
    ys, xs = np.nonzero(frame.image.mean(axis=2) > 150)
    W, H = frame.size
    where = {"bottom_left": (ys.mean() > H / 2, xs.mean() < W / 2),
             "top_right": (ys.mean() < H / 2, xs.mean() > W / 2),
             "bottom_right": (ys.mean() > H / 2, xs.mean() > W / 2)}[corner]
    assert all(where)


def test_truncated_video_yields_decodable_frames_then_raises(tmp_path):
    data = (VIDEOS / "great_wall.mp4").read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    got = []
    with open_source(cut) as src:
        with pytest.raises(IngestError) as err:
            for frame in src:
                got.append(frame.source)
    assert 50 < len(got) < 288
    assert got == [f"half.mp4#{i}" for i in range(len(got))]
    assert err.value.reason == "corrupt"
    assert f"after {len(got)} " in str(err.value) and "half.mp4" in str(err.value)
    assert src.stats.errors and src.stats.yielded == len(got)


def test_stream_cut_at_a_packet_boundary_is_reported_as_truncated(tmp_path):
    data = (VIDEOS / "great_wall.mp4").read_bytes()
    with open_source(data[:300_000], name="cut") as src:
        with pytest.raises(IngestError) as err:
            for _ in src:
                pass
    assert err.value.reason == "corrupt"
    assert "of 288 frames" in str(err.value)
    assert 0 < src.stats.yielded < 288


def test_text_file_named_mp4_is_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a shopping list, not a video\n" * 20)
    with pytest.raises(IngestError) as err:
        open_source(fake)
    assert err.value.reason == "not_video" and "notes.mp4" in str(err.value)


def test_empty_file_and_empty_bytes_are_rejected(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(IngestError) as err:
        open_source(empty)
    assert err.value.reason == "empty_file" and "empty.mp4" in str(err.value)
    with pytest.raises(IngestError) as err:
        open_source(b"")
    assert err.value.reason == "empty_file"


def test_missing_file_is_reported_by_name(tmp_path):
    with pytest.raises(IngestError) as err:
        open_source(tmp_path / "nope.mp4")
    assert err.value.reason == "missing" and "nope.mp4" in str(err.value)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(IngestError) as err:
        open_source(path)
    assert err.value.reason == "not_video" and "no video stream" in str(err.value)


def test_truncated_mkv_without_frame_count_is_caught_by_its_duration(tmp_path):
    whole = write_video(tmp_path / "long.mkv", [textured_frame(i, 160, 128) for i in range(40)], fps=10)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with open_source(whole) as src:
        assert src.info.frame_count is None  # Matroska does not store it
        assert sum(1 for _ in src) == 40
    with open_source(cut) as src:
        with pytest.raises(IngestError) as err:
            for _ in src:
                pass
    assert err.value.reason == "corrupt" and "4.000 s video" in str(err.value)
    assert 0 < src.stats.yielded < 40


def test_ingest_error_survives_pickling_for_worker_processes(tmp_path):
    import pickle

    with pytest.raises(IngestError) as err:
        open_source(tmp_path / "gone.mkv")
    copy = pickle.loads(pickle.dumps(err.value))
    assert (copy.reason, copy.input, str(copy)) == ("missing", err.value.input, str(err.value))


def test_a_stream_with_frames_above_max_pixels_is_refused_before_decoding():
    with pytest.raises(IngestError, match="limit is 1000"):
        list(open_source(VIDEOS / "room.mp4", IngestOptions(max_pixels=1000)))
