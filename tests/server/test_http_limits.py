"""The HTTP server's own limits, on a real `stream4d serve` over loopback (issue 15, items 1, 4, 5, 6, 10).

Every socket has a timeout and every loop a bound: a limit that does not hold fails the
test within seconds instead of hanging it.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client as ws_client
from conftest import ServerProcess, assert_error

REQUEST_TIMEOUT = 1.0  # --request-timeout of this module's server
MAX_BODY_KB = 8
MAX_CONNECTIONS = 24
LIVE_IDLE_TIMEOUT = 4.0  # longer than the WebSocket test below stays silent
MAX_MESSAGE_MB = 0.25


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> ServerProcess:
    """A server with tight limits; otherwise the defaults (no private sources, no devices)."""
    srv = ServerProcess(tmp_path_factory.mktemp("limits") / "data", workers=1, viewer="none", extra_args=(
        "--request-timeout", str(REQUEST_TIMEOUT), "--max-body-kb", str(MAX_BODY_KB),
        "--max-connections", str(MAX_CONNECTIONS), "--live-idle-timeout", str(LIVE_IDLE_TIMEOUT),
        "--max-message-mb", str(MAX_MESSAGE_MB))).start()
    yield srv
    srv.stop()


def _port(srv: ServerProcess) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _raw(srv: ServerProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", _port(srv)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _status_and_json(response: bytes) -> tuple[int, dict, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), head


def _health_seconds(srv: ServerProcess) -> float:
    start = time.monotonic()
    assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
    return time.monotonic() - start


def test_a_request_head_over_the_limit_is_refused_with_431(limited):
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"
    status, body, _ = _status_and_json(_raw(limited, head))
    assert status == 431 and body["error"]["code"] == "request_head_too_large"


def test_a_huge_request_head_is_cut_off_and_does_not_stall_the_server(limited):
    port = _port(limited)
    big = b"a" * (32 * 1024 * 1024)  # 32 MB of one header: httptools buffered and re-parsed all of it
    outcome: list[str] = []

    def send_big() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
                for i in range(0, len(big), 1 << 20):
                    sock.sendall(big[i:i + (1 << 20)])
                outcome.append("all sent")
            except OSError:
                outcome.append("cut off")  # the server closed the connection mid-header

    sender = threading.Thread(target=send_big)
    sender.start()
    time.sleep(0.2)
    assert _health_seconds(limited) < 1.0  # the rest of the service goes on
    sender.join(30)
    assert not sender.is_alive() and outcome == ["cut off"]


def test_too_many_header_lines_are_refused_with_431(limited):
    lines = "".join(f"X-H{i}: v\r\n" for i in range(150))
    status, body, _ = _status_and_json(_raw(limited, f"GET /health HTTP/1.1\r\nHost: localhost\r\n{lines}\r\n".encode()))
    assert status == 431 and body["error"]["code"] == "too_many_headers"


def test_half_sent_requests_are_closed_after_the_request_timeout(limited):
    port = _port(limited)
    socks = []
    try:
        for i in range(MAX_CONNECTIONS - 6):  # heads that never end, a body that stops, and a connection that says nothing
            sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT * 6)
            if i % 3 == 0:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            elif i % 3 == 1:
                sock.sendall(b"POST /sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"window\"")
            socks.append(sock)
        start = time.monotonic()
        for sock in socks:
            data = b""
            while True:  # until the server closes: recv times out (a failure) if it never does
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data:  # a head that never completed gets a 408 before the close
                assert _status_and_json(data)[0] == 408
        assert time.monotonic() - start < REQUEST_TIMEOUT * 5
    finally:
        for sock in socks:
            sock.close()
    assert _health_seconds(limited) < 1.0


def test_a_websocket_outlives_the_request_timeout(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.post("/sessions", json={"viewer": False})
    url = limited.url.replace("http", "ws") + f"/sessions/{r.json()['id']}/live"
    with ws_client.connect(url, additional_headers={"Authorization": f"Bearer {r.json()['token']}"},
                           open_timeout=10) as ws:
        time.sleep(REQUEST_TIMEOUT * 2.5)  # the HTTP timeouts ended with the upgrade
        ws.send(json.dumps({"type": "end"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "closed"


def test_a_live_client_that_never_sends_a_frame_is_closed_and_never_took_a_worker(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.post("/sessions", json={"viewer": False})
        sid, headers = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
        start = time.monotonic()
        with ws_client.connect(limited.url.replace("http", "ws") + f"/sessions/{sid}/live",
                               additional_headers=headers, open_timeout=10) as ws:
            assert c.get("/health").json()["active_jobs"] == 0  # connected, but no job before a frame
            error = json.loads(ws.recv(timeout=LIVE_IDLE_TIMEOUT * 3))
            assert error["type"] == "error" and error["code"] == "stalled", error
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                ws.recv(timeout=10)
        assert time.monotonic() - start < LIVE_IDLE_TIMEOUT * 3
        deadline = time.monotonic() + 10  # the server ends the session just after it closes the socket
        while (status := c.get(f"/sessions/{sid}", headers=headers).json())["state"] == "queued":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["state"] == "failed" and "no frame arrived" in status["error"], status
        assert status["attempts"] == 0


def test_connections_beyond_the_limit_get_503_until_idle_ones_time_out(limited):
    port = _port(limited)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_CONNECTIONS + 2)]
    try:
        time.sleep(0.3)
        assert httpx.get(f"{limited.url}/health", timeout=5).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + REQUEST_TIMEOUT * 5
    while httpx.get(f"{limited.url}/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_json_bodies_are_limited_with_413_declared_or_streamed(limited):
    with httpx.Client(base_url=limited.url, timeout=30) as c:
        big = {"window": 8, "pad": "x" * (MAX_BODY_KB * 1024 * 4)}
        assert_error(c.post("/sessions", json=big), 413, "body_too_large")

        def chunks():  # no Content-Length: chunked transfer, counted as it arrives
            yield b'{"window": 8, "pad": "'
            for _ in range(64):
                yield b"x" * 1024
            yield b'"}'

        r = c.post("/sessions", content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(r, 413, "body_too_large")
        assert c.post("/sessions", json={"viewer": False}).status_code == 201  # small bodies still work


def test_unknown_host_headers_are_refused(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        assert_error(c.get("/health", headers={"Host": "attacker.example"}), 400, "untrusted_host")
        assert_error(c.post("/sessions", json={}, headers={"Host": "attacker.example:80"}), 400, "untrusted_host")
        for host in ("localhost", f"localhost:{_port(limited)}", "127.0.0.1", f"127.0.0.1:{_port(limited)}"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host


def test_a_percent_encoded_token_in_the_query_never_reaches_the_log(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.post("/sessions", json={"viewer": False})
        sid, token = r.json()["id"], r.json()["token"]
    url = limited.url.replace("http", "ws") + f"/sessions/{sid}/live?access%5Ftoken={token}"
    with ws_client.connect(url, open_timeout=10) as ws:  # the decoded key authenticates
        ws.send(json.dumps({"type": "end"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "closed"
    time.sleep(0.3)
    log = limited.log_path.read_text(errors="replace")
    assert f"/sessions/{sid}/live" in log  # the handshake was logged...
    assert token not in log  # ...without the token


def test_pulling_from_loopback_or_a_device_is_refused_by_default(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        for url in (f"http://127.0.0.1:{_port(limited)}/health", "http://localhost:9/x.mp4", "rtsp://[::1]/cam"):
            r = c.post("/sessions", json={"viewer": False})
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
            assert_error(c.post(f"/sessions/{r.json()['id']}/source", json={"url": url}, headers=headers),
                         403, "private_source")
            assert c.get(f"/sessions/{r.json()['id']}", headers=headers).json()["state"] == "created"
        r = c.post("/sessions", json={"viewer": False})
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        assert_error(c.post(f"/sessions/{r.json()['id']}/source", json={"url": "camera:0"}, headers=headers),
                     403, "devices_disabled")


def test_protocol_errors_are_json(limited):
    status, body, _ = _status_and_json(_raw(
        limited, b"POST /sessions HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n"))
    assert status == 400 and body["error"]["code"] == "bad_request"


def test_options_are_strictly_typed(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        for bad in ({"viewer": 0}, {"overlap": True}, {"window": "8"}, {"window": 8.0}, {"keyframes": "true"}):
            assert_error(c.post("/sessions", json=bad), 422, "invalid_request")


def test_405_names_every_method_of_the_path(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.put(f"/sessions/{'0' * 32}")
        assert_error(r, 405)
        assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "DELETE"}


def test_a_websocket_message_above_the_limit_closes_the_stream_with_1009(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        r = c.post("/sessions", json={"viewer": False})
        sid, headers = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
    with ws_client.connect(limited.url.replace("http", "ws") + f"/sessions/{sid}/live",
                           additional_headers=headers, open_timeout=10, max_size=None) as ws:
        ws.send(b"\0" * int(MAX_MESSAGE_MB * 1024 * 1024 * 2))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            for _ in range(20):  # anything the server says before it closes, then the close
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

