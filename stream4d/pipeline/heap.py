"""Hand the C heap's free pages back to the system between windows (glibc's ``malloc_trim``).

numpy arrays of a few hundred kB to a few MB (images, depth maps, the splat cache's per-view and
loop-closure transients) are made and freed by several threads, each allocating from its own glibc
arena. Once glibc has raised its mmap threshold, such arrays come from the arenas, and what they free
in the middle of an arena stays resident: the process grows with the allocator's free lists, not
with what it holds (docs/global_map.md, "Memory and cost"). ``malloc_trim(0)`` returns every free
page of every arena to the system; between windows it costs milliseconds.

Elsewhere than glibc (macOS, musl) there is no such call and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``int malloc_trim(size_t pad)``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # no libc found, or one without malloc_trim (musl)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free pages to the system; True when some memory was released (False
    when none could be, or the C library cannot trim)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
