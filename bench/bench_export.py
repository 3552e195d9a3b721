"""The COLMAP export against pycolmap: read back, reprojection error, and what pycolmap's own
bundle adjustment does to the poses.

For each real set in ../shared/data the frames are resized once to 512 px (bench/common.py,
known intrinsics), reconstructed with ``stream4d.pipeline.reconstruct`` (default backend,
Gaussian cache and rerun recording off) and exported with ``stream4d.export`` (COLMAP binary).
Then, with pycolmap:

read back    ``pycolmap.Reconstruction(model)``: image, camera and point counts; the largest
             difference between its world-to-camera matrices and the inverse of our
             trajectory.json poses; the largest difference between its camera parameters and
             our intrinsics (+0.5 px: COLMAP puts pixel centres at half-integers).
reprojection ``Reconstruction.compute_mean_reprojection_error()`` (mean over points of each
             track's mean error, px at 512 px).
BA           ``pycolmap.bundle_adjustment`` of every point and pose of the exported model with
             the cost our window SfM minimises (Huber loss at 1.5 px, intrinsics fixed: the sets'
             cameras are known and our run used them); ATE against the set's cameras.json before
             and after. Two more columns: pycolmap's default squared loss, and Huber with the
             focal length refined too.
retri. + BA  every track re-triangulated by ``pycolmap.estimate_triangulation`` (LO-RANSAC,
             outlier observations removed) from the exported poses, then the same adjustment.

    python bench/bench_export.py
    python bench/bench_export.py --sets kitti_seq1,llff_fern --write-docs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script: bench/common.py

from common import (  # noqa: E402
    DEFAULT_SETS,
    calibration_ms,
    markdown_table,
    parse_sets,
    prepare_working_set,
    write_docs_section,
)

from stream4d.evaluation import evaluate_trajectory  # noqa: E402
from stream4d.outputs import PosedFrame, read_cameras_json, read_trajectory_json  # noqa: E402

SECTION = "bench_export"


@dataclass
class ExportResult:
    name: str
    frames: int
    images: int
    points: int
    observations: int
    pose_diff: float  # largest |pycolmap w2c - inv(our c2w)| entry
    intrinsics_diff: float  # largest |pycolmap params - (our K + 0.5 on the principal point)|, px
    reproj_px: float  # pycolmap's mean reprojection error of the exported model
    ate: float  # ours, reference units
    ate_ba: float  # after pycolmap BA
    ate_retri_ba: float  # after re-triangulation + BA
    ate_ba_trivial: float  # after BA with a squared loss (pycolmap's default)
    ate_ba_focal: float  # after BA that also refines the focal length
    reproj_ba_px: float
    reproj_retri_ba_px: float
    units: str
    seconds: float
    frame_ms: float  # writing one frames/<index>.jpg (JPEG encode + atomic write)
    frame_kib: float  # its size


def colmap_poses(rec) -> dict[str, np.ndarray]:
    """Image name -> c2w [4, 4] of a pycolmap reconstruction."""
    out = {}
    for im in rec.images.values():
        w2c = np.eye(4)
        w2c[:3] = im.cam_from_world().matrix()
        out[im.name] = np.linalg.inv(w2c)
    return out


def ate_of(rec, ours: list[PosedFrame], gt: list[PosedFrame]) -> float:
    """ATE RMSE of ``rec``'s poses (frames named <index:06d>.jpg) against ``gt``, matched by input image."""
    poses = colmap_poses(rec)
    pred = [replace(f, c2w=poses[f"{f.index:06d}.jpg"]) for f in ours if f"{f.index:06d}.jpg" in poses]
    return float(evaluate_trajectory(pred, gt, match="image").ate_rmse)


def retriangulate(rec) -> None:
    """Every track re-triangulated from its observations by pycolmap (LO-RANSAC); outlier
    observations and points it cannot triangulate are removed."""
    import pycolmap

    for pid in list(rec.points3D.keys()):
        p = rec.points3D[pid]
        elems = [(el.image_id, el.point2D_idx) for el in p.track.elements]
        xy = np.array([rec.images[i].points2D[j].xy for i, j in elems])
        cams = [rec.images[i].cam_from_world() for i, _ in elems]
        cameras = [rec.cameras[rec.images[i].camera_id] for i, _ in elems]
        est = pycolmap.estimate_triangulation(xy, cams, cameras)
        if est is None or int(np.sum(est["inliers"])) < 2:
            rec.delete_point3D(pid)
            continue
        p.xyz = est["xyz"]
        for (i, j), inlier in zip(elems, est["inliers"]):
            if not inlier:
                rec.delete_observation(i, j)


def bundle_adjust(rec, refine_focal: bool = False, loss: str = "HUBER", loss_scale_px: float = 1.5) -> None:
    """pycolmap's global bundle adjustment of every point and pose. By default it minimises what our
    window SfM minimises (Huber loss at 1.5 px, intrinsics fixed: the sets' cameras are known and our
    runs used them as they are)."""
    import pycolmap

    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.refine_focal_length = refine_focal
    options.refine_extra_params = False
    options.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, loss)
    options.ceres.loss_function_scale = loss_scale_px
    pycolmap.bundle_adjustment(rec, options)
    rec.update_point_3d_errors()


def frame_saving(out: Path, work: Path) -> tuple[float, float]:
    """Milliseconds and KiB per frame of what the run spends on ``frames/``: its saved frames
    written again by ``OutputWriter.write_frame_image``."""
    import cv2

    from stream4d.outputs import OutputWriter, read_frame_images

    records = list(read_frame_images(out).values())
    images = [cv2.imread(str(r.path))[..., ::-1].copy() for r in records]
    writer = OutputWriter(work / "frames-again")
    start = time.perf_counter()
    for r, image in zip(records, images):
        writer.write_frame_image(r.index, image, r.pixel_map)
    ms = 1000 * (time.perf_counter() - start) / len(images)
    writer.close()
    return ms, sum(r.path.stat().st_size for r in records) / len(records) / 1024


def run_set(name: str, work: Path, window: int = 20) -> ExportResult:
    import pycolmap

    from stream4d.export import export, load_scene
    from stream4d.pipeline import ReconstructConfig, reconstruct

    ws = prepare_working_set(name, work / "set", 512)
    out = work / "out"
    start = time.perf_counter()
    config = ReconstructConfig(gaussians=False, rrd=False).override({"align.window": window})
    reconstruct(ws.root, out, config, progress=False)
    model = export(out, "colmap", work / "colmap") / "sparse" / "0"
    seconds = time.perf_counter() - start
    scene = load_scene(out)
    ours = read_trajectory_json(out / "trajectory.json")
    gt = read_cameras_json(ws.cameras_json)
    rec = pycolmap.Reconstruction(str(model))
    by_name = {v.name: v for v in scene.views}
    pose_diff = intr_diff = 0.0
    for im in rec.images.values():
        v = by_name[im.name]
        pose_diff = max(pose_diff, float(np.abs(im.cam_from_world().matrix() - np.linalg.inv(v.c2w)[:3]).max()))
        cam = rec.cameras[im.camera_id]
        fx, fy, cx, cy = v.K[0, 0], v.K[1, 1], v.K[0, 2] + 0.5, v.K[1, 2] + 0.5
        want = [fx, cx, cy] if cam.model == pycolmap.CameraModelId.SIMPLE_PINHOLE else [fx, fy, cx, cy]
        intr_diff = max(intr_diff, float(np.abs(np.asarray(cam.params) - want).max()))
    ate = float(evaluate_trajectory(ours, gt, match="image").ate_rmse)
    reproj = rec.compute_mean_reprojection_error()
    ba = pycolmap.Reconstruction(str(model))
    bundle_adjust(ba)
    retri = pycolmap.Reconstruction(str(model))
    retriangulate(retri)
    bundle_adjust(retri)
    trivial = pycolmap.Reconstruction(str(model))
    bundle_adjust(trivial, loss="TRIVIAL")
    focal = pycolmap.Reconstruction(str(model))
    bundle_adjust(focal, refine_focal=True)
    frame_ms, frame_kib = frame_saving(out, work)
    return ExportResult(name, len(ours), rec.num_images(), rec.num_points3D(),
                        sum(p.track.length() for p in rec.points3D.values()), pose_diff, intr_diff, reproj, ate,
                        ate_of(ba, ours, gt), ate_of(retri, ours, gt), ate_of(trivial, ours, gt),
                        ate_of(focal, ours, gt), ba.compute_mean_reprojection_error(),
                        retri.compute_mean_reprojection_error(), ws.spec.units, seconds, frame_ms, frame_kib)


def report(results: list[ExportResult], calib: float) -> str:
    rows = []
    for r in results:
        def change(a: float, base: float = r.ate) -> str:
            return f"{a:.4g} ({100 * (a - base) / base:+.1f} %)"

        rows.append([r.name, f"{r.images}/{r.frames}", r.points, r.observations, f"{r.pose_diff:.1e}",
                     f"{r.intrinsics_diff:.1e}", f"{r.reproj_px:.3f}", f"{r.ate:.4g} {r.units}", change(r.ate_ba),
                     f"{r.reproj_ba_px:.3f}", change(r.ate_retri_ba), f"{r.reproj_retri_ba_px:.3f}",
                     change(r.ate_ba_trivial), change(r.ate_ba_focal)])
    table = markdown_table(["set", "images / posed", "points", "observations", "max pose diff",
                            "max intrinsics diff (px)", "reproj. (px)", "ATE ours", "ATE after BA",
                            "reproj. after BA", "ATE after retri. + BA", "reproj. after retri. + BA",
                            "ATE after BA, squared loss", "ATE after BA, focal refined"], rows)
    saving = ", ".join(f"{r.name} {r.frame_ms:.1f} ms and {r.frame_kib:.0f} KiB" for r in results)
    return (f"{table}\n\nSaving the frames the exports need (`frames/<index>.jpg`, JPEG quality 95, at "
            f"model resolution) costs per frame: {saving}.\n\nSIFT calibration {calib:.0f} ms. Pose diff: largest entry of |pycolmap's world-to-camera "
            "[3x4] - inverse of our c2w|. Reprojection: pycolmap's `compute_mean_reprojection_error` (mean over "
            "points of each track's mean), px at 512 px. ATE RMSE against the set's cameras.json after a Sim(3) "
            "(`stream4d.evaluation.evaluate_trajectory`); in brackets the change from ours.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(DEFAULT_SETS), help="comma list of sets or 'all'")
    ap.add_argument("--window", type=int, default=20, help="reconstruct's --window (default 20)")
    ap.add_argument("--write-docs", action="store_true", help=f"write the table into docs/benchmarks.md ({SECTION}, "
                    f"{SECTION}_window<N> with another --window)")
    args = ap.parse_args(argv)
    results = []
    calib = calibration_ms()
    for name in parse_sets(args.sets):
        with tempfile.TemporaryDirectory(prefix=f"bench-export-{name}-") as tmp:
            r = run_set(name, Path(tmp), args.window)
        results.append(r)
        print(f"{name}: {r}", flush=True)
    body = report(results, calib)
    print(body)
    if args.write_docs and args.window != 20:
        header = (f"### The same with `--window {args.window}`\n\n"
                  f"    python bench/bench_export.py --sets {args.sets} --window {args.window} --write-docs\n\n"
                  "With every frame in one window, our poses come from one adjustment; the change pycolmap's "
                  "adjustment makes then is what is left between windows in the table above.\n\n")
        write_docs_section(f"{SECTION}_window{args.window}", header + body)
    elif args.write_docs:
        header = (
            "## Exports: the COLMAP model read back by pycolmap (`bench/bench_export.py`)\n\n"
            "    python bench/bench_export.py --write-docs\n\n"
            "Each set at 512 px with its known intrinsics, `reconstruct` with the Gaussian cache and recording "
            "off, then `stream4d export --format colmap`; pycolmap reads the model back, reports its mean "
            "reprojection error, and bundle-adjusts it (every point and pose at once, intrinsics fixed, Huber "
            "loss at 1.5 px as our window SfM uses; *retri.*: every track re-triangulated by "
            "`pycolmap.estimate_triangulation` first). Our windows are adjusted one at a time and chained by "
            "Sim(3); one adjustment over all windows also removes what the chaining left, which is where a "
            "multi-window run (KITTI, 3 windows) moves most. A squared loss lets the observations our 4 px "
            "bound keeps pull harder.\n\n")
        write_docs_section(SECTION, header + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
