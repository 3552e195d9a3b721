"""Upload a video to a session: raw body, streamed to disk, probed, made durable, queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from server.deps import Manager, Session
from server.errors import ApiError
from server.models import UploadAccepted, VideoProbeInfo
from server.routers import AUTH_ERRORS, error_responses
from server.uploads import (
    UploadError,
    check_content_type,
    check_declared_length,
    check_filename,
    commit,
    probe_video,
    stored_name,
    stream_to_disk,
)

router = APIRouter(prefix="/sessions", tags=["uploads"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.post(
    "/{session_id}/upload", status_code=202, response_model=UploadAccepted,
    responses=error_responses(*AUTH_ERRORS, 400, 409, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": {
        "video/mp4": _BINARY, "video/quicktime": _BINARY, "video/x-matroska": _BINARY, "video/webm": _BINARY,
        "application/octet-stream": _BINARY}}},
)
async def upload_video(
    request: Request, session: Session, manager: Manager,
    filename: Annotated[str | None, Query(max_length=255, description="the client's file name, for the record "
                                          "only (no path components)")] = None,
) -> UploadAccepted:
    """Send the video as the raw request body (``Content-Type: video/*`` or
    ``application/octet-stream``). Answered 202 once the file is probed and durably on
    disk; the reconstruction is then queued. One upload per session."""
    settings = manager.settings
    check_content_type(request.headers.get("content-type"))
    filename = check_filename(filename)
    check_declared_length(request.headers.get("content-length"), settings.max_upload_bytes)
    await run_in_threadpool(manager.claim_input, session.id)
    part = manager.part_path(session.id)
    try:
        try:
            nbytes = await stream_to_disk(request.stream(), part, settings.max_upload_bytes)
        except ClientDisconnect:
            raise UploadError(400, "upload_incomplete", "the client disconnected before the upload finished") from None
        if await run_in_threadpool(manager.get, session.id) is None:
            raise ApiError(404, "session_not_found", f"session {session.id} was deleted during the upload")
        probe = await run_in_threadpool(probe_video, part, settings.max_pixels)
        await run_in_threadpool(manager.check_upload, session.id, probe.frames)  # chunks that fit the video
        final = manager.session_dir(session.id) / stored_name(probe)
        try:
            await run_in_threadpool(commit, part, final)
        except FileNotFoundError:
            raise ApiError(404, "session_not_found", f"session {session.id} was deleted during the upload") from None
        rec = await run_in_threadpool(manager.accept_upload, session.id, final.name, nbytes, filename,
                                      probe.to_dict())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        manager.release_claim(session.id)
    return UploadAccepted(id=rec.id, state=rec.state, bytes=nbytes, filename=filename,
                          probe=VideoProbeInfo(**probe.to_dict()))
