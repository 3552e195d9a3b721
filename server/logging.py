"""Structured logs: one JSON object per line on stderr.

``log_event("upload.accepted", session=sid, bytes=n)`` writes
``{"ts": "...", "level": "info", "logger": "stream4d.server", "event": "upload.accepted", "session": "...", "bytes": n}``.
Never pass tokens or query strings (they may carry tokens) as fields.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

LOGGER_NAME = "stream4d.server"
# uvicorn logs WebSocket handshakes with their query string, where browsers put the token
# (under any spelling that decodes to access_token): every query string is cut from log lines.
_QUERY_STRING = re.compile(r"(/[^\s?\"']*)\?[^\s\"']*")
# LogRecord attributes (not user fields); uvicorn adds an ANSI-coloured copy of its message.
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record and any ``extra`` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": without_query_strings(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def without_query_strings(text: str) -> str:
    """``text`` with the query string of every URL path in it replaced by ``?[redacted]``."""
    return _QUERY_STRING.sub(r"\1?[redacted]", text)


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for our logger and uvicorn's error logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in (LOGGER_NAME, "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def log_event(event: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """One structured line: ``event`` plus ``fields`` (JSON-serialisable; never secrets)."""
    logging.getLogger(LOGGER_NAME).log(level, event, exc_info=exc_info, extra=fields)
