"""Self-calibration: ATE and focal error with the intrinsics hidden against the intrinsics known.

Cases (each run by the CLI in a subprocess, `stream4d reconstruct INPUT --out DIR --quiet --no-rrd`):

- the shared sets (kitti_seq1, llff_fern, dtu_scan24, strecha_fountain_p11, strecha_castle_p30;
  the Strecha sets have laser-calibrated principal points, 0.5 % of the longest side off centre): ``known`` is the
  dataset folder (cameras.json), ``hidden`` a folder of symlinks to its images only, ``stride2`` /
  ``stride2-known`` every second image without / with a cameras.json;
- the demo clip (data/demo): ``hidden`` is demo.mp4, ``known`` its frames as PNGs with cameras.json;
- synthetic clips rendered by ``stream4d synth`` (exact K), as a dataset folder and as images only.

Focal error: median over posed frames of fx (trajectory.json, input pixels) / reference fx - 1; and
the stream's final estimate (run.json ``intrinsics``) against the reference, with its sigma. Principal
point: each window's evidence (run.json ``intrinsics.windows``) against the reference, in its sigmas.
``--config`` runs every case with a config tree, e.g. the principal point moved where a window's
evidence is tight (``{"model": {"sfm": {"principal_point_gate": 0.25}}}``).

    PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python bench/bench_selfcalib.py \
        --cases kitti_seq1,llff_fern,dtu_scan24,strecha_fountain_p11,demo,synth --out /tmp/selfcalib.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stream4d.evaluation.report import evaluate_output  # noqa: E402
from stream4d.testdata import SHARED_DATA  # noqa: E402

REAL_SETS = ("kitti_seq1", "llff_fern", "dtu_scan24", "strecha_fountain_p11", "strecha_castle_p30")
# name -> `stream4d synth` arguments; forward motion is the ill-conditioned case for the focal length
SYNTH = {
    "synth_street_forward": ["--scene", "street", "--trajectory", "forward", "--frames", "40", "--seed", "3"],
    # 150 frames (15 s at 10 fps) down a straight street: nothing but translation, so no focal fits
    # better than another, and windows must say so
    "synth_street_drive": ["--scene", "street", "--trajectory", "forward", "--frames", "150", "--seed", "0"],
    "synth_room_forward": ["--scene", "room", "--trajectory", "forward", "--frames", "40", "--seed", "5",
                           "--fov", "50"],
    "synth_room_handheld": ["--scene", "room", "--trajectory", "handheld", "--frames", "40", "--seed", "7",
                            "--fov", "70"],
}


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "stream4d.cli", *args], capture_output=True, text=True, env=env)


def images_only(frames: list[dict], src_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in frames:
        os.symlink((src_dir / f["image"]).resolve(), dest / Path(f["image"]).name)
    return dest


def dataset_subset(cameras: dict, frames: list[dict], src_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    out = []
    for f in frames:
        name = Path(f["image"]).name
        os.symlink((src_dir / f["image"]).resolve(), dest / name)
        out.append(dict(f, image=name))
    (dest / "cameras.json").write_text(json.dumps(dict(cameras, frames=out)))
    return dest


def principal_offset_rel(frame: dict) -> np.ndarray:
    """A reference frame's principal point offset from its image centre over the longest side (x, y)."""
    K, W, H = np.asarray(frame["K"], np.float64), frame["width"], frame["height"]
    return (K[:2, 2] - [(W - 1) / 2, (H - 1) / 2]) / max(W, H)


def run_case(inp: Path, gt: Path, work: Path, label: str, config: Path | None = None) -> dict:
    out = work / f"out_{label}"
    t0 = time.perf_counter()
    extra = ["--config", str(config)] if config is not None else []
    proc = cli("reconstruct", str(inp), "--out", str(out), "--quiet", "--no-rrd", *extra)
    secs = time.perf_counter() - t0
    row: dict = {"case": label, "secs": round(secs, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
    try:
        rep = evaluate_output(out, gt)["trajectory"]
    except Exception as exc:  # noqa: BLE001 - a measurement: record and go on
        row["error"] = f"{type(exc).__name__}: {exc}"[:160]
        return row
    row.update(ate_pct=100 * rep["ate_rmse_rel_extent"], posed=rep["num_matched"], total=rep["num_gt"])
    ref = {Path(f["image"]).name.split("#")[-1]: f for f in json.loads(gt.read_text())["frames"]}
    traj = json.loads((out / "trajectory.json").read_text())["frames"]
    ratios = [f["K"][0][0] / ref[Path(f["image"]).name.split("#")[-1]]["K"][0][0]
              for f in traj if Path(f["image"]).name.split("#")[-1] in ref and f.get("K")]
    if ratios:
        row["focal_err_pct"] = 100 * (float(np.median(ratios)) - 1)
    run = json.loads((out / "run.json").read_text())
    cal = run.get("intrinsics")
    if cal:
        row["intrinsics"] = cal
        first = next(iter(ref.values()))
        true_rel = first["K"][0][0] / max(first["width"], first["height"])
        if cal.get("focal_rel"):
            row["stream_focal_err_pct"] = 100 * (cal["focal_rel"] / true_rel - 1)
        # What each window's observations say about the principal point against the reference's, in
        # units of the sigma they claim (|z| well above 1-2: the sigma is overconfident)
        if "width" in first and "height" in first:
            ref_pp = principal_offset_rel(first)
            row["principal_ref_rel"] = ref_pp.tolist()
            row["principal_z"] = [((np.asarray(w["principal_offset_rel"]) - ref_pp)
                                   / np.asarray(w["principal_sigma_rel"])).tolist()
                                  for w in cal.get("windows", []) if w.get("principal_sigma_rel")]
    row["windows"] = run["stats"]["windows"]
    return row


def real_cases(name: str, work: Path, stride2: bool) -> list[tuple[Path, Path, str]]:
    set_dir = SHARED_DATA / name
    gt = set_dir / "cameras.json"
    cams = json.loads(gt.read_text())
    frames = cams["frames"]
    cases = [(set_dir, gt, f"{name}/known"), (images_only(frames, set_dir, work / f"{name}_noK"), gt, f"{name}/hidden")]
    if stride2:
        sub = dataset_subset(cams, frames[::2], set_dir, work / f"{name}_s2K")
        cases += [(sub, sub / "cameras.json", f"{name}/stride2-known"),
                  (images_only(frames[::2], set_dir, work / f"{name}_s2"), sub / "cameras.json", f"{name}/stride2-hidden")]
    return cases


def demo_cases(work: Path) -> list[tuple[Path, Path, str]]:
    import av

    demo = REPO / "data" / "demo"
    cams = json.loads((demo / "cameras.json").read_text())
    dest = work / "demo_known"
    dest.mkdir()
    with av.open(str(demo / "demo.mp4")) as container:
        for n, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(dest / f"{n:06d}.png")
    frames = [dict(f, image=f"{int(f['image'].split('#')[1]):06d}.png") for f in cams["frames"]]
    (dest / "cameras.json").write_text(json.dumps(dict(cams, frames=frames)))
    return [(dest, dest / "cameras.json", "demo/known"), (demo / "demo.mp4", demo / "cameras.json", "demo/hidden")]


def synth_cases(work: Path) -> list[tuple[Path, Path, str]]:
    cases = []
    for name, args in SYNTH.items():
        dest = work / name
        proc = cli("synth", *args, "--out", str(dest))
        if proc.returncode != 0:
            raise RuntimeError(f"synth {name} failed: {proc.stderr[-300:]}")
        frames = json.loads((dest / "cameras.json").read_text())["frames"]
        cases += [(dest, dest / "cameras.json", f"{name}/known"),
                  (images_only(frames, dest, work / f"{name}_noK"), dest / "cameras.json", f"{name}/hidden")]
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join((*REAL_SETS, "demo", "synth")))
    ap.add_argument("--stride2", default="kitti_seq1,dtu_scan24", help="sets also run at every 2nd image")
    ap.add_argument("--only", default="", help="comma list of variants to keep (known,hidden,...)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--config", type=Path, default=None,
                    help="config tree for every run (stream4d reconstruct --config), e.g. "
                         '{"model": {"sfm": {"principal_point_gate": 0.25}}}')
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfcalib_"))
    stride2 = set(filter(None, args.stride2.split(",")))
    only = set(filter(None, args.only.split(",")))
    rows = []
    for case in filter(None, args.cases.split(",")):
        if case in REAL_SETS:
            todo = real_cases(case, work, case in stride2)
        elif case == "demo":
            todo = demo_cases(work)
        elif case == "synth":
            todo = synth_cases(work)
        else:
            raise SystemExit(f"unknown case {case!r}")
        for inp, gt, label in todo:
            if only and label.split("/")[1] not in only:
                continue
            row = run_case(inp, gt, work, label.replace("/", "__"), args.config)
            row["case"] = label
            rows.append(row)
            cal = row.get("intrinsics") or {}
            print(f"{label:36s} ATE {row.get('ate_pct', float('nan')):7.3f} %  posed {row.get('posed')}/"
                  f"{row.get('total')}  focal err {row.get('focal_err_pct', float('nan')):+7.2f} %  "
                  f"stream {row.get('stream_focal_err_pct', float('nan')):+7.2f} % "
                  f"+- {100 * (cal.get('focal_sigma_rel') or float('nan')):5.2f} %  fixed after window "
                  f"{cal.get('fixed_at_window')}  {row['secs']} s  {row.get('error', '')}", flush=True)
            if row.get("principal_z"):
                pz = "  ".join(f"({z[0]:+.1f}, {z[1]:+.1f})" for z in row["principal_z"])
                print(f"{'':36s} principal point: stream {cal.get('principal_point')}, per-window evidence "
                      f"against the reference (x, y) in its sigmas: {pz}", flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
