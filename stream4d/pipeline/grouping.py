"""Windows that never span two groups of frames (parts of a photo collection that share no view)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain, groupby

from align.windows import sliding_windows
from stream4d.contracts import Frame


def grouped_windows(frames: Iterator[Frame], groups: Callable[[], dict[int, int]], window: int, overlap: int,
                    tail_merge: int = 0, first_window: int | None = None) -> Iterator[list[Frame]]:
    """``sliding_windows`` over each run of consecutive frames of one group and one image size
    (``first_window``: the stream's very first window only, a live stream's; photo collections in
    groups never have one).

    ``groups()`` maps ``Frame.index`` to a group id; it is asked once the first frame has arrived
    (recon.ordering fills it in before yielding any frame). Empty: one group. A window model takes
    frames of one size only, so a frame whose size differs from the one before it (a portrait photo
    among landscape ones, a camera that changed resolution) starts a new run too. A later run's
    windows share no frame with the earlier ones, so it starts a new segment. Runs are streamed:
    a frame is windowed as soon as it arrives.
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        return
    group_of = groups()
    current = [group_of.get(first.index)]

    def run_key(f: Frame) -> tuple:
        current[0] = group_of.get(f.index, current[0])  # a frame the ordering did not see stays in its run
        return current[0], f.size

    for k, (_, run) in enumerate(groupby(chain([first], it), key=run_key)):
        yield from sliding_windows(run, window, overlap, tail_merge, first_window if k == 0 else None)


class DroppedViews:
    """Views a window model left out, tried again.

    A model that cannot register a window's last views (a hard cut to another scene, a blurred
    stretch) drops them. The next window repeats only ``overlap`` of them, so the views before
    those would never be reconstructed, nor the frames held between them. Up to ``limit`` of
    the latest such views (the ones nearest the next window) are put in front of the window
    that continues this one.

    With ``at_end`` (videos and live streams), dropped views that no later window holds are kept
    (at most ``keep``, the latest): a tail that did not fit or that the next window dropped again,
    and runs of ``min_views`` or more views dropped before a window's last posed one (a cut to
    another scene and back, where the window spanning the second cut registered only the first
    scene). Once the input ends they make windows of their own (``window`` views sharing
    ``overlap``): a world of their own, or re-attached where their place is found again. Single
    views dropped in mid-window are not kept. ``held`` (``HeldFrames`` or None) is told which
    keyframes still wait, so the frames held before them are kept too. A photo collection's
    views that would not register are left unposed rather than posed in a world apart.
    """

    def __init__(self, window: int, overlap: int, at_end: bool = True, keep: int | None = None,
                 min_views: int = 3, held=None) -> None:
        self.window, self.overlap, self.limit = window, overlap, window - overlap
        self.at_end, self.keep, self.min_views, self.held = at_end, keep or 4 * window, min_views, held
        self._tail: list[Frame] = []
        self._kept: dict[int, Frame] = {}  # frame index -> view, in the order they were dropped
        self._posed: set[int] = set()
        self._last: set[int] = set()  # frame indices of the window last yielded

    def windows(self, windows: Iterator[list[Frame]]) -> Iterator[list[Frame]]:
        for window in windows:
            tail, self._tail = self._tail, []
            inside = {f.index for f in window}
            if tail and window and window[0].index in self._last:
                carried = [f for f in tail if f.index not in inside][-self.limit:]
                window = carried + window
                inside |= {f.index for f in carried}
            self._hold_back([f for f in tail if f.index not in inside])
            self._last = inside
            yield window
        self._hold_back(self._tail)
        self._tail = []
        views = [f for f in self._kept.values() if f.index not in self._posed]
        self._kept = {}
        for size in dict.fromkeys(f.size for f in views):  # one size per window, sizes in order of appearance
            same = [f for f in views if f.size == size]
            if self.at_end and len(same) >= self.min_views:
                yield from sliding_windows(iter(same), self.window, self.overlap)

    def after(self, window: list[Frame], posed: Iterable[int]) -> None:
        """The model posed the frames ``posed`` (indices) of ``window``: remember the views after the
        last of them, and runs of ``min_views`` dropped views before it. Not called for a window
        that failed: its views are not tried again. Called before the window goes to the aligner,
        so ``held`` keeps the runs' frames before the sink could let them go."""
        posed = set(posed)
        self._posed |= posed
        last = max((i for i, f in enumerate(window) if f.index in posed), default=-1)
        self._tail = window[last + 1:]
        for dropped, run in groupby(window[:last + 1], key=lambda f: f.index not in self._posed):
            run = list(run)
            if dropped and len(run) >= self.min_views:
                self._hold_back(run)

    def _hold_back(self, views: list[Frame]) -> None:
        if not self.at_end:
            return
        for f in views:
            if f.index not in self._posed and f.index not in self._kept:
                self._kept[f.index] = f
                if self.held is not None:
                    self.held.keep(f.index)
        while len(self._kept) > self.keep:
            index = next(iter(self._kept))
            del self._kept[index]
            if self.held is not None:
                self.held.let_go(index)
