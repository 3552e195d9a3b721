"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import install_error_handlers
from server.guard import RequestGuard
from server.logging import log_event
from server.models import Health
from server.routers import events, live, results, sessions, uploads
from server.service import SessionManager
from server.settings import Settings
from stream4d import __version__

DESCRIPTION = """\
Streaming 3D/4D reconstruction as a service. Create a session (you get its id and a
bearer token), then give it one input: upload a video, push live frames over the
WebSocket `/sessions/{id}/live`, or have the server pull a stream. Follow progress
(`GET /sessions/{id}`, or the SSE stream `/sessions/{id}/events`) and download the
results. See docs/api.md for the WebSocket protocol and the error codes.
"""


class RequestLog:
    """ASGI middleware: one JSON log line per request (no query strings: they may hold tokens)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = {"code": 0}

        async def send_logged(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status["code"] = message["status"]
            elif message["type"] == "websocket.accept":
                status["code"] = 101
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            log_event("request", method=scope.get("method", "WS"), path=scope["path"], status=status["code"],
                      ms=round((time.monotonic() - start) * 1000, 1))


def _warm_up(manager: SessionManager) -> None:
    try:
        seconds = manager.warm_up()
    except Exception as exc:  # noqa: BLE001 - a job would meet the same error and report it
        log_event("service.warm_up_failed", error=f"{type(exc).__name__}: {exc}")
        return
    if seconds is not None:
        log_event("service.warmed", seconds=round(seconds, 2))


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service on ``settings.data_dir``; recovers interrupted sessions at startup."""
    settings = settings or Settings()
    manager = SessionManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        counts = await run_in_threadpool(manager.recover)
        log_event("service.started", data_dir=str(settings.data_dir), workers=settings.workers, **counts)
        # In the background: requests are served meanwhile; a first live session no longer drops the
        # frames that arrive while its run imports torch and the rest.
        threading.Thread(target=_warm_up, args=(manager,), name="stream4d-warm-up", daemon=True).start()
        yield
        await run_in_threadpool(manager.shutdown)
        log_event("service.stopped")

    app = FastAPI(title="stream4d", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.manager = manager
    app.state.settings = settings
    install_error_handlers(app)
    for module in (sessions, uploads, live, events, results):
        app.include_router(module.router)

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness and load: workers and jobs queued or running."""
        return Health(version=__version__, workers=settings.workers, active_jobs=manager.active_jobs())

    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(RequestLog)
    return app
