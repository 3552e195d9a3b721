"""``final_ba``: one global bundle adjustment of a finished (finite) run, and every output following it.

After the stream ends, the keyframes of the final world segment and the sparse tracks the windows
wrote (``sparse/*.npz``, what the COLMAP export holds) are adjusted together (``align.bundle``).
Then the outputs follow the adjusted poses, as they follow a loop closure:

- keyframes take their adjusted pose; the frames between them (tracked frames, keyframes without
  tracks) move by the correction of the neighbouring keyframes of the window that posed them,
  interpolated by index; a pose that was itself a blend of its neighbours' (an interpolated frame, a
  rotation-only keyframe's centre) is blended again from where they went; then a tracked frame is
  solved again on the adjusted points from the observations its tracking kept (``resolve_tracked``);
- splats.ply / points.ply: each window's Gaussians (or points) move by one Sim(3), fitted to how
  the scene in front of its frames moved;
- sparse/*.npz: the adjusted points take their adjusted place, the others follow their window;
- with ``refine_focal`` (a self-calibrated stream), the keyframes share one camera whose focal
  length is adjusted too, and every frame's K (trajectory, depth/, sparse/) takes that focal length,
  whatever its window had self-calibrated to (the poses and points were solved with it);
- the lens: when the keyframes are one camera (fx = fy), a second adjustment from the first estimates
  one radial distortion coefficient too, kept when it bends the image corner by ``RADIAL_MIN_PX`` or
  more (``_with_lens``): trajectory.json and the exports then carry it, and tracked frames are solved
  again on their observations undistorted through it. Windows that self-calibrated through a lens
  (``recon.default.sfm.SfmConfig.lens_min_corner_px``; ``sparse/*.npz`` ``radial_k1``) have their
  observations checked through it, and the shared camera starts from the median of their coefficients
  (a pinhole's 0 counted), held in the first adjustment. The dense outputs (depth/, splats, points) stay
  the windows' pinhole ones.

Evidence the tracks cannot carry keeps a frame, the focal length or the whole adjustment out:

- the tracks are each window's own, so nothing among them ties the end of a loop to its start, or a
  segment re-attached after a gap to the world it joined: each loop the pose graph kept and each
  re-attachment link adds its matches (the PnP inliers between its two keyframes, ``loop_pairs``),
  which merge the two windows' tracks where they are observations of them
  (``pipeline.cross_tracks``). A world where a loop moved windows and neither its own matches nor
  another loop from its window into the same place hold it is not adjusted: the adjustment would open
  the loop again (``loops``; a loop the chain already agreed with moved nothing and does not count);

- a frame the loop closure relocated (PnP on an earlier keyframe's points, ``exclude_frames``) is held
  by its relocation's matches alone (``loop_pairs`` has them too): its window's tracks were
  triangulated with the pose the window model gave it, which the relocation replaced, so they would
  pull it back. When those matches give it too few observations it is left out and moves with its
  neighbours like a tracked frame;
- a self-calibrated stream is adjusted only when one shared camera fits the tracks about as well as
  each keyframe's own K (mean error up by at most the loss scale): windows that self-calibrated far
  apart (forward motion leaves the focal loose) start the shared camera outside the adjustment's
  reach, and the path it converges to bends; with each keyframe's own K held, the windows' focal
  errors bend it too. Each window is consistent in itself, so the stream stays as aligned.

- a world holding windows whose tracks, merged as above, still share fewer than two keyframes with
  the rest (a segment re-attached across a gap whose link merged no tracks) is not adjusted: the
  adjustment would leave such a window's scale, or its whole place, free (``windows_untied``).

Nothing moves when the adjustment fails, leaves the mean reprojection error worse (over the points
it kept; by more than 0.1 %, round-off of a world already adjusted), or sends more than 5 % of the points off (``align.bundle.bundle_adjust``: a few
low-parallax points may run off towards infinity while the rest converges; they keep their
window's move).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream4d.adjustment_budget import budgeted_points
from stream4d.contracts import POSE_INTERPOLATED, POSE_POSED, POSE_ROTATION_ONLY
from stream4d.export.scene import ExportView, scene_from_tracks
from stream4d.geometry import (
    Sim3,
    quat_wxyz,
    radial_corner_shift_px,
    rigid_motion,
    rotation_angle_deg,
    rotation_from_quat_wxyz,
    umeyama,
)
from stream4d.outputs import OutputWriter, PosedFrame, read_held_tracks, read_sparse
from stream4d.pipeline.cross_tracks import with_cross_tracks
from stream4d.pipeline.resolve_tracked import OBSERVATIONS_IN_ADJUSTMENT, resolve_tracked, tracked_views

log = logging.getLogger("stream4d.pipeline")

MIN_KEYFRAMES = 3
MIN_VIEW_OBSERVATIONS = 10  # a keyframe seeing fewer tracks is left out (its pose would float)
MAX_LOST_SHARE = 0.05  # more points sent off than this and the adjustment is not trusted
ROUND_OFF_SHARE = 1e-3  # an already adjusted world comes back this close to its error: not worse
MIN_LOOP_TRACKS = 6  # a loop holds in the adjustment with at least this many of its matches as tracks
MIN_LOOP_FIT_SHARE = 0.5  # ... and when at least this share of them fits the poses it left
LOSS_SCALE_PX = 1.5  # the adjustment's Huber scale (the window SfM's)
# Observations the adjustment holds at most: time and memory grow with them, and a long video has
# millions (docs/benchmarks.md, "The final adjustment's budget"); over it, each keyframe's longest
# tracks up to this many come first, so that none is left loose.
MAX_OBSERVATIONS = 4_000_000
BUDGET_POINTS_PER_VIEW = 50
RADIAL_MIN_PX = 1.5  # a lens bending the image corner less than this is taken for a pinhole
MIN_LENS_VIEWS = 8  # fewer views, and a radial coefficient fits what the poses and focal length should


def final_bundle_adjustment(writer: OutputWriter, segment: int, frame_window: dict[int, int],
                            cache=None, fallback_points=None, refine_focal: bool = False,
                            exclude_frames=(), loops=(), loop_pairs=(), on_adjusted=None,
                            max_observations: int = MAX_OBSERVATIONS,
                            tracked_observations: int = OBSERVATIONS_IN_ADJUSTMENT, lens: bool = True) -> dict:
    """Adjust the run in ``writer``'s folder (segment ``segment``) and move its outputs; returns the
    run.json record. ``frame_window``: frame index -> window it was posed in; ``cache`` (a
    ``memory.gaussians.GaussianCache``) or ``fallback_points`` (the sink's ``VoxelCloud``) follow;
    ``refine_focal``: the intrinsics were self-calibrated, so the focal length is adjusted too;
    ``exclude_frames``: frame indices whose tracks do not hold their pose (relocated frames); ``loops``:
    the accepted loop closures (run.json ``loop_closure.loops`` records: ``query_window``, ``query_frame``,
    ``match_frame``, ``moved``); ``loop_pairs``: their matches (``align.globalmap.LoopPairs``);
    ``on_adjusted(moves, focal_px)``: called once the outputs moved, with each frame's correction
    (frame index -> ``Sim3``) and the one focal length (model pixels) every keyframe now has (None when it
    was not refined), so the keyframes a saved map is made of follow; it returns how many did
    (``map_keyframes_moved``); ``max_observations``: above this many the adjustment holds a budget of the
    points (``_within_budget``), the others follow their window; ``tracked_observations``: each tracked
    frame joins the adjustment with at most this many of its observations (``tracked_views``; 0: none
    joins), within ``max_observations``; ``lens``: a radial distortion coefficient may be estimated
    (``_with_lens``)."""
    from align.bundle import bundle_adjust

    started = time.perf_counter()
    record: dict = {"applied": False, "segment": int(segment)}
    frames = [f for f in writer.posed_frames() if f.segment == segment]
    windows_here = {frame_window[f.index] for f in frames if f.index in frame_window}
    closed = [loop for loop in loops if loop.get("moved", True) and loop.get("query_window") in windows_here]
    sparse = read_sparse(writer.out_dir, segment)
    if sparse.num_points == 0:
        return _skip(record, started, "no sparse tracks (the window model wrote none)")
    shared = _shared_camera(sparse.K) if refine_focal else None
    if refine_focal and shared is None:
        record["focal"] = {"refined": False, "why": "the keyframes' principal points differ (not one camera)"}
    refine = shared is not None
    # Tracks are checked with the K each keyframe was solved with (its observations agree with that
    # one); a focal-refining adjustment then starts every view from the shared camera.
    excluded = sorted({int(i) for i in exclude_frames} & {f.index for f in frames})
    scene, kept = _scene([f for f in frames if f.index not in excluded], sparse, segment, writer.out_dir)
    if scene is None or len(scene.views) < MIN_KEYFRAMES:
        n = 0 if scene is None else len(scene.views)
        return _skip(record, started, f"{n} keyframes with tracks (at least {MIN_KEYFRAMES} needed)")
    point_window = np.full(scene.num_points, -1, np.int64) if sparse.point_window is None else \
        np.asarray(sparse.point_window, np.int64)[kept]
    cross, by_matches = _with_relocated(scene, point_window, frames, excluded, sparse.K, loop_pairs)
    if by_matches:
        record["frames_held_by_loop_matches"] = by_matches
    if len(excluded) > len(by_matches):
        record["frames_left_out"] = [i for i in excluded if i not in by_matches]
    scene = cross.scene
    untied = _untied_windows(scene, None if sparse.point_window is None else cross.point_window)
    if untied:
        record["windows_untied"] = untied
        return _skip(record, started, f"the tracks of window(s) {', '.join(map(str, untied))} share fewer than two "
                                      "keyframes with the rest of this world, and no loop or link matches merge "
                                      "them with it (a segment re-attached across a gap): the pose graph placed "
                                      "them, and the adjustment would let them float")
    unheld = _unheld_loops(closed, cross.held)
    if unheld:
        return _skip(record, started, f"{len(unheld)} loop closures moved this world's windows and have no tracks "
                                      "to hold them: the adjustment would open the loops again")
    scene, held = _within_budget(cross, max_observations)
    if held is not None:
        record["budget"] = {"points_held": int(len(held)), "of_points": int(cross.scene.num_points),
                            "observations_held": int(len(scene.obs_point)),
                            "of_observations": int(len(cross.scene.obs_point))}
    record.update(images=len(scene.views), points=scene.num_points, observations=int(len(scene.obs_point)),
                  loop_tracks=cross.matches, tracks_merged=cross.merged, loops_held=len(cross.held),
                  loop_matches={"merged": cross.merged, "extended": cross.extended, "two_view": cross.two_view,
                                "shared": cross.shared})
    lens_start = _shared_lens(scene) if refine else 0.0
    if refine:
        own = _mean_error(scene)
        scene_shared = replace(scene, views=[replace(v, K=shared[v.index], radial_k1=lens_start) for v in scene.views])
        start = _mean_error(scene_shared)
        if start > own + LOSS_SCALE_PX:
            focals = sorted({round(float(K[0, 0]), 1) for K in sparse.K.values()})
            record["focal"] = {"refined": False, "focal_px": focals}
            return _skip(record, started, f"the windows self-calibrated apart (focal {focals[0]}-{focals[-1]} px): "
                                          f"one camera starts at {start:.2f} px mean error, their own at {own:.2f}")
        scene = scene_shared
    scene_row = _scene_rows(sparse.num_points, kept, cross, held)
    keyframes, observations = len(scene.views), len(scene.obs_point)
    if tracked_observations > 0:
        scene = tracked_views(scene, frames, read_held_tracks(writer.out_dir, segment), scene_row,
                              tracked_observations, max_observations - len(scene.obs_point),
                              scene.views[0].K if refine else None, lens_start)
    record["tracked_frames_held"] = len(scene.views) - keyframes
    record["tracked_observations_held"] = len(scene.obs_point) - observations
    try:
        adjusted = bundle_adjust(scene, refine_focal=refine)
    except Exception as exc:  # noqa: BLE001 - the run's outputs stay as they were
        return _skip(record, started, f"the adjustment failed: {type(exc).__name__}: {exc}")
    record.update(reprojection_before_px=round(adjusted.reprojection_before_px, 4),
                  reprojection_after_px=round(adjusted.reprojection_after_px, 4), points_lost=adjusted.points_lost)
    if adjusted.points_lost > MAX_LOST_SHARE * scene.num_points:
        return _skip(record, started, f"the adjustment sent {adjusted.points_lost} of {scene.num_points} points off")
    no_worse = adjusted.reprojection_after_px <= (1 + ROUND_OFF_SHARE) * adjusted.reprojection_before_px
    if not np.isfinite(adjusted.c2w).all() or not no_worse:
        return _skip(record, started, "the adjustment left the reprojection error worse")
    if not lens:
        record["lens"] = {"kept": False, "why": "not asked for (config final_ba_lens)"}
    elif len(scene.views) < MIN_LENS_VIEWS:
        record["lens"] = {"kept": False, "why": f"{len(scene.views)} views (a lens needs at least {MIN_LENS_VIEWS}: "
                                                "with fewer it trades with the focal length and the poses)"}
    elif _one_camera(scene):
        adjusted, record["lens"] = _with_lens(scene, adjusted, refine)
    else:
        record["lens"] = {"kept": False, "why": "the keyframes are not one pinhole camera with fx = fy"}
    if lens_start:
        record["lens"]["windows_k1"] = round(lens_start, 6)
    old = {v.index: v.c2w for v in scene.views}
    new = {v.index: adjusted.c2w[k] for k, v in enumerate(scene.views)}
    moves = frame_corrections(frames, old, new, frame_window, by_matches)
    depth = float(np.median(_track_depths(scene)))
    windows = window_corrections(frames, moves, frame_window, depth)
    in_scene = scene_row >= 0
    at_sparse = np.full((sparse.num_points, 3), np.nan)  # NaN: not adjusted (left out, or lost)
    at_sparse[in_scene] = adjusted.points[scene_row[in_scene]]
    # The points the budget left out keep their window's move, as lost ones do, and tracked frames are
    # then solved again on the adjusted points alone.
    points = _adjusted_points(sparse, kept, at_sparse[kept], windows)
    focal = float(scene.views[0].K[0, 0])
    target = focal * adjusted.focal_scale if refine else None
    resolved = resolve_tracked(frames, moves, read_held_tracks(writer.out_dir, segment),
                               points if held is None else at_sparse, target, adjusted.radial_k1)
    moves.update(resolved)
    record["frames_resolved"] = len(resolved)
    writer.move_frames(moves)
    for w in np.unique(sparse.point_window).tolist():
        writer.set_sparse_points(w, points[sparse.point_window == w])
    if refine:
        # Each window wrote its own focal length and the adjustment solved every keyframe with the one
        # camera: every window's frames take that camera's focal, not their own scaled.
        own = writer.sparse_focals(segment)
        writer.scale_focal(segment, adjusted.focal_scale, {w: target / f for w, f in own.items() if f > 0},
                           frame_window)
        record["focal"] = {"refined": True, "scale": round(adjusted.focal_scale, 6),
                           "focal_px_before": round(focal, 3), "focal_px_after": round(target, 3)}
        if own:
            record["focal"]["window_focal_px_before"] = [round(min(own.values()), 3), round(max(own.values()), 3)]
    if cache is not None:
        cache.move_windows(windows, segment)
    elif fallback_points is not None:
        fallback_points.move_windows(windows)
    if on_adjusted is not None:
        record["map_keyframes_moved"] = int(on_adjusted(moves, target))
    if adjusted.radial_k1:
        writer.set_radial(segment, adjusted.radial_k1)
    record.update(_pose_change(frames, moves), windows=len(windows), applied=True)
    record["seconds"] = round(time.perf_counter() - started, 4)
    log.info("final bundle adjustment: %d keyframes, %d points, reprojection %.3f -> %.3f px in %.1f s",
             len(scene.views), scene.num_points, adjusted.reprojection_before_px,
             adjusted.reprojection_after_px, record["seconds"])
    return record


def _shared_lens(scene) -> float:
    """The radial coefficient a shared camera starts from: the median of the keyframes' windows' own
    (``recon`` windows that self-calibrated through a lens), 0 when most keyframes' windows found none."""
    k1 = np.array([v.radial_k1 for v in scene.views], np.float64)
    return float(np.median(k1)) if len(k1) else 0.0


def _one_camera(scene) -> bool:
    """Whether every view of ``scene`` has one K with fx = fy (the camera a radial coefficient is added to)."""
    K = scene.views[0].K
    return K[0, 0] == K[1, 1] and all(np.array_equal(v.K, K) for v in scene.views)


def _with_lens(scene, adjusted, refine_focal: bool):
    """The pinhole adjustment ``adjusted`` of ``scene`` (its one camera's focal refined when
    ``refine_focal``) adjusted again with one radial coefficient, kept when that lens bends the image
    corner by at least ``RADIAL_MIN_PX`` without leaving the error worse or more points off (below
    that, the track noise decides the coefficient more than a lens does: the pinhole is kept). Returns
    the adjustment kept and its run.json record (``final_ba.lens``)."""
    from align.bundle import AdjustedScene, bundle_adjust

    K = np.array(scene.views[0].K, np.float64, copy=True)
    K[0, 0] = K[1, 1] = K[0, 0] * adjusted.focal_scale
    # one camera: windows held at one focal can each have adjusted their own lens (recon/default/lens_search.py)
    k1 = _shared_lens(scene)
    start = replace(scene, views=[replace(v, c2w=adjusted.c2w[k], K=K, radial_k1=k1) for k, v in enumerate(scene.views)],
                    points=np.where(np.isfinite(adjusted.points), adjusted.points, scene.points))
    try:
        again = bundle_adjust(start, LOSS_SCALE_PX, refine_focal=refine_focal, refine_radial=True)
    except Exception as exc:  # noqa: BLE001 - the pinhole adjustment stands
        return adjusted, {"kept": False, "why": f"{type(exc).__name__}: {exc}"}
    bend = radial_corner_shift_px(again.radial_k1, K[0, 0] * again.focal_scale, K[:2, 2])
    kept = (bend >= RADIAL_MIN_PX and np.isfinite(again.c2w).all()
            and again.points_lost <= MAX_LOST_SHARE * scene.num_points
            and again.reprojection_after_px <= (1 + ROUND_OFF_SHARE) * adjusted.reprojection_after_px)
    record = {"kept": bool(kept), "radial_k1": round(again.radial_k1, 6), "corner_px": round(float(bend), 3),
              "reprojection_after_px": round(again.reprojection_after_px, 4)}
    if not kept:
        return adjusted, record
    points = np.where(np.isfinite(adjusted.points)[:, :1], again.points, np.nan)
    return AdjustedScene(again.c2w, points, adjusted.reprojection_before_px, again.reprojection_after_px,
                         adjusted.focal_scale * again.focal_scale, int((~np.isfinite(points[:, 0])).sum()),
                         again.radial_k1), record


def _within_budget(cross, max_observations: int):
    """``cross.scene`` with at most about ``max_observations`` observations, and the rows of its points
    held (None: all of them). Over budget, the points the loops' and links' matches made or merged
    come first (they hold the loops), then each keyframe's ``BUDGET_POINTS_PER_VIEW`` longest tracks,
    then the longest overall (``stream4d.adjustment_budget``)."""
    scene = cross.scene
    if len(scene.obs_point) <= max_observations:
        return scene, None
    merged = np.bincount(cross.row_of, minlength=scene.num_points) > 1
    tied = np.nonzero(merged | (np.asarray(cross.point_window) < 0))[0]
    held = budgeted_points(scene.obs_point, scene.obs_view, BUDGET_POINTS_PER_VIEW, scene.num_points,
                           max_observations, first=tied)
    return scene.with_points(held), held


def _scene_rows(num_sparse: int, kept: np.ndarray, cross, held: np.ndarray | None) -> np.ndarray:
    """Each sparse point's row of the adjusted scene's points (int64 [num_sparse]; -1: not in it), through
    the rows the tracks kept (``kept``), the loops' merges (``cross.row_of``) and the budget (``held``)."""
    rows = np.full(num_sparse, -1, np.int64)
    rows[kept] = cross.row_of
    if held is not None:
        renumber = np.full(cross.scene.num_points + 1, -1, np.int64)  # the last entry takes the -1 rows
        renumber[held] = np.arange(len(held))
        rows = renumber[rows]
    return rows


def _skip(record: dict, started: float, reason: str) -> dict:
    log.warning("final bundle adjustment skipped: %s", reason)
    record.update(skipped=reason, seconds=round(time.perf_counter() - started, 4))
    return record


def _shared_camera(K_of: dict[int, np.ndarray]) -> dict[int, np.ndarray] | None:
    """Every keyframe's K (model pixels) replaced by one: the median focal length, the common principal
    point; None when the principal points differ (images of several sizes are not one camera)."""
    if not K_of:
        return None
    Ks = np.stack([np.asarray(K, np.float64) for K in K_of.values()])
    if np.ptp(Ks[:, 0, 2]) > 0.5 or np.ptp(Ks[:, 1, 2]) > 0.5:
        return None
    shared = Ks[0].copy()
    shared[0, 0] = shared[1, 1] = float(np.median(np.concatenate([Ks[:, 0, 0], Ks[:, 1, 1]])))
    shared[0, 1] = 0.0
    return {index: shared for index in K_of}


def _scene(frames: list[PosedFrame], sparse, segment: int, out_dir: Path):
    """The keyframes (posed by a window, with tracks; each with the K it was solved with) and the tracks they
    see, as an export scene."""
    keys = [f for f in frames if f.pose_kind in (POSE_POSED, POSE_ROTATION_ONLY) and f.index in sparse.K]
    views = [replace(ExportView.without_image(f, sparse.K[f.index]), radial_k1=sparse.radial.get(f.index, 0.0))
             for f in keys]
    for _ in range(3):  # leaving a view out can leave another with too few tracks
        if not views:
            return None, None
        scene, kept = scene_from_tracks(views, sparse, segment, out_dir)
        seen = np.bincount(scene.obs_view, minlength=len(views))
        if (seen >= MIN_VIEW_OBSERVATIONS).all():
            return scene, kept
        views = [v for v, n in zip(views, seen) if n >= MIN_VIEW_OBSERVATIONS]
    return scene_from_tracks(views, sparse, segment, out_dir) if views else (None, None)


def _with_relocated(scene, point_window, frames, relocated, K_of, loop_pairs):
    """The loops' and links' matches entered (``cross_tracks``), with the ``relocated`` frames as views
    held by those matches alone: their window's tracks were triangulated with the pose the relocation
    replaced, the loop's matches are what placed them. A frame whose matches give it fewer than
    ``MIN_VIEW_OBSERVATIONS`` observations would float: then they are all left out. Returns the
    ``CrossTracks`` and the relocated frames it holds."""
    def enter(s):
        return with_cross_tracks(s, point_window, loop_pairs, 2 * LOSS_SCALE_PX, MIN_LOOP_TRACKS, MIN_LOOP_FIT_SHARE)

    extra = [ExportView.without_image(f, K_of[f.index]) for f in frames if f.index in relocated and f.index in K_of]
    if extra:
        cross = enter(replace(scene, views=scene.views + extra))
        seen = np.bincount(cross.scene.obs_view, minlength=len(cross.scene.views))[len(scene.views):]
        if len(seen) and seen.min() >= MIN_VIEW_OBSERVATIONS:
            return cross, [v.index for v in extra]
    return enter(scene), []


def _unheld_loops(closed: list[dict], held: set) -> list[dict]:
    """The loops of ``closed`` (run.json records) that nothing in the adjustment holds: not their own
    matches (``held``: (query frame, match frame) pairs), nor a path of held loops from the query's
    window to the match's window or a neighbour of it (neighbours are tied by the frames they share):
    windows so joined are tied by tracks around that cycle, and cannot drift back apart."""
    def key(loop):
        return loop.get("query_frame"), loop.get("match_frame")

    from scipy.cluster.hierarchy import DisjointSet

    tied = DisjointSet()
    for loop in closed:
        q, m = loop.get("query_window"), loop.get("match_window")
        if key(loop) in held and None not in (q, m):
            tied.add(q)
            tied.add(m)
            tied.merge(q, m)

    def joined(loop) -> bool:
        q, m = loop.get("query_window"), loop.get("match_window")
        return q in tied and m is not None and any(
            m + d != q and m + d in tied and tied.connected(q, m + d) for d in (-1, 0, 1))

    return [loop for loop in closed if key(loop) not in held and not joined(loop)]


def _untied_windows(scene, point_window: np.ndarray | None) -> list[int]:
    """Windows whose tracks (``point_window`` [P]: each scene point's window, -1 for a match's two-view
    track, which ties no window) share fewer than two views with the largest group of windows so tied:
    one shared view leaves a window's scale free about that camera, none its whole place. Such a window
    was placed by a pose-graph edge no track carries."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    if point_window is None:
        return []
    own = point_window[scene.obs_point] >= 0  # a match's two-view track belongs to no window
    if not own.any():
        return []
    windows, row = np.unique(point_window[scene.obs_point][own], return_inverse=True)
    sees = csr_matrix((np.ones(len(row)), (row, scene.obs_view[own])), shape=(len(windows), len(scene.views)))
    sees.sum_duplicates()
    sees.data[:] = 1.0  # a window sees a view, however many of its tracks do
    shared = (sees @ sees.T).toarray()  # views each pair of windows both see
    _, group = connected_components(csr_matrix(shared >= 2), directed=False)
    views_seen = np.asarray(sees.sum(axis=1)).ravel()
    largest = np.argmax(np.bincount(group, weights=views_seen))
    return [int(w) for w in windows[group != largest]]


def _mean_error(scene) -> float:
    """Mean reprojection error (px) of the scene's observations in front of their cameras."""
    errors = scene.reprojection_errors()
    errors = errors[np.isfinite(errors)]
    return float(errors.mean()) if errors.size else float("inf")


def _track_depths(scene) -> np.ndarray:
    w2c = np.linalg.inv(np.stack([v.c2w for v in scene.views]))[scene.obs_view]
    z = np.einsum("nj,nj->n", w2c[:, 2, :3], scene.points[scene.obs_point]) + w2c[:, 2, 3]
    return z[z > 0] if (z > 0).any() else np.ones(1)


def frame_corrections(frames: list[PosedFrame], old: dict[int, np.ndarray], new: dict[int, np.ndarray],
                      frame_window: dict[int, int] | None = None, not_anchors=()) -> dict[int, Sim3]:
    """Per frame index, the rigid world-frame motion taking its pose to the adjusted one: exact for
    the adjusted keyframes (``old``/``new``: index -> c2w [4, 4]), and for the others interpolated by
    index between the corrections of the adjusted keyframes before and after it (the nearest at the ends).

    A frame between keyframes was posed from its own window's views (``frame_window``: frame index ->
    window), and a keyframe another window wrote may sit apart from that window's view of it: so the
    anchors are the adjusted keyframes of the frame's own window where it has any. ``not_anchors``
    (relocated frames) anchor no other frame: a relocated pose is one PnP of its own, not its window's,
    and its correction undoes that PnP's error rather than telling how the window moved.

    A pose that was blended from its neighbours' (an interpolated frame; a rotation-only keyframe's
    centre) is blended again from where they went (``_reinterpolated``)."""
    delta = {i: rigid_motion(new[i], old[i]) for i in new}
    usable = sorted(set(new) - {int(i) for i in not_anchors}) or sorted(new)
    window_of = frame_window or {}
    grouped: dict[int | None, list[int]] = {}
    for i in usable:
        grouped.setdefault(window_of.get(i), []).append(i)
    by_window = {w: np.array(ks, np.int64) for w, ks in grouped.items()}
    everywhere = np.array(usable, np.int64)
    moves = {}
    for f in frames:
        if f.index in delta:
            moves[f.index] = delta[f.index]
            continue
        keys = by_window.get(window_of[f.index], everywhere) if f.index in window_of else everywhere
        j = int(np.searchsorted(keys, f.index))
        if j == 0 or j == len(keys):
            moves[f.index] = delta[int(keys[min(j, len(keys) - 1)])]
            continue
        a, b = int(keys[j - 1]), int(keys[j])
        moves[f.index] = _interpolate(delta[a], delta[b], (f.index - a) / (b - a))
    return _reinterpolated(frames, moves, set(new))


def _reinterpolated(frames: list[PosedFrame], moves: dict[int, Sim3], adjusted) -> dict[int, Sim3]:
    """``moves`` changed where a pose was not measured but blended from its neighbours', so that it is
    blended again from where they went (by timestamp, ``recon.tracking.interpolate_pose``):

    - a rotation-only keyframe the adjustment did not hold (not in ``adjusted``) has a measured rotation
      but no measured centre (its window kept the camera where it last had one): its centre goes to the
      blend of the moved centres of the posed frames on either side, its rotation keeps its move;
    - an interpolated frame (tracking could not pose it) was blended from the keyframes on either side
      (posed or rotation-only): it goes to the blend of their moved poses.

    A frame without such a neighbour on each side keeps its move."""
    from recon.tracking import interpolate_pose

    ordered = sorted(frames, key=lambda f: f.index)

    def moved(f: PosedFrame) -> np.ndarray:
        return moves[f.index].apply_c2w(f.c2w)

    def blend(kinds: tuple[str, ...], kind: str) -> None:
        keys = [k for k in ordered if k.pose_kind in kinds and k.index in moves]
        at = np.array([k.index for k in keys], np.int64)
        for f in ordered:
            if f.pose_kind != kind or f.index not in moves or f.index in adjusted:
                continue
            j = int(np.searchsorted(at, f.index))
            if j == 0 or j == len(at):
                continue
            a, b = keys[j - 1], keys[j]
            u = 0.5 if b.timestamp <= a.timestamp else (f.timestamp - a.timestamp) / (b.timestamp - a.timestamp)
            there = interpolate_pose(moved(a), moved(b), u)
            if kind == POSE_ROTATION_ONLY:
                there[:3, :3] = moved(f)[:3, :3]
            moves[f.index] = rigid_motion(there, f.c2w)

    blend((POSE_POSED,), POSE_ROTATION_ONLY)
    blend((POSE_POSED, POSE_ROTATION_ONLY), POSE_INTERPOLATED)
    return moves


def _interpolate(a: Sim3, b: Sim3, u: float) -> Sim3:
    qa, qb = quat_wxyz(a.R), quat_wxyz(b.R)
    if qa @ qb < 0:
        qb = -qb
    angle = np.arccos(np.clip(qa @ qb, -1.0, 1.0))
    if angle < 1e-9:
        q = qa
    else:
        q = (np.sin((1 - u) * angle) * qa + np.sin(u * angle) * qb) / np.sin(angle)
    return Sim3(1.0, rotation_from_quat_wxyz(q / np.linalg.norm(q)), (1 - u) * a.t + u * b.t)


def window_corrections(frames: list[PosedFrame], moves: dict[int, Sim3], frame_window: dict[int, int],
                       depth: float) -> dict[int, Sim3]:
    """Per window, the Sim(3) that best moves the scene its frames see: fitted to probe points in
    front of each of its frames (the camera centre and points ``depth`` ahead and beside), each moved
    by that frame's correction."""
    probe = depth * np.array([[0, 0, 0], [0, 0, 1], [0.5, 0, 1], [-0.5, 0, 1], [0, 0.5, 1], [0, -0.5, 1]], float)
    src: dict[int, list] = {}
    dst: dict[int, list] = {}
    for f in frames:
        w = frame_window.get(f.index)
        if w is None or f.index not in moves:
            continue
        pts = probe @ f.c2w[:3, :3].T + f.c2w[:3, 3]
        src.setdefault(w, []).append(pts)
        dst.setdefault(w, []).append(moves[f.index].apply(pts))
    return {w: umeyama(np.concatenate(src[w]), np.concatenate(dst[w])) for w in src}


def _adjusted_points(sparse, kept: np.ndarray, adjusted: np.ndarray, windows: dict[int, Sim3]) -> np.ndarray:
    """Every sparse point (float64 [P, 3], ``sparse.points``' rows) where the adjustment put it (``adjusted``,
    the rows ``kept``), or moved with its window (``windows``) where it was not adjusted or was lost."""
    points = np.array(sparse.points, np.float64, copy=True)
    for w in np.unique(sparse.point_window).tolist():
        rows = sparse.point_window == w
        if w in windows:
            points[rows] = windows[w].apply(points[rows])
    adjusted_ok = np.isfinite(adjusted).all(axis=1)  # a point the adjustment lost keeps its window's move
    points[kept[adjusted_ok]] = adjusted[adjusted_ok]
    return points


def _pose_change(frames: list[PosedFrame], moves: dict[int, Sim3]) -> dict:
    """How far the frames moved: camera centre shift (world units and share of the trajectory's
    extent) and rotation change (degrees), median and max."""
    moved = [f for f in frames if f.index in moves]
    if not moved:
        return {"frames_moved": 0}
    before = np.stack([f.c2w for f in moved])
    after = np.stack([moves[f.index].apply_c2w(f.c2w) for f in moved])
    shift = np.linalg.norm(after[:, :3, 3] - before[:, :3, 3], axis=1)
    turn = rotation_angle_deg(np.einsum("nij,nkj->nik", after[:, :3, :3], before[:, :3, :3]))
    centres = before[:, :3, 3]
    extent = float(np.linalg.norm(centres.max(0) - centres.min(0))) or 1.0
    return {"frames_moved": len(moved),
            "shift_median": round(float(np.median(shift)), 6), "shift_max": round(float(shift.max()), 6),
            "shift_median_of_extent": round(float(np.median(shift)) / extent, 6),
            "shift_max_of_extent": round(float(shift.max()) / extent, 6),
            "rotation_median_deg": round(float(np.median(turn)), 4),
            "rotation_max_deg": round(float(turn.max()), 4)}
