"""A real video with no ground truth, against pycolmap on the same frames.

Decodes every frame of each video (PyAV; every N-th with ``--strides``), reconstructs them with pycolmap (SIFT, one shared
SIMPLE_RADIAL camera, sequential matching, incremental mapping; its largest model) and runs
``stream4d reconstruct VIDEO`` once per variant (intrinsics unknown):

- ``final``: the windows self-calibrate a pinhole, the final adjustment alone may add a lens
  (``model.sfm.lens_min_corner_px`` 0);
- ``windows``: the default, the windows adjust a radial coefficient with their focal length.

Neither side is the truth. Reported: frames each registers, the agreement of our trajectory with
pycolmap's (every frame both posed, ATE after one similarity as % of the diagonal of pycolmap's
camera centres' bounding box), each side's focal length over the longest image side, its radial
coefficient (both in normalised image coordinates), whether our final adjustment ran, and wall times.

    python bench/bench_video_peer.py ../shared/data/videos/great_wall.mp4 [--variants final,windows] [--strides 1,2,3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from stream4d.geometry import umeyama  # noqa: E402

VARIANTS = {"final": {"model": {"sfm": {"lens_min_corner_px": 0.0}}}, "windows": {}}


def decode(video: Path, dest: Path, stride: int = 1) -> tuple[int, int]:
    """Every ``stride``-th frame of ``video`` as ``dest/<decoded frame number:05d>.png``; returns (W, H)."""
    import av

    dest.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % stride == 0:
                image = frame.to_image()
                image.save(dest / f"{i:05d}.png")
    return image.size


def pycolmap_run(images: Path, work: Path) -> dict:
    """pycolmap's poses (frame index -> c2w [4, 4]), its camera (focal px, k1) and seconds."""
    import pycolmap

    pycolmap.logging.minloglevel = 2
    names = sorted(p.name for p in images.iterdir())
    started = time.perf_counter()
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = 2
    database = work / "database.db"
    pycolmap.extract_features(database, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              extraction_options=options)
    pycolmap.match_sequential(database)
    models = pycolmap.incremental_mapping(database, images, work / "sparse")
    seconds = time.perf_counter() - started
    if not models:
        return {"poses": {}, "focal_px": None, "k1": None, "seconds": seconds}
    model = max(models.values(), key=lambda m: m.num_reg_images())
    poses = {}
    for image in model.images.values():
        pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        w2c = np.eye(4)
        w2c[:3] = pose.matrix()
        poses[int(Path(image.name).stem)] = np.linalg.inv(w2c)
    camera = next(iter(model.cameras.values()))
    params = list(camera.params)
    return {"poses": poses, "focal_px": float(params[0]), "k1": float(params[3]) if len(params) > 3 else 0.0,
            "seconds": seconds}


def ours(video: Path, out: Path, variant: str, stride: int = 1) -> dict:
    config = out.with_suffix(".json")
    config.write_text(json.dumps(VARIANTS[variant]))
    exe = Path(sys.executable).with_name("stream4d")
    started = time.perf_counter()
    subprocess.run([str(exe), "reconstruct", str(video), "--out", str(out), "--no-rrd", "--no-gaussians", "--quiet",
                    "--config", str(config), "--stride", str(stride)], check=True)
    seconds = time.perf_counter() - started
    run = json.loads((out / "run.json").read_text())
    frames = json.loads((out / "trajectory.json").read_text())
    # keyed by the decoded frame number (``video.mp4#n``), as pycolmap's image names are
    poses = {int(f["image"].rsplit("#", 1)[1]): np.asarray(f["c2w"]) for f in frames["frames"]}
    final = run.get("final_ba") or {}
    lens = final.get("lens") or {}
    first = frames["frames"][0] if frames["frames"] else None  # K in pixels of the input's frames
    focal_rel = float(first["K"][0][0]) / max(first["width"], first["height"]) if first else None
    radial = (frames.get("radial_k1") or {}).get("0", 0.0)
    return {"poses": poses, "focal_rel": focal_rel, "k1": radial,
            "adjusted": bool(final.get("applied")), "lens_kept": bool(lens.get("kept")), "seconds": seconds}


def agreement(a: dict[int, np.ndarray], reference: dict[int, np.ndarray]) -> tuple[int, float]:
    shared = sorted(set(a) & set(reference))
    E = np.array([a[i][:3, 3] for i in shared])
    G = np.array([reference[i][:3, 3] for i in shared])
    extent = float(np.linalg.norm(np.ptp(np.array([p[:3, 3] for p in reference.values()]), axis=0)))
    err = np.linalg.norm(umeyama(E, G).apply(E) - G, axis=1)
    return len(shared), 100.0 * float(np.sqrt((err ** 2).mean())) / extent


def compare(video: Path, stride: int, work: Path, variants: list[str], rows: list, results: list) -> None:
    """pycolmap and each of our variants on every ``stride``-th frame of ``video``; appends table rows and results."""
    size = decode(video, work / "frames", stride)
    peer = pycolmap_run(work / "frames", work)
    frames = len(list((work / "frames").iterdir()))
    peer_focal = peer["focal_px"] / max(size) if peer["focal_px"] else None
    rows.append([video.name, stride, "pycolmap", f"{len(peer['poses'])}/{frames}", "-",
                 f"{peer_focal:.3f}" if peer_focal else "-", f"{peer['k1']:.3f}" if peer["k1"] is not None else "-",
                 "-", f"{peer['seconds']:.0f}"])
    for variant in variants:
        mine = ours(video, work / variant, variant, stride)
        both, ate = agreement(mine["poses"], peer["poses"]) if peer["poses"] else (0, float("nan"))
        results.append({"video": video.name, "stride": stride, "variant": variant, "frames": frames,
                        "posed": len(mine["poses"]), "both": both, "agreement_pct": ate,
                        "focal_rel": mine["focal_rel"], "k1": mine["k1"], "pycolmap_focal_rel": peer_focal,
                        "pycolmap_k1": peer["k1"], "pycolmap_posed": len(peer["poses"]), "adjusted": mine["adjusted"],
                        "seconds": mine["seconds"], "pycolmap_seconds": peer["seconds"]})
        rows.append([video.name, stride, f"ours, {variant}", f"{len(mine['poses'])}/{frames}",
                     f"{ate:.3f} ({both} frames)", f"{mine['focal_rel']:.3f}" if mine["focal_rel"] else "-",
                     f"{mine['k1']:.3f}", ("yes" if mine["adjusted"] else "no") + (", lens kept" if mine["lens_kept"] else ""),
                     f"{mine['seconds']:.0f}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--variants", default="final,windows", help="comma-separated, of " + ", ".join(VARIANTS))
    ap.add_argument("--strides", default="1", help="comma-separated: every N-th frame, for both sides")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="bench-video-peer-") as tmp:
        root = args.out or Path(tmp)
        for video in args.videos:
            for stride in (int(s) for s in args.strides.split(",")):
                compare(video, stride, root / f"{video.stem}_s{stride}", args.variants.split(","), rows, results)
    print(json.dumps(results))
    print(markdown_table(["video", "stride", "run", "posed", "ATE vs pycolmap, % of its path", "focal / longest side",
                          "k1", "final adjustment", "s"], rows))


if __name__ == "__main__":
    main()
