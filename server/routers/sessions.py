"""Sessions: create (get a token), status, stop, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from server.deps import Manager, Session
from server.models import SessionCreated, SessionLinks, SessionOptions, SessionStatus
from server.routers import AUTH_ERRORS, error_responses
from server.views import session_status

router = APIRouter(prefix="/sessions", tags=["sessions"])


def links(session_id: str) -> SessionLinks:
    base = f"/sessions/{session_id}"
    return SessionLinks(status=base, upload=f"{base}/upload", live=f"{base}/live", source=f"{base}/source",
                        stop=f"{base}/stop", events=f"{base}/events", results=f"{base}/results")


@router.post("", status_code=201, response_model=SessionCreated,
             responses=error_responses(400, 413, 422, 503))
def create_session(manager: Manager, options: Annotated[SessionOptions | None, Body()] = None) -> SessionCreated:
    """A new session. Keep the returned token: every other call on the session needs it
    (``Authorization: Bearer <token>``), and it is never shown again."""
    options = options or SessionOptions()
    rec, token = manager.create(options)
    return SessionCreated(id=rec.id, token=token, state=rec.state, options=options, links=links(rec.id))


@router.get("/{session_id}", response_model=SessionStatus, responses=error_responses(*AUTH_ERRORS))
def get_session(session: Session, manager: Manager) -> SessionStatus:
    """State, progress (frames received / processed, frames per second), live counters, errors."""
    return session_status(manager, session)


@router.post("/{session_id}/stop", status_code=202, response_model=SessionStatus,
             responses=error_responses(*AUTH_ERRORS, 409))
def stop_session(session: Session, manager: Manager) -> SessionStatus:
    """End the stream early (live, pulled or uploaded): the job finishes with the frames it has,
    and writes its results. A job still queued is cancelled."""
    rec = manager.stop(session.id) or session
    return session_status(manager, rec)


@router.delete("/{session_id}", status_code=204, response_class=Response, responses=error_responses(*AUTH_ERRORS))
def delete_session(session: Session, manager: Manager) -> Response:
    """Stop the session's job and delete the session with all its files."""
    manager.delete(session.id)
    return Response(status_code=204)
