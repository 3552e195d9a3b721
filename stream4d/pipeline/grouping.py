"""Windows that never span two groups of frames (parts of a photo collection that share no view)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from align.windows import sliding_windows
from stream4d.contracts import Frame


def grouped_windows(frames: Iterator[Frame], groups: Callable[[], dict[int, int]], window: int, overlap: int,
                    tail_merge: int = 0, first_window: int | None = None) -> Iterator[list[Frame]]:
    """``sliding_windows`` over each run of consecutive frames of one group (``first_window``: the
    stream's very first window only, a live stream's; photo collections in groups never have one).

    ``groups()`` maps ``Frame.index`` to a group id; it is asked once the first frame has arrived
    (recon.ordering fills it in before yielding any frame). Empty: one group, streamed as is.
    A later group's windows share no frame with the earlier ones, so it starts a new segment.
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        return
    group_of = groups()
    if not group_of:
        yield from sliding_windows(chain([first], it), window, overlap, tail_merge, first_window)
        return
    run, current = [first], group_of.get(first.index)
    for f in it:
        g = group_of.get(f.index, current)
        if g != current:
            yield from sliding_windows(iter(run), window, overlap, tail_merge)
            run, current = [], g
        run.append(f)
    yield from sliding_windows(iter(run), window, overlap, tail_merge)


class DroppedTail:
    """Views a window model left out at the end of a window, tried again.

    A model that cannot register a window's last views (a hard cut to another scene, a blurred
    stretch) drops them. The next window repeats only ``overlap`` of them, so the views before
    those would never be reconstructed, nor the frames held between them. Up to ``limit`` of
    the latest such views (the ones nearest the next window) are put in front of the window
    that continues this one; a window of another group does not get them.

    With ``last_window``, the stream's last window's dropped views, ``min_views`` or more, make
    one more window of their own: a video's frames after a cut near its end are a scene worth
    its own world. A photo collection's views that would not register are left unposed rather
    than posed in a world apart from the collection's.
    """

    def __init__(self, limit: int, last_window: bool = True, min_views: int = 3) -> None:
        self.limit, self.last_window, self.min_views = limit, last_window, min_views
        self._tail: list[Frame] = []
        self._last: set[int] = set()  # frame indices of the window last yielded

    def windows(self, windows: Iterator[list[Frame]]) -> Iterator[list[Frame]]:
        for window in windows:
            tail, self._tail = self._tail, []
            if tail and window and window[0].index in self._last:
                inside = {f.index for f in window}
                window = [f for f in tail if f.index not in inside][-self.limit:] + window
            self._last = {f.index for f in window}
            yield window
        tail, self._tail = self._tail, []  # part of one window: a size the model takes
        if self.last_window and len(tail) >= self.min_views:
            yield tail

    def after(self, window: list[Frame], posed: Iterable[int]) -> None:
        """The model posed the frames ``posed`` (indices) of ``window``: remember the views after the
        last of them. Not called for a window that failed: its views are not tried again."""
        posed = set(posed)
        last = max((i for i, f in enumerate(window) if f.index in posed), default=None)
        self._tail = [] if last is None else window[last + 1:]
