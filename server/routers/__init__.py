"""One router per resource: sessions, uploads, live (WebSocket + pulled streams), results, events."""

from __future__ import annotations

from typing import Any

from server.models import ErrorBody

_DESCRIPTIONS = {
    400: "bad input", 401: "missing token", 403: "wrong token", 404: "unknown or deleted session",
    409: "conflicts with the session's state", 413: "body, upload or its frames too large",
    415: "wrong content type", 422: "invalid parameters or unreadable video",
    503: "a server limit is reached (sessions, live sessions); retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the JSON errors an operation may return."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS.get(code, "error")} for code in codes}


AUTH_ERRORS = (401, 403, 404, 422)
