"""uvicorn's h11 protocol with the limits a public HTTP server needs.

h11 (unlike httptools) refuses a request head larger than its incomplete-event
limit (``Settings.max_header_bytes``), so one client cannot make the server
buffer and re-parse megabytes of headers. On top of it this protocol

- closes a connection whose request head is not complete ``request_timeout``
  seconds after its first byte (or after the connection opened), and one
  whose request body stops arriving for that long: half-sent requests cannot
  pile up;
- answers protocol errors with the service's JSON error body (431 for a head
  that is too large, 400 otherwise) instead of uvicorn's plain text, and so
  the 503 for a request beyond ``limit_concurrency`` (``Settings.max_connections``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_HEAD_TOO_LARGE = 431


class GuardedH11Protocol(H11Protocol):
    """Set ``request_timeout`` on a subclass (see ``guarded_h11``)."""

    request_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_timer_armed = False
        self._upgraded = False  # a WebSocket took the connection over: no HTTP timeouts apply
        # The concurrency limit, checked by our app wrapper (uvicorn's own answers in plain text).
        limit, self.limit_concurrency = self.limit_concurrency, None
        app = self.app

        async def limited_app(scope, receive, send) -> None:
            # This connection and this request's task are already counted.
            if limit is not None and (len(self.connections) > limit or len(self.tasks) > limit):
                body = json.dumps({"error": {"status": 503, "code": "service_unavailable", "message":
                                             f"the server is at its limit of {limit} connections; retry later"}})
                await send({"type": "http.response.start", "status": 503, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"), (b"retry-after", b"1")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
            await app(scope, receive, send)

        self.app = limited_app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._after_data()

    def on_response_complete(self) -> None:
        self._disarm()  # between requests uvicorn's keep-alive timeout applies
        super().on_response_complete()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._upgraded = True  # the WebSocket protocol takes the connection over
        self._disarm()
        super().handle_websocket_upgrade(event)

    # ----- timers ------------------------------------------------------------------------
    def _after_data(self) -> None:
        if self._upgraded or self.transport is None or self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:  # a body is arriving: it may be long, but must not stall
            self._disarm()
            self._arm(self._on_timeout)
        elif state is h11.IDLE:  # a request head is arriving: it has a fixed time to complete
            if not self._head_timer_armed:
                self._arm_head_timer()
        else:  # the request is complete (the app is answering it) or the connection is done
            self._disarm()

    def _arm_head_timer(self) -> None:
        self._disarm()
        self._arm(self._on_timeout)
        self._head_timer_armed = True

    def _arm(self, callback) -> None:
        self._deadline = self.loop.call_later(self.request_timeout, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._head_timer_armed = False

    def _on_timeout(self) -> None:
        self._deadline = None
        self._head_timer_armed = False
        if self._upgraded or self.transport is None or self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:  # the head never completed: no app is answering
            self._send_error(408, "request_timeout",
                             f"the request was not sent within {self.request_timeout:g} s")
        elif self.flow is not None and self.flow.read_paused:  # we stopped reading (the app is behind), not them
            self._arm(self._on_timeout)
        else:  # mid-body: the app sees a disconnect (an upload ends as upload_incomplete)
            self.transport.close()

    # ----- JSON errors -------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        exc = sys.exc_info()[1]  # uvicorn calls this from its ``except h11.RemoteProtocolError``
        hint = getattr(exc, "error_status_hint", 400)
        if hint == _HEAD_TOO_LARGE:
            self._send_error(431, "request_head_too_large",
                             "the request line and headers exceed the server's limit "
                             f"({self.config.h11_max_incomplete_event_size} bytes)")
        else:
            detail = str(exc) if exc is not None else msg
            self._send_error(400, "bad_request", f"invalid HTTP request: {detail}")

    def _send_error(self, status: int, code: str, message: str) -> None:
        self._disarm()
        body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.transport.close()
            return
        # A fresh connection object: the client's one may be in h11's ERROR state.
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        self.transport.write(out)
        self.transport.close()


def guarded_h11(request_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (``http=``), with ``request_timeout`` set."""
    return type("ConfiguredGuardedH11Protocol", (GuardedH11Protocol,), {"request_timeout": float(request_timeout)})
