"""Dataset folders: images listed in a ``cameras.json`` with their intrinsics.

Format (see ../shared/data/README.md)::

    {"frames": [{"image": "<path relative to the set>", "width": W, "height": H,
                 "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "c2w": [...],
                 "radial_k1": k1 (optional: the lens, as ``stream4d synth --radial`` writes it)}, ...]}

Frames come in listed order; ``Frame.source`` is the listed path exactly as
written, so evaluation can match frames to reference poses by name, and
``Frame.K`` is the listed K carried through the resize (pixel_map @ K). An image with a
``radial_k1`` is undistorted to its K as it is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recon.ingest.errors import IngestError
from recon.ingest.images import ImageEntry, ImageSequenceSource
from recon.ingest.options import IngestOptions

CAMERAS_FILE = "cameras.json"


def dataset_source(cameras_json: Path, options: IngestOptions | None = None) -> ImageSequenceSource:
    """The images of a dataset; ``cameras_json`` is the file (any name) inside the set's root."""
    entries = read_cameras_json(cameras_json)
    root = cameras_json.parent
    name = root.name if cameras_json.name == CAMERAS_FILE else f"{root.name}/{cameras_json.name}"
    return ImageSequenceSource("dataset", name, entries, options, size=entries[0].size)


def read_cameras_json(path: Path) -> list[ImageEntry]:
    """Entries of a cameras.json, checked: listed images exist, K is a finite 3x3."""
    where = str(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise IngestError(where, "missing", f"cannot read ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(where, "bad_dataset", f"not valid JSON ({exc})") from exc
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, list):
        raise IngestError(where, "bad_dataset", 'expected an object with a "frames" list')
    if not frames:
        raise IngestError(where, "empty_folder", '"frames" is empty')
    root = path.parent
    entries = []
    for i, item in enumerate(frames):
        def bad(why: str, i: int = i) -> IngestError:
            return IngestError(where, "bad_dataset", f"frames[{i}]: {why}")

        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or not item["image"]:
            raise bad('needs an "image" path')
        rel = item["image"]
        image_path = root / rel
        if not image_path.is_file():
            raise IngestError(where, "missing", f"frames[{i}]: image {rel!r} does not exist")
        K = None
        if item.get("K") is not None:
            try:
                K = np.asarray(item["K"], dtype=np.float64)
            except (TypeError, ValueError):
                raise bad("K is not numeric") from None
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise bad(f"K must be a finite 3x3 with positive focal lengths, got {item['K']!r}")
        size = None
        if "width" in item or "height" in item:
            w, h = item.get("width"), item.get("height")
            if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                raise bad(f"width/height must be positive integers, got {w!r}x{h!r}")
            size = (w, h)
        radial = item.get("radial_k1", 0.0)
        if isinstance(radial, bool) or not isinstance(radial, (int, float)) or not np.isfinite(radial):
            raise bad(f"radial_k1 must be a number, got {radial!r}")
        if radial and K is None:
            raise bad("radial_k1 needs the K it bends")
        entries.append(ImageEntry(image_path, rel, K, size, float(radial)))
    return entries
