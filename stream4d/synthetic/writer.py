"""Write rendered views as a data set in the ../shared/data layout.

    out_dir/cameras.json            frames: image, width, height, K, c2w, timestamp (+ depth, mask, and
                                    radial_k1 when the lens bends the pinhole K's image)
    out_dir/images/NNNNNN.png       unless a video is asked for, then
    out_dir/<video>.mp4             H.264 (libx264, yuv420p); frames are "<video>.mp4#<n>", n from 0
    out_dir/depth/NNNNNN.npy        float32 [H, W] z-depth, 0 = no geometry   (depth=True)
    out_dir/masks/NNNNNN.png        uint8 [H, W], 255 = moving object          (masks=True)
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from stream4d.synthetic.render import SyntheticView

CONVENTION = ("c2w is camera-to-world, OpenCV camera axes (x right, y down, z forward); K in pixels of the "
              "listed image; world-to-camera = inv(c2w); depth is z-depth")


class _VideoWriter:
    """H.264 encoding through PyAV, one RGB frame at a time."""

    def __init__(self, path: Path, fps: float, crf: int, preset: str) -> None:
        import av  # only video output needs it

        self.path = path
        self.rate = Fraction(fps).limit_denominator(1001)
        self.container = av.open(str(path), mode="w")
        self.stream = None
        self.crf, self.preset = crf, preset
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        if self.stream is None:
            if w % 2 or h % 2:
                raise ValueError(f"H.264 yuv420p needs an even image size, got {w} x {h}")
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = w, h
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(self.crf), "preset": self.preset}
        elif (w, h) != (self.stream.width, self.stream.height):
            raise ValueError(f"video frames must share one size: {self.stream.width} x {self.stream.height}, "
                             f"then {w} x {h}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        frame.time_base = 1 / self.rate
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def write_sequence(out_dir: str | Path, views: Iterable[SyntheticView], video: str | bool = False,
                   fps: float = 10.0, depth: bool = False, masks: bool = False, crf: int = 18,
                   preset: str = "medium", meta: dict | None = None) -> Path:
    """Write ``views`` (any iterable, consumed once, one view in memory) under ``out_dir``.

    ``video`` is False for PNG images or a file name (e.g. "demo.mp4") for an
    H.264 video at ``fps`` with quality ``crf``. ``meta`` is merged into the
    top level of cameras.json (scene, trajectory, ...). Returns the
    cameras.json path.
    """
    if video is True:
        video = "video.mp4"
    if video and (Path(video).name != video or not video.lower().endswith(".mp4")):
        raise ValueError(f"video must be a plain .mp4 file name inside out_dir, got {video!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for sub, wanted in (("images", not video), ("depth", depth), ("masks", masks)):
        if wanted:
            (out / sub).mkdir(exist_ok=True)
    encoder = _VideoWriter(out / video, fps, crf, preset) if video else None
    frames = []
    try:
        for n, view in enumerate(views):
            name = f"{n:06d}"
            if encoder is not None:
                encoder.write(view.rgb)
                image = f"{video}#{n}"
            else:
                image = f"images/{name}.png"
                if not cv2.imwrite(str(out / image), cv2.cvtColor(view.rgb, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"could not write {out / image}")
            entry = {"image": image, "width": view.size[0], "height": view.size[1], "K": view.K.tolist(),
                     "c2w": view.c2w.tolist(), "timestamp": view.timestamp}
            if view.radial_k1:
                entry["radial_k1"] = view.radial_k1
            if depth:
                entry["depth"] = f"depth/{name}.npy"
                np.save(out / entry["depth"], view.depth.astype(np.float32))
            if masks:
                entry["mask"] = f"masks/{name}.png"
                cv2.imwrite(str(out / entry["mask"]), view.dynamic_mask.astype(np.uint8) * 255)
            frames.append(entry)
    finally:
        if encoder is not None:
            encoder.close()
    if not frames:
        raise ValueError("write_sequence got no views")
    doc = {"convention": CONVENTION, "units": "metres",
           "note": "synthetic scene rendered by stream4d.synthetic (exact geometry)", "fps": fps,
           **(meta or {}), "frames": frames}
    path = out / "cameras.json"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


__all__ = ["write_sequence", "CONVENTION"]
