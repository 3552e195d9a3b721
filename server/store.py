"""Session metadata in SQLite: the service's durable truth across restarts.

Only a SHA-256 of each session's token is stored. Tokens are 256-bit random
strings, so a plain hash (no salt, no slow KDF) is enough to make a stolen
database useless for calling the API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

# Session life cycle: created -> queued -> running -> completed | failed | cancelled.
STATES = ("created", "queued", "running", "completed", "failed", "cancelled")
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
KINDS = ("", "upload", "live", "pull")  # "" until the session gets its input

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    options     TEXT NOT NULL,
    source      TEXT,
    upload      TEXT,
    stats       TEXT NOT NULL DEFAULT '{}',
    live        TEXT,
    error       TEXT,
    notes       TEXT NOT NULL DEFAULT '[]',
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL
)
"""

_JSON_COLUMNS = ("options", "upload", "stats", "live", "notes")
_UPDATABLE = frozenset({
    "kind", "state", "source", "upload", "stats", "live", "error", "notes", "attempts", "started_at", "finished_at",
})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_session_id() -> str:
    """Server-generated, 32 lowercase hex digits: safe as a directory name."""
    return uuid.uuid4().hex


@dataclass
class SessionRecord:
    id: str
    token_hash: str
    kind: str
    state: str
    options: dict[str, Any]
    created_at: float
    updated_at: float
    source: str | None = None  # pull: the URL; upload: the stored file name
    upload: dict[str, Any] | None = None  # bytes, filename, probe
    stats: dict[str, Any] = field(default_factory=dict)  # the pipeline's last StreamStats
    live: dict[str, Any] | None = None  # live sessions: what happened to the frames sent
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # restarts, warnings
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def token_matches(self, token: str) -> bool:
        """Constant-time comparison of the token's hash with the stored one."""
        return hmac.compare_digest(hash_token(token), self.token_hash)


class SessionStore:
    """Thread-safe access to ``sessions.db``. One connection, one lock."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        # WAL + FULL sync: a committed state change survives kill -9 and power loss.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, options: dict[str, Any]) -> tuple[SessionRecord, str]:
        """A new session in state "created"; returns it and its token (shown once)."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        rec = SessionRecord(
            id=new_session_id(), token_hash=hash_token(token), kind="", state="created",
            options=dict(options), created_at=now, updated_at=now,
        )
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id, token_hash, kind, state, options, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rec.id, rec.token_hash, rec.kind, rec.state, json.dumps(rec.options), now, now),
            )
        return rec, token

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else _record(row)

    def update(self, session_id: str, **fields: Any) -> SessionRecord | None:
        """Set ``fields``; returns the updated record, None if the session is gone."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"SessionStore.update: unknown field(s) {sorted(unknown)}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"SessionStore.update: unknown state {fields['state']!r}")
        if "kind" in fields and fields["kind"] not in KINDS:
            raise ValueError(f"SessionStore.update: unknown kind {fields['kind']!r}")
        values = {k: json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()}
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cur = self._db.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ?", (*values.values(), session_id)
            )
            if cur.rowcount == 0:
                return None
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _record(row)

    def transition(self, session_id: str, from_states: Iterable[str], **fields: Any) -> SessionRecord | None:
        """Update only if the session is in one of ``from_states`` (atomic check-and-set).

        Returns the updated record, or None when the session is gone or in another state.
        """
        from_states = tuple(from_states)
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"SessionStore.transition: unknown field(s) {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()}
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        marks = ", ".join("?" for _ in from_states)
        with self._lock:
            cur = self._db.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ? AND state IN ({marks})",
                (*values.values(), session_id, *from_states),
            )
            if cur.rowcount == 0:
                return None
            row = self._db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return _record(row)

    def delete(self, session_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cur.rowcount > 0

    def count(self, states: Iterable[str]) -> int:
        """Sessions in one of ``states``."""
        states = tuple(states)
        marks = ", ".join("?" for _ in states)
        with self._lock:
            (n,) = self._db.execute(f"SELECT COUNT(*) FROM sessions WHERE state IN ({marks})", states).fetchone()
        return int(n)

    def in_states(self, states: Iterable[str]) -> list[SessionRecord]:
        states = tuple(states)
        marks = ", ".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM sessions WHERE state IN ({marks}) ORDER BY created_at", states
            ).fetchall()
        return [_record(r) for r in rows]



def _record(row: sqlite3.Row) -> SessionRecord:
    data = dict(row)
    for key in _JSON_COLUMNS:
        if data[key] is not None:
            data[key] = json.loads(data[key])
    data["stats"] = data["stats"] or {}
    data["notes"] = data["notes"] or []
    return SessionRecord(**data)
