"""Each bad input gets a clear 4xx JSON error and leaves other sessions untouched."""

import json

import numpy as np
import pytest
import websockets.sync.client as ws_client
from conftest import VIDEOS, Sess, assert_error
from websockets.exceptions import InvalidStatus


@pytest.fixture(scope="module")
def bystander(server):
    """A session that must never notice the abuse of the others."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        s = Sess(c, {"resolution": 128})
        snapshot = {k: v for k, v in s.status().items() if k != "updated_at"}
    return server, s.id, s.token, snapshot


@pytest.fixture(autouse=True)
def _bystander_untouched(bystander, client):
    yield
    _, sid, token, before = bystander
    after = client.get(f"/sessions/{sid}", headers={"Authorization": f"Bearer {token}"}).json()
    assert {k: v for k, v in after.items() if k != "updated_at"} == before


def _no_upload_left(server, s: Sess):
    files = sorted(p.name for p in (server.data_dir / "sessions" / s.id).iterdir())
    assert files == [], files
    assert s.status()["state"] == "created"


def test_empty_body_is_refused(client, server):
    s = Sess(client)
    r = client.post(f"/sessions/{s.id}/upload", content=b"", headers={**s.headers, "Content-Type": "video/mp4"})
    assert_error(r, 400, "empty_body")
    _no_upload_left(server, s)


def test_truncated_video_is_refused(client, server):
    s = Sess(client)
    data = (VIDEOS / "great_wall.mp4").read_bytes()
    r = client.post(f"/sessions/{s.id}/upload", content=data[: len(data) // 2],
                    headers={**s.headers, "Content-Type": "video/mp4"})
    err = assert_error(r, 422, "truncated_video")
    assert "288" in err["message"]
    _no_upload_left(server, s)


def test_corrupt_video_is_refused(client, server):
    s = Sess(client)
    data = bytearray((VIDEOS / "great_wall.mp4").read_bytes())
    data[6000:] = np.random.default_rng(0).integers(0, 256, len(data) - 6000, dtype=np.uint8).tobytes()
    r = client.post(f"/sessions/{s.id}/upload", content=bytes(data), headers={**s.headers, "Content-Type": "video/mp4"})
    assert_error(r, 422, "corrupt_video")
    _no_upload_left(server, s)


def test_non_video_with_a_video_extension_is_refused(client, server):
    s = Sess(client)
    r = client.post(f"/sessions/{s.id}/upload", params={"filename": "holiday.mp4"},
                    content=b"just some text, honestly\n" * 100, headers={**s.headers, "Content-Type": "video/mp4"})
    assert_error(r, 422, "not_a_video")
    _no_upload_left(server, s)


def test_oversized_upload_is_refused(client, server):
    s = Sess(client)  # the test server's limit is 2 MB; fern.mp4 is 3.1 MB
    assert_error(s.upload(VIDEOS / "fern.mp4"), 413, "upload_too_large")
    _no_upload_left(server, s)


def test_oversized_chunked_upload_is_cut_off_while_streaming(client, server):
    s = Sess(client)
    data = (VIDEOS / "fern.mp4").read_bytes()

    def chunks():  # no Content-Length: the limit is enforced on the bytes as they arrive
        for i in range(0, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]

    r = client.post(f"/sessions/{s.id}/upload", content=chunks(), headers={**s.headers, "Content-Type": "video/mp4"})
    assert_error(r, 413, "upload_too_large")
    _no_upload_left(server, s)


def test_wrong_content_type_is_refused(client, server):
    s = Sess(client)
    r = client.post(f"/sessions/{s.id}/upload", content=(VIDEOS / "room.mp4").read_bytes(),
                    headers={**s.headers, "Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")
    r = client.post(f"/sessions/{s.id}/upload", files={"file": ("room.mp4", b"abc", "video/mp4")}, headers=s.headers)
    assert_error(r, 415, "unsupported_media_type")
    _no_upload_left(server, s)


def test_unknown_session_is_not_found(client):
    s = Sess(client)
    unknown = "0" * 32
    assert_error(client.get(f"/sessions/{unknown}", headers=s.headers), 404, "session_not_found")
    r = client.post(f"/sessions/{unknown}/upload", content=b"x", headers={**s.headers, "Content-Type": "video/mp4"})
    assert_error(r, 404, "session_not_found")
    assert_error(client.get("/sessions/not-a-session-id", headers=s.headers), 422)


def test_deleted_session_is_not_found(client):
    s = Sess(client)
    assert client.delete(f"/sessions/{s.id}", headers=s.headers).status_code == 204
    assert_error(client.get(f"/sessions/{s.id}", headers=s.headers), 404, "session_not_found")
    assert_error(s.upload(VIDEOS / "room.mp4"), 404, "session_not_found")
    assert_error(client.delete(f"/sessions/{s.id}", headers=s.headers), 404)


def test_wrong_token_is_forbidden(client, server):
    s, other = Sess(client), Sess(client)
    assert_error(s.client.post(f"/sessions/{s.id}/upload", content=(VIDEOS / "room.mp4").read_bytes(),
                               headers={**other.headers, "Content-Type": "video/mp4"}), 403, "wrong_token")
    tampered = s.token[:-1] + ("A" if s.token[-1] != "A" else "B")  # one character off, never the same token
    assert_error(client.get(f"/sessions/{s.id}", headers={"Authorization": "Bearer " + tampered}), 403)
    _no_upload_left(server, s)


def test_filename_with_path_components_is_refused(client, server):
    s = Sess(client)
    for name in ("../../etc/passwd", "dir/room.mp4", "..\\room.mp4"):
        r = client.post(f"/sessions/{s.id}/upload", params={"filename": name},
                        content=(VIDEOS / "room.mp4").read_bytes(), headers={**s.headers, "Content-Type": "video/mp4"})
        assert_error(r, 400, "bad_filename")
    _no_upload_left(server, s)


def test_malformed_websocket_messages_get_errors_and_the_stream_goes_on(client, server):
    s = Sess(client)
    url = server.url.replace("http", "ws") + f"/sessions/{s.id}/live"
    with ws_client.connect(url, additional_headers=s.headers) as ws:
        ws.send("hello")
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and err["code"] == "bad_message"
        ws.send(b"\x00\x01")
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and err["code"] == "bad_frame" and err["seq"] == 0
        ws.send(b"\x00" * 8 + b"GIF89a....")
        assert json.loads(ws.recv(timeout=30))["code"] == "bad_image"
        ws.send(json.dumps({"type": "end"}))
        closed = json.loads(ws.recv(timeout=30))
        assert closed["type"] == "closed" and closed["invalid"] == 3 and closed["accepted"] == 0
    status = s.wait(timeout=120)
    assert status["live"]["invalid"] == 3


def test_websocket_without_a_valid_token_is_refused_with_a_json_error(client, server):
    s, other = Sess(client), Sess(client)
    url = server.url.replace("http", "ws") + f"/sessions/{s.id}/live"
    for headers, status in (({}, 401), (other.headers, 403)):
        with pytest.raises(InvalidStatus) as err:
            ws_client.connect(url, additional_headers=headers)
        assert err.value.response.status_code == status
        assert json.loads(err.value.response.body)["error"]["status"] == status
    assert s.status()["state"] == "created"


def test_second_input_on_a_session_is_a_conflict(client, server):
    s = Sess(client)
    url = server.url.replace("http", "ws") + f"/sessions/{s.id}/live"
    with ws_client.connect(url, additional_headers=s.headers) as ws:
        assert_error(s.upload(VIDEOS / "room.mp4"), 409, "session_has_input")
        r = client.post(f"/sessions/{s.id}/source", json={"url": "rtsp://example.invalid/x"}, headers=s.headers)
        assert_error(r, 409, "session_has_input")
        ws.send(json.dumps({"type": "end"}))
        ws.recv(timeout=30)


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/passwd", "concat:a|b", "http://", "camera:x",
                                 "rtsp://host/\nx"])
def test_pull_source_must_be_a_stream_url(client, url):
    s = Sess(client)
    assert_error(client.post(f"/sessions/{s.id}/source", json={"url": url}, headers=s.headers), 400, "bad_source_url")
    assert s.status()["state"] == "created"


def test_keyframe_options_are_the_parallax_keyframers_and_bad_values_are_refused(client):
    for bad in ({"keyframes": True}, {"keyframes": "thumbnails"}, {"min_parallax": 0}, {"min_parallax": 2},
                {"drop_duplicates": 1}):
        err = assert_error(client.post("/sessions", json=bad), 422, "invalid_request")
        assert next(iter(bad)) in err["message"], err
    r = client.post("/sessions", json={"keyframes": "all", "min_parallax": 0.01, "viewer": False})
    assert r.status_code == 201 and (r.json()["options"]["keyframes"], r.json()["options"]["min_parallax"]) == ("all", 0.01)
