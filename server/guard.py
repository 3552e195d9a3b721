"""ASGI middleware in front of every route: Host check, header count, body size, JSON errors.

- ``Host`` must name one of ``Settings.trusted_hosts`` (a page on another origin
  that rebinds its DNS name to 127.0.0.1 sends its own name): 400 otherwise.
- at most ``Settings.max_headers`` header lines of at most ``Settings.max_header_bytes``
  in all: 431 otherwise. The HTTP protocol (server/http.py) cuts off a head that
  arrives in pieces at that size; a head that arrives whole is checked here.
- every request body but an upload's is read here, up to ``Settings.max_body_bytes``,
  before any route sees it: 413 beyond (at once when ``Content-Length`` says so).
  Uploads stream to disk with their own limit (server/uploads.py).
- an error response something below us wrote as plain text (Starlette's
  ``Range`` errors, for one) is rewritten into the service's JSON error body.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import HTTP_CODES
from server.settings import Settings

_UPLOAD_PATH = re.compile(r"^/sessions/[^/]+/upload$")


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, lower-cased, without port or IPv6 brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_headers = settings.max_headers
        self.max_header_bytes = settings.max_header_bytes
        self.max_body = settings.max_body_bytes
        hosts = settings.trusted_hosts or []
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._refuse(scope, receive, send, *refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        send = _json_errors(send)
        if _UPLOAD_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive)
        if body is None:
            await self._refuse(scope, receive, send, 413, "body_too_large",
                               f"request bodies are limited to {self.max_body} bytes (uploads excepted)")
            return
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive_replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, receive_replayed, send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = scope.get("headers") or []
        if len(headers) > self.max_headers:
            return 431, "too_many_headers", f"requests may carry at most {self.max_headers} headers"
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_header_bytes:
            return 431, "request_head_too_large", f"request headers are limited to {self.max_header_bytes} bytes"
        if not self.any_host:
            hosts = [v.decode("latin-1") for k, v in headers if k == b"host"]
            name = host_name(hosts[0]) if len(hosts) == 1 else None
            if name not in self.hosts:
                return 400, "untrusted_host", ("the Host header must name this server "
                                               "(see stream4d serve --trusted-hosts)")
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is larger than the limit (reading stops there)."""
        for key, value in scope.get("headers") or []:
            if key == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    pass  # the HTTP layer has already refused a malformed length
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
        body = _error_body(status, code, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


def _json_errors(send: Send) -> Send:
    """``send`` that turns a non-JSON 4xx/5xx response into the JSON error body."""
    held: dict = {}

    async def send_json(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            ctype = dict(message.get("headers") or []).get(b"content-type", b"")
            if not ctype.startswith(b"application/json"):
                held["start"], held["body"] = message, b""
                return
        if message["type"] == "http.response.body" and "start" in held:
            held["body"] += message.get("body", b"")
            if message.get("more_body", False):
                return
            start = held.pop("start")
            status = start["status"]
            text = held.pop("body").decode("utf-8", "replace").strip()
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
            body = _error_body(status, HTTP_CODES.get(status, "http_error"), text or phrase)
            headers = [(k, v) for k, v in start.get("headers") or []
                       if k not in (b"content-type", b"content-length")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return send_json
