"""Sessions: create (get a token), status, stop, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials

from server.deps import Manager, Session, authorize, bearer_scheme
from server.errors import ApiError
from server.models import SessionCreated, SessionLinks, SessionOptions, SessionStatus
from server.routers import AUTH_ERRORS, error_responses
from server.views import session_status

router = APIRouter(prefix="/sessions", tags=["sessions"])


def links(session_id: str) -> SessionLinks:
    base = f"/sessions/{session_id}"
    return SessionLinks(status=base, upload=f"{base}/upload", live=f"{base}/live", source=f"{base}/source",
                        stop=f"{base}/stop", events=f"{base}/events", results=f"{base}/results")


@router.post("", status_code=201, response_model=SessionCreated,
             responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503))
def create_session(manager: Manager, options: Annotated[SessionOptions | None, Body()] = None,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
                   ) -> SessionCreated:
    """A new session. Keep the returned token: every other call on the session needs it
    (``Authorization: Bearer <token>``), and it is never shown again.

    With ``map_from``, the session starts from that earlier session's saved map; the request then
    carries the earlier session's token (401 without, 403 with another, 404 for no such session,
    409 while it has not ended with a map)."""
    options = options or SessionOptions()
    if options.map_from:
        earlier = authorize(manager, options.map_from, credentials.credentials if credentials else None)
        if not earlier.is_terminal or not (manager.map_dir(earlier.id) / "map.json").is_file():
            raise ApiError(409, "map_not_ready", f"session {earlier.id} is {earlier.state} and has no saved map "
                                                 "yet; a session keeps its map once its job has ended")
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
