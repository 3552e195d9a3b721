"""Live input: frames pushed over a WebSocket, or a stream the server pulls (RTSP/HTTP/device).

WebSocket protocol on ``/sessions/{id}/live`` (token in ``Authorization: Bearer`` or,
for browsers, ``?access_token=``):

- client -> server, binary: one frame, ``<float64 LE timestamp (s)><JPEG or PNG bytes>``;
- client -> server, text ``{"type": "end"}``: end of stream;
- server -> client, text JSON: ``ack`` after each frame (running accepted / dropped /
  invalid counts), ``error`` for a malformed message (the connection stays open),
  ``closed`` when the stream ends.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from recon.ingest.errors import IngestError
from server.deps import Manager, Session, authorize
from server.errors import ApiError, error_response
from server.frames import FrameMessageError, decode_frame
from server.logging import log_event
from server.models import LiveAck, LiveClosed, LiveError, PullRequest, SessionStatus
from server.routers import AUTH_ERRORS, error_responses
from server.service import LiveFeed, SessionManager
from server.views import session_status

router = APIRouter(prefix="/sessions", tags=["live"])


@router.post("/{session_id}/source", status_code=202, response_model=SessionStatus,
             responses=error_responses(*AUTH_ERRORS, 400, 409, 413))
def pull_source(request: PullRequest, session: Session, manager: Manager) -> SessionStatus:
    """Have the server read a live stream (``rtsp://``, ``http(s)://``, ``rtmp://``) or a
    device on the server (``camera:0``) into this session until it ends or is stopped."""
    manager.claim_input(session.id)
    try:
        rec = manager.start_pull(session.id, request.url)
    finally:
        manager.release_claim(session.id)
    return session_status(manager, rec)


def _token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return ws.query_params.get("access_token") or None


async def _deny(ws: WebSocket, err: ApiError) -> None:
    """Refuse the handshake with a real HTTP 4xx and the JSON error body."""
    log_event("live.denied", status=err.status, code=err.code)
    await ws.send_denial_response(error_response(err.status, err.code, err.message, err.headers))


@router.websocket("/{session_id}/live")
async def live_frames(ws: WebSocket, session_id: str) -> None:
    manager: SessionManager = ws.app.state.manager
    try:
        if len(session_id) != 32 or any(c not in "0123456789abcdef" for c in session_id):
            raise ApiError(422, "invalid_request", "session id must be 32 hex digits")
        await run_in_threadpool(authorize, manager, session_id, _token(ws))
        await run_in_threadpool(manager.claim_input, session_id)
    except ApiError as err:
        await _deny(ws, err)
        return
    try:
        feed = await run_in_threadpool(manager.open_live, session_id)
    except ApiError as err:
        await _deny(ws, err)
        return
    finally:
        manager.release_claim(session_id)
    await ws.accept()
    ended_by_client = False
    why: list[str] = []
    try:
        ended_by_client = await _receive_frames(ws, feed, manager, session_id, why)
    except WebSocketDisconnect:
        pass
    finally:
        await run_in_threadpool(manager.end_live, session_id, why[0] if why else None)
    if ended_by_client:
        rec = await run_in_threadpool(manager.get, session_id)
        closed = LiveClosed(accepted=feed.accepted, dropped=feed.dropped, invalid=feed.invalid,
                            state=rec.state if rec else "cancelled")
        await ws.send_text(closed.model_dump_json())
        await ws.close(code=1000)


async def _receive_frames(ws: WebSocket, feed: LiveFeed, manager: SessionManager, session_id: str,
                          why: list[str]) -> bool:
    """Push frames until the client ends the stream (True) or disconnects (False).

    Until the first frame the job has not started, so this waits for it with the idle timeout
    itself; afterwards the job's source does (a stalled stream fails the job, and ``push`` says so)."""
    seq = 0
    max_pixels = manager.settings.max_pixels
    idle_timeout = manager.settings.live_idle_timeout
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), None if feed.started else idle_timeout)
        except asyncio.TimeoutError:
            why.append(f"stalled: no frame arrived within {idle_timeout:g} s of the connection")
            await ws.send_text(LiveError(seq=None, code="stalled", message=why[0]).model_dump_json())
            await ws.close(code=1008)
            return False
        if message["type"] == "websocket.disconnect":
            return False
        data, text = message.get("bytes"), message.get("text")
        if data is not None:
            feed.received += 1
            try:
                timestamp, image = await run_in_threadpool(decode_frame, data, max_pixels)
            except FrameMessageError as err:
                feed.invalid += 1
                await ws.send_text(LiveError(seq=seq, code=err.code, message=err.message).model_dump_json())
                seq += 1
                continue
            try:  # in a thread: with the Ray runner a push waits for the session's actor
                await run_in_threadpool(feed.source.push, image, timestamp)
            except IngestError as err:  # the job ended (failed, stalled, stopped), or (Ray) no node took the stream
                why.append(str(err))  # the session's error if its job never started
                await ws.send_text(LiveError(seq=seq, code="stream_closed", message=str(err)).model_dump_json())
                await ws.close(code=1011)
                return False
            feed.accepted += 1
            if not feed.started:
                await run_in_threadpool(manager.start_live_job, session_id)
            await ws.send_text(LiveAck(seq=seq, accepted=feed.accepted, dropped=feed.dropped,
                                       invalid=feed.invalid, pending=feed.source.pending).model_dump_json())
            seq += 1
            continue
        if _is_end(text):
            return True
        feed.invalid += 1
        await ws.send_text(LiveError(
            seq=None, code="bad_message",
            message='expected a binary frame message or the text {"type": "end"}',
        ).model_dump_json())


def _is_end(text: str | None) -> bool:
    try:
        return json.loads(text or "") == {"type": "end"}
    except ValueError:
        return False
