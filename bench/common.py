"""Helpers shared by the benchmarks in bench/.

- the real sets in ../shared/data and a working copy of one at a chosen
  resolution (``prepare_working_set``): images resized once, with a
  ``cameras.json`` whose K is rescaled, so every method reads the same pixels;
- timing with the peak resident memory of the timed block (``measure``);
- the machine and its load (``machine_info``, ``load_note``);
- Markdown tables and a named section of docs/benchmarks.md
  (``write_docs_section``), so several benchmarks share that file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import psutil

from stream4d.testdata import SHARED_DATA

DATA_ROOT = SHARED_DATA
REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_BENCHMARKS = REPO_ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class DatasetSpec:
    """One real set: its camera file (relative to DATA_ROOT) and the units of its reference poses."""

    name: str
    cameras: str
    units: str
    about: str


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("kitti_seq1", "kitti_seq1/cameras.json", "m", "driving, grey, 51 frames, forward motion"),
    DatasetSpec("llff_fern", "llff_fern/cameras.json", "arbitrary", "handheld, 20 frames of images_4 (1008x756)"),
    DatasetSpec("llff_fern_8", "llff_fern/cameras_images_8.json", "arbitrary",
                "handheld, 20 frames of images_8 (504x378)"),
    DatasetSpec("dtu_scan24", "dtu_scan24/cameras.json", "mm", "object, robot-arm sweep, 23 frames"),
    DatasetSpec("strecha_fountain_p11", "strecha_fountain_p11/cameras.json", "m", "facade, sideways walk, 11 frames"),
)}
# llff_fern_8 is the same capture as llff_fern: benchmarks default to the images_4 copy.
DEFAULT_SETS = ("kitti_seq1", "llff_fern", "dtu_scan24", "strecha_fountain_p11")


def parse_sets(text: str) -> list[str]:
    """``"all"`` or a comma list of DATASETS names, checked."""
    names = list(DEFAULT_SETS) if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise ValueError(f"--sets {text!r}: unknown set(s) {unknown or '(none given)'}; "
                         f"known: {', '.join(DATASETS)} or 'all'")
    return names


# ---- working copies of the real sets ---------------------------------------------------

@dataclass
class WorkingSet:
    """A set's frames at the working resolution, written once to ``root``.

    ``root/cameras.json`` lists them in the shared-data format (K in pixels of
    the written images, reference c2w unchanged), so it is both a dataset
    folder for ``stream4d reconstruct`` and the reference for evaluation.
    """

    spec: DatasetSpec
    root: Path
    image_names: list[str]  # paths relative to root, in capture order
    size: tuple[int, int]  # (W, H) of the written images
    input_size: tuple[int, int]  # (W, H) of the original images
    K: np.ndarray  # [N, 3, 3] in pixels of the written images
    grey: bool  # the source images are grey (written single-channel)

    @property
    def cameras_json(self) -> Path:
        return self.root / "cameras.json"

    @property
    def num_frames(self) -> int:
        return len(self.image_names)

    def shared_K(self, rel_tol: float = 1e-3) -> np.ndarray:
        """The one K [3, 3] all frames share; ValueError when they differ by more than ``rel_tol``."""
        spread = np.abs(self.K - self.K[0]).max() / self.K[0, 0, 0]
        if spread > rel_tol:
            raise ValueError(f"{self.spec.name}: frames do not share one K (spread {spread:.2e} of fx)")
        return self.K[0]


def prepare_working_set(name: str, dest: str | Path, max_side: int | None) -> WorkingSet:
    """Resize set ``name`` to ``max_side`` (longest side, px; None keeps it) into ``dest``.

    Resizing goes through our ingest (``recon.ingest``, area interpolation, K
    carried by the pixel map), and images are written as PNG so every reader
    decodes exactly the same pixels. File names keep the set's relative paths
    with a ``.png`` suffix.
    """
    from recon.ingest import IngestOptions
    from recon.ingest.dataset import dataset_source

    spec = DATASETS[name]
    cameras = DATA_ROOT / spec.cameras
    if not cameras.is_file():
        raise FileNotFoundError(f"set {name}: {cameras} does not exist")
    listed = json.loads(cameras.read_text())["frames"]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names, Ks, frames_json = [], [], []
    size = input_size = None
    grey = True
    with dataset_source(cameras, IngestOptions(resize=max_side)) as source:
        for frame, entry in zip(source, listed):
            rel = str(Path(frame.source).with_suffix(".png"))
            path = dest / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            img = frame.image  # uint8 [H, W, 3] RGB
            is_grey = bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())
            grey &= is_grey
            out = img[..., 0] if is_grey else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(path), out):
                raise OSError(f"set {name}: could not write {path}")
            size, input_size = frame.size, frame.input_size
            names.append(rel)
            Ks.append(frame.K)
            frames_json.append({"image": rel, "width": size[0], "height": size[1], "K": frame.K.tolist(),
                                "c2w": entry["c2w"]})
    if len(names) != len(listed):
        raise RuntimeError(f"set {name}: ingest gave {len(names)} frames, {cameras} lists {len(listed)}")
    doc = {"convention": "c2w camera-to-world, OpenCV axes; K in pixels of the listed image",
           "units": spec.units, "note": f"{name} resized to max side {max_side} by bench/common.py",
           "frames": frames_json}
    (dest / "cameras.json").write_text(json.dumps(doc, indent=1))
    return WorkingSet(spec, dest, names, size, input_size, np.stack(Ks), grey)


# ---- timing and memory ----------------------------------------------------------------

def process_peak_rss_mb() -> float:
    """Peak resident memory of this process since it started (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


@dataclass
class Measurement:
    seconds: float = float("nan")
    peak_rss_mb: float = float("nan")  # highest sampled RSS during the block
    cpu_seconds: float = float("nan")  # user + system CPU time of this process during the block
    samples: list[float] = field(default_factory=list, repr=False)


class measure:
    """``with measure() as m: ...`` -> ``m.seconds`` (perf_counter), ``m.peak_rss_mb``, ``m.cpu_seconds``.

    RSS is sampled every ``interval`` s by a background thread (cheap: one
    /proc read), so peaks shorter than that can be missed.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.result = Measurement()
        self._proc = psutil.Process()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.result.samples.append(self._proc.memory_info().rss / 2**20)

    def __enter__(self) -> Measurement:
        self.result.samples.append(self._proc.memory_info().rss / 2**20)
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._thread.start()
        self._cpu0 = self._proc.cpu_times()
        self._t0 = time.perf_counter()
        return self.result

    def __exit__(self, *exc) -> None:
        self.result.seconds = time.perf_counter() - self._t0
        cpu1 = self._proc.cpu_times()
        self._stop.set()
        self._thread.join()
        self.result.samples.append(self._proc.memory_info().rss / 2**20)
        self.result.cpu_seconds = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        self.result.peak_rss_mb = max(self.result.samples)


# ---- the machine ----------------------------------------------------------------------

def clip_as_jpegs(clip: str | Path, quality: int = 90) -> tuple[float, list[bytes]]:
    """A video's frame rate and every frame as JPEG bytes (what a live push sends)."""
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    jpegs = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        jpegs.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    cap.release()
    return fps, jpegs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def calibration_ms(repeats: int = 5) -> float:
    """Median milliseconds of a fixed CPU workload (OpenCV SIFT on a seeded 512x384 texture, the
    default backend's largest per-frame cost). This machine's speed drifts by tens of percent from
    hour to hour; printed beside each set it tells a slow hour from a slow change."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (384, 512), dtype=np.uint8), (0, 0), 1.5)
    sift = cv2.SIFT_create(nfeatures=3000, contrastThreshold=0.01)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sift.detectAndCompute(texture, None)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def machine_info() -> dict:
    return {
        "nproc": usable_cores(),
        "cpu": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def load_note(loadavgs: Sequence[float], cores: int) -> str | None:
    """A warning when the 1-minute load averages seen during a run show other work on the machine.

    A run of ours alone keeps the load near ``cores``; above ``1.5 * cores`` at
    any sample, others were competing for the CPU and the timings are inflated.
    """
    peak = max(loadavgs) if loadavgs else 0.0
    if peak > 1.5 * cores:
        return (f"the machine was loaded by other work: 1-minute load average up to {peak:.1f} on {cores} cores "
                f"(samples {', '.join(f'{x:.1f}' for x in loadavgs)}), so these timings are inflated and noisy")
    return None


# ---- reporting --------------------------------------------------------------------------

def fmt(x: float | int | None, digits: int = 3) -> str:
    """Short number for tables; '-' for missing / non-finite values."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


_SECTION_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def write_docs_section(name: str, body: str, path: str | Path = DOCS_BENCHMARKS) -> Path:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``
    with ``body`` (appending the section when absent, creating the file when missing).
    Other sections of the file are left byte-for-byte alone."""
    if not _SECTION_NAME.match(name):
        raise ValueError(f"section name {name!r} must be letters, digits, '_', '-' or '.'")
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    i, j = text.find(start), text.find(end)
    if (i < 0) != (j < 0) or (i >= 0 and j < i):
        raise ValueError(f"{path}: section {name!r} has a start marker without its end marker (or the reverse)")
    if i >= 0:
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written file
    return path
