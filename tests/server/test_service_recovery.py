"""What SessionManager.recover does with sessions a crash left behind (real store, real runner)."""

import shutil

import pytest

from server.errors import ApiError
from server.jobs import LocalJobRunner
from server.models import SessionOptions
from server.service import SessionManager, check_pull_url
from server.settings import Settings
from stream4d.testdata import SHARED_DATA

VIDEO = str(SHARED_DATA / "videos/room.mp4")


def _manager(tmp_path, submitted):
    runner = LocalJobRunner(lambda job, stop: submitted.append(job), workers=1)
    return SessionManager(Settings(data_dir=tmp_path, max_attempts=2), runner=runner)


def _upload_session(m, state, attempts):
    rec, _ = m.create(SessionOptions(resolution=128))
    shutil.copy(VIDEO, m.session_dir(rec.id) / "upload.mp4")
    m.store.update(rec.id, kind="upload", state=state, source="upload.mp4", attempts=attempts)
    return rec.id


def test_interrupted_upload_job_is_resumed_with_a_note(tmp_path):
    submitted = []
    m = _manager(tmp_path, submitted)
    sid = _upload_session(m, "running", attempts=1)
    assert m.recover()["resumed"] == 1
    m.runner.results(sid, timeout=10)
    rec = m.get(sid)
    assert rec.state == "queued" and "attempt 1" in rec.notes[-1]
    assert submitted[0].source.endswith(f"{sid}/upload.mp4") and submitted[0].config["ingest"]["resize"] == 128
    m.runner.shutdown()


def test_queued_job_is_resubmitted_without_a_note(tmp_path):
    submitted = []
    m = _manager(tmp_path, submitted)
    sid = _upload_session(m, "queued", attempts=0)
    m.recover()
    m.runner.results(sid, timeout=10)
    assert [j.session_id for j in submitted] == [sid] and m.get(sid).notes == []
    m.runner.shutdown()


def test_job_interrupted_too_often_fails_with_the_reason(tmp_path):
    m = _manager(tmp_path, [])
    sid = _upload_session(m, "running", attempts=2)
    assert m.recover()["failed"] == 1
    rec = m.get(sid)
    assert rec.state == "failed" and "2 attempts" in rec.error and "partial outputs kept" in rec.error
    assert (m.session_dir(sid) / "upload.mp4").is_file()  # the video is never deleted by recovery
    m.runner.shutdown()


def test_interrupted_live_session_fails_with_the_reason(tmp_path):
    m = _manager(tmp_path, [])
    rec, _ = m.create(SessionOptions())
    m.store.update(rec.id, kind="live", state="running", source="websocket", attempts=1)
    m.recover()
    assert m.get(rec.id).state == "failed" and "live stream" in m.get(rec.id).error
    m.runner.shutdown()


def test_upload_whose_file_vanished_fails(tmp_path):
    m = _manager(tmp_path, [])
    sid = _upload_session(m, "queued", attempts=0)
    (m.session_dir(sid) / "upload.mp4").unlink()
    m.recover()
    assert m.get(sid).state == "failed" and "missing" in m.get(sid).error
    m.runner.shutdown()


def test_partial_uploads_and_orphan_dirs_are_cleaned(tmp_path):
    m = _manager(tmp_path, [])
    rec, _ = m.create(SessionOptions())
    m.part_path(rec.id).write_bytes(b"half an upload")
    orphan = m.settings.sessions_dir / ("ab" * 16)
    orphan.mkdir()
    (orphan / "upload.mp4").write_bytes(b"x")
    counts = m.recover()
    assert counts["orphans_removed"] == 1 and not orphan.exists()
    assert not m.part_path(rec.id).exists() and m.get(rec.id).state == "created"
    m.runner.shutdown()


def test_pull_urls_are_restricted_to_streams_and_devices():
    assert check_pull_url(" rtsp://cam.local:554/live ", True, allow_private=True) == "rtsp://cam.local:554/live"
    assert check_pull_url("camera:0", True) == "camera:0"
    for bad in ("file:///etc/passwd", "/dev/video0", "concat:a.mp4|b.mp4", "https:///x", "ftp://h/x"):
        with pytest.raises(ApiError) as err:
            check_pull_url(bad, True)
        assert err.value.status == 400, bad
    with pytest.raises(ApiError) as err:
        check_pull_url("camera:0", False)
    assert err.value.status == 403
