"""What an export needs from a finished output folder, gathered once for every format.

A run's folder (docs/output_format.md) holds the poses (``trajectory.json``),
the model-resolution frames (``frames/``) and, from backends with feature
tracks, the sparse points with their 2D observations (``sparse/``). The
exports (COLMAP, nerfstudio) describe the frames **as written in frames/**:
intrinsics are in pixels of those images, poses are the run's camera-to-world
in its world frame, so ``points.ply`` and ``splats.ply`` line up with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stream4d.geometry import radial_distorted
from stream4d.outputs import (
    FRAMES_DIR,
    RUN_JSON,
    SPARSE_DIR,
    PosedFrame,
    read_frame_images,
    read_radial,
    read_sparse,
    read_trajectory_json,
)


class ExportError(ValueError):
    """The output folder cannot be exported (missing files, nothing posed, ...)."""


@dataclass
class ExportView:
    """One posed frame as the exports describe it."""

    index: int  # Frame.index
    name: str  # file name of the image (written under images/ by the exporters)
    image_path: Path  # frames/<index:06d>.jpg in the output folder
    source: str  # Frame.source: what the input called this frame
    c2w: np.ndarray  # [4, 4] camera-to-world, OpenCV axes, the run's world
    K: np.ndarray  # [3, 3] pixels of the written image, pixel centres at integers
    width: int  # of the written image
    height: int
    radial_k1: float = 0.0  # the lens' radial coefficient (``geometry.radial_distorted``); 0: a pinhole

    @classmethod
    def without_image(cls, frame: PosedFrame, K: np.ndarray) -> ExportView:
        """A view of ``frame`` with ``K`` [3, 3] (model pixels) for an adjustment, which reads no image: its
        size is the one that centres the principal point (the sparse files do not hold the model image's)."""
        K = np.asarray(K, np.float64)
        width, height = int(np.ceil(2 * K[0, 2] + 1)), int(np.ceil(2 * K[1, 2] + 1))
        return cls(frame.index, f"{frame.index:06d}.jpg", Path(), frame.image, frame.c2w, K, width, height)


@dataclass
class ExportScene:
    """Posed views of one world segment and the sparse points seen in them (world frame)."""

    views: list[ExportView]
    points: np.ndarray  # float64 [P, 3]
    colors: np.ndarray  # uint8 [P, 3]
    obs_point: np.ndarray  # int64 [O], row of points
    obs_view: np.ndarray  # int64 [O], row of views
    obs_xy: np.ndarray  # float64 [O, 2], pixels of the written image, centres at integers
    segment: int
    out_dir: Path

    @property
    def num_points(self) -> int:
        return int(len(self.points))

    def with_points(self, rows: np.ndarray) -> ExportScene:
        """This scene with only the points ``rows`` (sorted int [Q]) and their observations, renumbered."""
        renumber = np.full(self.num_points, -1, np.int64)
        renumber[rows] = np.arange(len(rows))
        keep = renumber[self.obs_point] >= 0
        return replace(self, points=self.points[rows], colors=self.colors[rows],
                       obs_point=renumber[self.obs_point[keep]], obs_view=self.obs_view[keep],
                       obs_xy=self.obs_xy[keep])

    def reprojection_errors(self) -> np.ndarray:
        """Pixel distance [O] between each observation and its point projected by its view."""
        return _reprojection_errors(self.views, self.points, self.obs_point, self.obs_view, self.obs_xy)[0]


def _reprojection_errors(views, points, obs_point, obs_view, obs_xy) -> tuple[np.ndarray, np.ndarray]:
    """Errors [O] (inf behind the camera) and camera-frame depths [O]."""
    if len(obs_point) == 0:
        return np.zeros(0), np.zeros(0)
    w2c = np.linalg.inv(np.stack([v.c2w for v in views]))[obs_view]
    K = np.stack([v.K for v in views])[obs_view]
    pc = np.einsum("nij,nj->ni", w2c[:, :3, :3], points[obs_point]) + w2c[:, :3, 3]
    proj = np.einsum("nij,nj->ni", K, pc)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = proj[:, :2] / proj[:, 2:3]
    k1 = np.array([v.radial_k1 for v in views], np.float64)[obs_view]
    uv = radial_distorted(uv, K, k1)
    err = np.linalg.norm(uv - obs_xy, axis=1)
    err[~(pc[:, 2] > 0)] = np.inf
    return err, pc[:, 2]


def run_segment(out_dir: Path, frames: list[PosedFrame]) -> int:
    """The segment points.ply and splats.ply hold: run.json's ``map.segment`` when the run wrote them
    for another world than the one it ended in (tracking lost late: the files show the largest),
    else its ``stats.segment``; without a readable run.json the segment with the most frames."""
    try:
        run = json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))
        shown = (run.get("map") or {}).get("segment")
        return int(run["stats"]["segment"] if shown is None else shown)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        segments, counts = np.unique([f.segment for f in frames], return_counts=True)
        return int(segments[np.argmax(counts)])


def load_scene(out_dir: str | Path, segment: int | None = None, max_reproj_px: float = 4.0) -> ExportScene:
    """Gather the views and sparse points of ``segment`` (default: the run's final segment, the one
    ``points.ply`` and ``splats.ply`` hold) from an output folder.

    Observations whose point reprojects farther than ``max_reproj_px`` from them through the
    exported camera are dropped (a frame shared by two windows has the pose of the first, so the
    second window's points can sit a little off in it), and so are points left with fewer than two.
    Raises ExportError when the folder lacks trajectory.json or the saved frames.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ExportError(f"output folder {out_dir} does not exist")
    try:
        frames = read_trajectory_json(out_dir / "trajectory.json")
    except (FileNotFoundError, ValueError) as exc:
        raise ExportError(f"{out_dir} has no readable trajectory.json (is the run finished?): {exc}") from exc
    if not frames:
        raise ExportError(f"{out_dir}/trajectory.json has no posed frames")
    images = read_frame_images(out_dir)
    if not images:
        raise ExportError(f"{out_dir} has no {FRAMES_DIR}/ (the model-resolution frames): re-run reconstruct "
                          "without --no-save-frames")
    if segment is None:
        segment = run_segment(out_dir, frames)
    views = []
    for f in frames:
        if f.segment != segment:
            continue
        img = images.get(f.index)
        if img is None or not img.path.is_file():
            raise ExportError(f"frame {f.index} ({f.image}) is posed but {FRAMES_DIR}/ has no image for it")
        if np.isnan(f.K).any():
            raise ExportError(f"frame {f.index} ({f.image}) has no intrinsics in trajectory.json")
        views.append(ExportView(f.index, img.path.name, img.path, f.image, f.c2w, img.pixel_map @ f.K,
                                img.width, img.height))
    if not views:
        raise ExportError(f"{out_dir} has no posed frames in segment {segment}")
    sparse = read_sparse(out_dir, segment)
    # The default backend estimates K with the poses; the aligner may have pinned another K for the
    # dense points (trajectory.json). The view keeps the K its pose and observations were made with.
    k1 = read_radial(out_dir).get(segment, 0.0)  # the final adjustment's lens, one for the segment
    for v in views:
        v.radial_k1 = k1
        if v.index in sparse.K:
            v.K = np.asarray(sparse.K[v.index], np.float64)
    return scene_from_tracks(views, sparse, segment, out_dir, max_reproj_px)[0]


def scene_from_tracks(views: list[ExportView], sparse, segment: int, out_dir: Path,
                      max_reproj_px: float = 4.0) -> tuple[ExportScene, np.ndarray]:
    """The scene of ``views`` and the sparse tracks (``outputs.SparseMap``) seen in them: observations in
    other frames or reprojecting farther than ``max_reproj_px`` are dropped, then points seen fewer than
    twice. Returns the scene and, per scene point, its row in ``sparse.points`` (int64 [P])."""
    row = {v.index: k for k, v in enumerate(views)}
    obs_view = np.array([row.get(int(i), -1) for i in sparse.obs_frame], np.int64)
    keep = obs_view >= 0
    obs_point, obs_view, obs_xy = sparse.obs_point[keep], obs_view[keep], sparse.obs_xy[keep]
    err, _ = _reprojection_errors(views, sparse.points, obs_point, obs_view, obs_xy)
    good = err <= max_reproj_px
    obs_point, obs_view, obs_xy = obs_point[good], obs_view[good], obs_xy[good]
    kept = np.nonzero(np.bincount(obs_point, minlength=sparse.num_points) >= 2)[0]
    scene = ExportScene(views, sparse.points, sparse.colors, obs_point, obs_view, obs_xy, segment, out_dir)
    return scene.with_points(kept), kept


def has_sparse(out_dir: str | Path) -> bool:
    return any((Path(out_dir) / SPARSE_DIR).glob("*.npz"))
