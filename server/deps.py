"""FastAPI dependencies: the session manager, and the session a valid bearer token opens."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.errors import ApiError
from server.models import SESSION_ID_PATTERN
from server.service import SessionManager
from server.store import SessionRecord

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="SessionToken",
    description="the token returned when the session was created; valid for that session only",
)

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="session id (32 hex digits)")]


def get_manager(request: Request) -> SessionManager:
    return request.app.state.manager


def authorize(manager: SessionManager, session_id: str, token: str | None) -> SessionRecord:
    """The session ``session_id`` if ``token`` is its token. 401 / 404 / 403 otherwise."""
    if not token:
        raise ApiError(401, "missing_token", "this call needs the session's token: Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": "Bearer"})
    rec = manager.get(session_id)
    if rec is None:
        raise ApiError(404, "session_not_found", f"session {session_id} does not exist (or was deleted)")
    if not rec.token_matches(token):
        raise ApiError(403, "wrong_token", f"the token is not valid for session {session_id}")
    return rec


def authorized_session(
    session_id: SessionId,
    manager: Annotated[SessionManager, Depends(get_manager)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> SessionRecord:
    return authorize(manager, session_id, credentials.credentials if credentials else None)


Manager = Annotated[SessionManager, Depends(get_manager)]
Session = Annotated[SessionRecord, Depends(authorized_session)]
