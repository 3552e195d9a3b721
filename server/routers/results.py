"""Results: the index of a session's output files, and each file."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.deps import Manager, Session
from server.errors import ApiError
from server.models import ResultFile, ResultName, ResultsIndex
from server.routers import AUTH_ERRORS, error_responses

router = APIRouter(prefix="/sessions", tags=["results"])

_MEDIA_TYPES = {
    ResultName.trajectory_json: "application/json",
    ResultName.run_json: "application/json",
    ResultName.trajectory_tum: "text/plain; charset=utf-8",
    ResultName.points_ply: "application/octet-stream",
    ResultName.splats_ply: "application/octet-stream",
    ResultName.recording_rrd: "application/octet-stream",
}


@router.get("/{session_id}/results", response_model=ResultsIndex, responses=error_responses(*AUTH_ERRORS))
def list_results(session: Session, manager: Manager) -> ResultsIndex:
    """The result files present now, and the session's live viewer URL.

    Files are listed once the job has ended (completed, failed with partial outputs,
    or cancelled); while it runs, only the viewer URL is given."""
    files = []
    if session.is_terminal:
        files = [ResultFile(name=name, bytes=path.stat().st_size, url=f"/sessions/{session.id}/results/{name.value}")
                 for name, path in manager.result_files(session.id)]
    return ResultsIndex(id=session.id, state=session.state, files=files, viewer_url=manager.viewer_url(session))


@router.get("/{session_id}/results/{name}", response_class=FileResponse,
            responses={**error_responses(*AUTH_ERRORS, 409),
                       200: {"content": {"application/octet-stream": {}}, "description": "the file"}})
def download_result(name: ResultName, session: Session, manager: Manager) -> FileResponse:
    """One result file (names are fixed: trajectory.json, trajectory.tum, points.ply,
    splats.ply, recording.rrd, run.json)."""
    if not session.is_terminal:
        raise ApiError(409, "results_not_ready", f"session {session.id} is {session.state}; results come when it ends")
    path = manager.out_dir(session.id) / name.value
    if not path.is_file():
        raise ApiError(404, "result_not_found", f"session {session.id} has no {name.value}")
    return FileResponse(path, media_type=_MEDIA_TYPES[name], filename=name.value)
