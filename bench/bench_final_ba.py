"""``reconstruct --final-ba`` against the same run without it: ATE and the seconds it adds.

Each case is run twice by the CLI as a user runs it (``stream4d reconstruct IN --out OUT --gt
cameras.json --no-rrd``, with ``--no-final-ba`` and with ``--final-ba``, which is what a finite input
gets by default; other settings default, one process at a time); the ATE is
``stream4d.evaluation.evaluate_output`` of the output folder (what ``--gt`` prints) and the other
columns are run.json's ``final_ba`` record and ``timings_s.total``. Cases: the shared sets with their
cameras, the same sets as their images only (``hidden_*``: intrinsics self-calibrated, so the
adjustment refines the focal length too; the focal error against the set's cameras is reported) and
the demo clip.

    nice -n 5 python bench/bench_final_ba.py --write-docs
    nice -n 5 python bench/bench_final_ba.py --cases hidden_kitti_seq1,hidden_llff_fern,... --section bench_final_ba_hidden
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a plain script: bench/common.py

from common import DATA_ROOT, REPO_ROOT, markdown_table, write_docs_section  # noqa: E402

CASES = {  # name -> (input, cameras.json, units)
    "kitti_seq1": ("kitti_seq1", "kitti_seq1/cameras.json", "m"),
    "llff_fern": ("llff_fern", "llff_fern/cameras.json", "arbitrary"),
    "dtu_scan24": ("dtu_scan24", "dtu_scan24/cameras.json", "mm"),
    "strecha_fountain_p11": ("strecha_fountain_p11", "strecha_fountain_p11/cameras.json", "m"),
    "strecha_castle_p30": ("strecha_castle_p30", "strecha_castle_p30/cameras.json", "m"),
    "demo": ("demo", "demo", "m"),
}
HIDDEN = {  # set -> its image folder; case "hidden_<set>" is that folder alone
    "kitti_seq1": "image_l", "llff_fern": "images_4", "dtu_scan24": "images", "strecha_fountain_p11": "images",
    "strecha_castle_p30": "images",
}
CASES.update({f"hidden_{name}": (None, f"{name}/cameras.json", CASES[name][2]) for name in HIDDEN})


def case_paths(name: str, work: Path) -> tuple[Path, Path]:
    """The input and its cameras.json; a hidden_* case is a folder of links to the set's images only."""
    folder, cameras, _ = CASES[name]
    if name == "demo":
        return REPO_ROOT / "data" / "demo" / "demo.mp4", REPO_ROOT / "data" / "demo" / "cameras.json"
    if folder is None:
        dataset = name.removeprefix("hidden_")
        hidden = work / name
        hidden.mkdir(parents=True, exist_ok=True)
        for image in sorted((DATA_ROOT / dataset / HIDDEN[dataset]).iterdir()):
            link = hidden / image.name
            if not link.exists():
                link.symlink_to(image)
        return hidden, DATA_ROOT / cameras
    return DATA_ROOT / folder, DATA_ROOT / cameras


def run_case(name: str, work: Path) -> list[str]:
    from stream4d.evaluation import evaluate_output

    source, cameras = case_paths(name, work)
    ate, rel, runs = {}, {}, {}
    for mode, flags in (("without", ["--no-final-ba"]), ("with", ["--final-ba"])):
        out = work / f"{name}_{mode}"
        subprocess.run([sys.executable, "-m", "stream4d.cli", "reconstruct", str(source), "--out", str(out),
                        "--no-rrd", "--quiet", *flags], check=True, cwd=REPO_ROOT, capture_output=True)
        report = evaluate_output(out, cameras)["trajectory"]
        ate[mode], rel[mode] = report["ate_rmse"], report["ate_rmse_rel_extent"]
        runs[mode] = json.loads((out / "run.json").read_text())
    fb = runs["with"]["final_ba"]
    if not fb.get("applied"):
        return [name, f"{ate['without']:.4g} {CASES[name][2]}", "not applied: " + fb.get("skipped", "?")] + [""] * 8
    a, b = ate["without"], ate["with"]
    return [name, f"{a:.4g} {CASES[name][2]}", f"{b:.4g}", f"{100 * (b - a) / a:+.1f} %",
            f"{100 * rel['without']:.3f} % -> {100 * rel['with']:.3f} %", f"{fb['seconds']:.2f}",
            f"{runs['without']['timings_s']['total']:.1f} / {runs['with']['timings_s']['total']:.1f}",
            f"{fb['images']} / {fb['points']} / {fb['observations']}",
            f"{fb['reprojection_before_px']:.3f} -> {fb['reprojection_after_px']:.3f}",
            f"{100 * fb['shift_median_of_extent']:.2f} % / {100 * fb['shift_max_of_extent']:.2f} %, "
            f"{fb['rotation_max_deg']:.2f} deg", _focal_error(fb, runs["with"], cameras)]


def _focal_error(fb: dict, run: dict, cameras: Path) -> str:
    """The self-calibrated focal length's error against cameras.json, before -> after the adjustment."""
    focal, calib = fb.get("focal") or {}, run.get("intrinsics") or {}
    if not focal.get("refined") or "model_size" not in calib:
        return "fixed (given)" if not calib else f"fixed: {focal.get('why', '?')}"
    first = json.loads(cameras.read_text())["frames"][0]
    truth = first["K"][0][0] * calib["model_size"][0] / first["width"]
    return " -> ".join(f"{100 * (f / truth - 1):+.2f} %" for f in (focal["focal_px_before"], focal["focal_px_after"]))


HEADERS = ["case", "ATE without", "ATE with `--final-ba`", "change", "ATE / extent", "final BA (s)",
           "run (s) without / with", "keyframes / points / observations", "reproj. (px) before -> after",
           "frame change: median / max shift (of extent), max rotation", "focal error before -> after"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--write-docs", action="store_true", help="replace the section in docs/benchmarks.md")
    parser.add_argument("--section", default="bench_final_ba", help="the docs/benchmarks.md section to replace")
    args = parser.parse_args()
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="bench-final-ba-") as tmp:
        rows = []
        for name in names:
            rows.append(run_case(name, Path(tmp)))
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(HEADERS, rows)
    print(table)
    if args.write_docs:
        write_docs_section(args.section, table)


if __name__ == "__main__":
    main()
