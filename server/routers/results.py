"""Results: the index of a session's output files, and each file."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

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


def _ended_out_dir(session, manager):
    if not session.is_terminal:
        raise ApiError(409, "results_not_ready", f"session {session.id} is {session.state}; results come when it ends")
    return manager.out_dir(session.id)


def _load_export_scene(session, manager):
    from stream4d.export import ExportError, load_scene

    out = _ended_out_dir(session, manager)
    try:
        return load_scene(out)
    except ExportError as exc:
        raise ApiError(404, "result_not_found", f"session {session.id} cannot be exported: {exc}") from exc


@router.get("/{session_id}/results/colmap.zip", response_class=FileResponse,
            responses={**error_responses(*AUTH_ERRORS, 409),
                       200: {"content": {"application/zip": {}}, "description": "the COLMAP model and images"}})
def download_colmap_zip(session: Session, manager: Manager) -> FileResponse:
    """A COLMAP sparse model of the session's run, built now from its output folder: ``sparse/0/cameras.bin``,
    ``images.bin``, ``points3D.bin`` and ``images/`` (see docs/output_format.md, "Exports")."""
    import shutil
    import tempfile
    import zipfile

    from starlette.background import BackgroundTask

    from stream4d.export import write_colmap

    scene = _load_export_scene(session, manager)
    tmp = Path(tempfile.mkdtemp(prefix="colmap-"))  # on disk, not in memory: a long run has many frames
    try:
        model = tmp / "model"
        write_colmap(scene, model)
        archive = tmp / "colmap.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not compress further
            for path in sorted(model.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(model).as_posix())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(archive, media_type="application/zip", filename="colmap.zip",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


@router.get("/{session_id}/results/map.zip", response_class=FileResponse,
            responses={**error_responses(*AUTH_ERRORS, 409),
                       200: {"content": {"application/zip": {}}, "description": "the session's saved map"}})
def download_map_zip(session: Session, manager: Manager) -> FileResponse:
    """The session's saved map folder (``map.json``, ``keyframes.npz``, ``trajectory.json``,
    ``gaussians.npz``; docs/output_format.md, "Map folder"): what ``stream4d reconstruct --map`` and
    ``stream4d merge`` read, and what a new session's ``map_from`` starts from."""
    import shutil
    import tempfile
    import zipfile

    from starlette.background import BackgroundTask

    _ended_out_dir(session, manager)
    folder = manager.map_dir(session.id)
    if not (folder / "map.json").is_file():
        raise ApiError(404, "result_not_found", f"session {session.id} has no saved map")
    tmp = Path(tempfile.mkdtemp(prefix="map-"))
    try:
        archive = tmp / "map.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # the npz files are compressed already
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.endswith(".tmp"):
                    zf.write(path, path.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FileResponse(archive, media_type="application/zip", filename="map.zip",
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


@router.get("/{session_id}/results/transforms.json", responses=error_responses(*AUTH_ERRORS, 409))
def download_transforms_json(session: Session, manager: Manager) -> JSONResponse:
    """nerfstudio's ``transforms.json`` of the session's run, built now from its output folder (images are
    named as in colmap.zip's ``images/``; OpenGL camera axes, see docs/output_format.md, "Exports")."""
    from stream4d.export import transforms_json

    doc = transforms_json(_load_export_scene(session, manager), ply_file=None)
    return JSONResponse(doc, headers={"Content-Disposition": 'attachment; filename="transforms.json"'})


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
