"""Progress events: Server-Sent Events carrying the session status as it changes."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.deps import Manager, Session
from server.routers import AUTH_ERRORS, error_responses
from server.service import SessionManager
from server.views import session_status

router = APIRouter(prefix="/sessions", tags=["events"])

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


@router.get(
    "/{session_id}/events", response_class=StreamingResponse,
    responses={**error_responses(*AUTH_ERRORS),
               200: {"content": {"text/event-stream": {}},
                     "description": "`event: progress` with a SessionStatus JSON on every change; "
                                    "`event: end` with the final status when the session ends"}},
)
async def session_events(request: Request, session: Session, manager: Manager) -> StreamingResponse:
    """A text/event-stream of the session's status: one ``progress`` event per change, then
    ``end`` (final status) when the session completes, fails or is cancelled, or
    ``deleted`` if it is deleted."""
    return StreamingResponse(_events(request, manager, session.id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, manager: SessionManager, session_id: str) -> AsyncIterator[str]:
    last = None
    last_sent = time.monotonic()
    while True:
        rec = await run_in_threadpool(manager.get, session_id)
        if rec is None:
            yield "event: deleted\ndata: {}\n\n"
            return
        payload = session_status(manager, rec).model_dump_json()
        if rec.is_terminal:
            yield f"event: end\ndata: {payload}\n\n"
            return
        if payload != last:
            yield f"event: progress\ndata: {payload}\n\n"
            last, last_sent = payload, time.monotonic()
        elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"  # a comment line: keeps proxies from closing an idle stream
            last_sent = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)
