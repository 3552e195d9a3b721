"""Windows that never span two groups of frames (parts of a photo collection that share no view)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
