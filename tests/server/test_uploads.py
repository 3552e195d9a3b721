import asyncio

import pytest

from server.uploads import (
    UploadError,
    check_content_type,
    check_filename,
    commit,
    probe_video,
    stored_name,
    stream_to_disk,
)
from stream4d.testdata import SHARED_DATA

VIDEOS = str(SHARED_DATA / "videos")


def _chunks(data: bytes, size: int = 1000):
    async def gen():
        for i in range(0, len(data), size):
            yield data[i:i + size]
    return gen()


def test_probe_reads_real_video_properties():
    probe = probe_video(f"{VIDEOS}/great_wall.mp4")
    assert (probe.codec, probe.width, probe.height, probe.frames, probe.declared_frames) == ("h264", 640, 360, 288, 288)
    assert probe.fps == pytest.approx(24.0)
    assert stored_name(probe) == "upload.mp4"


def test_probe_refuses_a_truncated_video(tmp_path):
    data = open(f"{VIDEOS}/great_wall.mp4", "rb").read()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) // 2])  # header intact, half the frames gone
    with pytest.raises(UploadError) as err:
        probe_video(tmp_path / "t.mp4")
    assert err.value.status == 422 and err.value.code == "truncated_video"


def test_probe_refuses_a_video_cut_before_its_index(tmp_path):
    data = open(f"{VIDEOS}/room.mp4", "rb").read()  # moov atom at the end
    (tmp_path / "t.mp4").write_bytes(data[:-2000])
    with pytest.raises(UploadError) as err:
        probe_video(tmp_path / "t.mp4")
    assert err.value.status == 422


def test_probe_refuses_text_with_a_video_extension(tmp_path):
    (tmp_path / "fake.mp4").write_text("this is not a video\n" * 200)
    with pytest.raises(UploadError) as err:
        probe_video(tmp_path / "fake.mp4")
    assert err.value.code == "not_a_video"


def test_stream_to_disk_writes_every_chunk(tmp_path):
    data = open(f"{VIDEOS}/room.mp4", "rb").read()
    n = asyncio.run(stream_to_disk(_chunks(data), tmp_path / "u.part", max_bytes=10**6))
    assert n == len(data) and (tmp_path / "u.part").read_bytes() == data


def test_stream_to_disk_stops_at_the_limit_and_removes_the_partial_file(tmp_path):
    with pytest.raises(UploadError) as err:
        asyncio.run(stream_to_disk(_chunks(b"x" * 5000), tmp_path / "u.part", max_bytes=4096))
    assert err.value.status == 413
    assert not (tmp_path / "u.part").exists()


def test_stream_to_disk_refuses_an_empty_body(tmp_path):
    with pytest.raises(UploadError) as err:
        asyncio.run(stream_to_disk(_chunks(b""), tmp_path / "u.part", max_bytes=4096))
    assert err.value.code == "empty_body"
    assert not (tmp_path / "u.part").exists()


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.mp4", "..", "c:\\x.mp4", "a\x00.mp4", "x/../y.mp4"])
def test_filenames_with_path_components_are_refused(name):
    with pytest.raises(UploadError) as err:
        check_filename(name)
    assert err.value.code == "bad_filename"


def test_plain_filenames_are_kept():
    assert check_filename("my video..final.mp4") == "my video..final.mp4"
    assert check_filename(None) is None


@pytest.mark.parametrize("ctype", ["video/mp4", "video/webm; codecs=vp9", "application/octet-stream"])
def test_video_content_types_are_accepted(ctype):
    check_content_type(ctype)


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/json", "multipart/form-data; boundary=x"])
def test_other_content_types_are_refused(ctype):
    with pytest.raises(UploadError) as err:
        check_content_type(ctype)
    assert err.value.status == 415


def test_commit_renames_into_place(tmp_path):
    (tmp_path / "upload.part").write_bytes(b"abc")
    commit(tmp_path / "upload.part", tmp_path / "upload.mp4")
    assert (tmp_path / "upload.mp4").read_bytes() == b"abc" and not (tmp_path / "upload.part").exists()
