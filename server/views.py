"""Store records -> response models."""

from __future__ import annotations

from server.models import LiveCounters, Progress, SessionOptions, SessionStatus, UploadInfo
from server.service import SessionManager
from server.store import SessionRecord

_PROGRESS_FIELDS = frozenset(Progress.model_fields)


def session_status(manager: SessionManager, rec: SessionRecord) -> SessionStatus:
    progress = Progress(**{k: v for k, v in rec.stats.items() if k in _PROGRESS_FIELDS})
    live = manager.live_counters(rec.id) if rec.kind == "live" else None
    return SessionStatus(
        id=rec.id,
        kind=rec.kind,
        state=rec.state,
        options=SessionOptions(**rec.options),
        source=rec.source,
        upload=UploadInfo(**rec.upload) if rec.upload else None,
        progress=progress,
        live=LiveCounters(**live) if live else None,
        error=rec.error,
        notes=rec.notes,
        viewer_url=manager.viewer_url(rec),
        attempts=rec.attempts,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
    )
