"""How a stream is cut into windows: the windowing every window model and the aligner agree on.

The aligner keeps exactly ``overlap`` views of the previous window to register the next one, so
the pipeline and every test or benchmark that feeds the aligner cut windows here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def default_tail_merge(window: int, overlap: int) -> int:
    """Frames a finite input may run past a full window and still end in it: as many as would
    otherwise make a last window of mostly repeated frames, ``min(overlap, window - overlap - 1)``."""
    return min(overlap, window - overlap - 1)


def sliding_windows(frames: Iterable[T], window: int, overlap: int, tail_merge: int = 0,
                    first_window: int | None = None) -> Iterator[list[T]]:
    """Windows of ``window`` frames, consecutive ones sharing exactly ``overlap`` (the aligner keeps
    only that much of the previous window); the stream's tail becomes one shorter last window.
    ``first_window`` (``overlap`` < it < ``window``): the first window is that short, so a live stream
    has its first map sooner; it never takes a merged tail.

    With ``tail_merge`` > 0 a full window first reads up to ``tail_merge + 1`` further frames: if
    the stream ends among them they join it (one last window of at most ``window + tail_merge``
    frames), instead of a last window that would spend a whole reconstruction mostly on frames
    already done (23 frames in windows of 20 sharing 5: frames 0-22 at once, not 0-19 and 15-22).
    """
    if not 0 <= tail_merge < window - overlap:
        raise ValueError(f"tail_merge must be in [0, {window - overlap}), got {tail_merge}")
    if first_window is not None and not overlap < first_window <= window:
        raise ValueError(f"first_window must be in ({overlap}, {window}], got {first_window}")
    size = first_window or window  # of the window being filled
    it = iter(frames)
    buf: list[T] = []
    fresh = 0  # frames in buf that no window has covered yet
    for f in it:
        buf.append(f)
        fresh += 1
        while len(buf) == size and fresh >= size - overlap:
            merge = tail_merge if size == window else 0
            extra = list(islice(it, merge + 1)) if merge else []
            if merge and len(extra) <= merge:
                yield buf + extra  # the stream ended: its last frames join this window
                return
            yield list(buf)
            buf = buf[-overlap:] + extra
            fresh = len(extra)
            size = window
    if fresh and len(buf) >= 2:
        yield buf
