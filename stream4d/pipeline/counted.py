"""The frames behind a run's per-frame counters (run.json ``counted_frames``), and a chunked run's
count of each frame of the video once.

A chunked run joins runs whose frame ranges overlap: their ``StreamStats`` summed would count a
shared frame once per chunk that saw it. So each run records which frames its per-frame counters
counted (``CountedFrames``; the skipped ones are in ``skipped_frames`` already), and the join
counts each frame from one chunk only (``count_once``).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stream4d.contracts import StreamStats
from stream4d.outputs import RUN_JSON

COUNTED = ("frames_keyframes", "frames_without_depth", "frames_depth_from_tracks", "frames_tracked_with_depth")
PER_FRAME = ("frames_skipped", *COUNTED)  # the counters count_once counts
OF_POSED_FRAMES = ("frames_without_depth", "frames_depth_from_tracks", "frames_tracked_with_depth")


class CountedFrames:
    """``stats``' counters in ``COUNTED``, counted together with the frame indices they count (8 bytes a
    frame). Each counter has one writing thread (keyframes: the reader's; the rest: the alignment's)."""

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self.frames = {name: array("q") for name in COUNTED}

    def count(self, name: str, indices: Iterable[int]) -> None:
        """Frames ``indices`` counted in ``stats.<name>``."""
        before = len(self.frames[name])
        self.frames[name].extend(int(i) for i in indices)
        setattr(self.stats, name, getattr(self.stats, name) + len(self.frames[name]) - before)

    def recount(self, name: str, indices: Iterable[int]) -> None:
        """``stats.<name>`` counts ``indices`` instead (run.json's verdict on a run whose map ended empty)."""
        self.frames[name] = array("q", (int(i) for i in indices))
        setattr(self.stats, name, len(self.frames[name]))

    def to_json(self) -> dict[str, list[list[int]]]:
        """Each counter's frames as sorted half-open ranges ``[first, stop)``: the frames between
        keyframes come in runs, and with every frame a keyframe the keyframes are one range."""
        return {name: to_ranges(frames) for name, frames in self.frames.items()}


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for i in sorted(set(indices)):
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def from_ranges(ranges: Iterable[Sequence[int]]) -> list[int]:
    return [i for first, stop in ranges for i in range(first, stop)]


def count_once(run_dirs: Sequence[str | Path], starts: Sequence[int], kept: dict[int, int]) -> dict[str, int]:
    """The ``PER_FRAME`` counters of chunk runs (output folders ``run_dirs``, first frames ``starts`` in
    the whole video), each frame of the video counted from one chunk: the one whose copy of the frame
    the join kept (``kept``: decode position -> position in ``run_dirs``), else (skipped frames and
    keyframes) the first chunk that received it: a frame skipped or never posed, or posed only by a
    chunk left out of the join. The depth counters count only frames the joined trajectory holds.

    A counter some run did not record (no run.json, or one from before ``counted_frames``) is left out:
    the caller sums the runs' own counters for it."""
    records = [_load(Path(d) / RUN_JSON) for d in run_dirs]
    if any(r is None for r in records):
        return {}
    received = [(s, s + int(r.get("stats", {}).get("frames_received", 0))) for s, r in zip(starts, records)]

    def owner(frame: int, posed_only: bool) -> int | None:
        if frame in kept or posed_only:
            return kept.get(frame)
        return next((k for k, (first, stop) in enumerate(received) if first <= frame < stop), None)

    counts = {}
    for name in PER_FRAME:
        frames = [_frames(r, name) for r in records]
        posed_only = name in OF_POSED_FRAMES  # a frame the joined trajectory lacks has no depth to count
        if all(f is not None for f in frames):
            counts[name] = sum(owner(s + i, posed_only) == k for k, (s, f) in enumerate(zip(starts, frames)) for i in f)
    return counts


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _frames(record: dict[str, Any], name: str) -> list[int] | None:
    """The run's frame indices (its own numbering) that counter ``name`` counted; None when not recorded."""
    if name == "frames_skipped":
        skipped = record.get("skipped_frames")
        return None if skipped is None else [int(s["index"]) for s in skipped]
    ranges = (record.get("counted_frames") or {}).get(name)
    return None if ranges is None else from_ranges(ranges)
