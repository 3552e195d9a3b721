"""release_free_heap gives the heap's free pages in the middle of an arena back to the system."""

import ctypes

import pytest

from stream4d.pipeline.heap import _malloc_trim, release_free_heap

BLOCK = 64 * 1024  # below glibc's smallest mmap threshold: always carved out of an arena
BLOCKS = 2000  # 128 MB freed (and as much kept until the end)


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_freed_blocks_between_live_ones_leave_the_resident_size_only_after_a_trim():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(2 * BLOCKS):
        b = libc.malloc(BLOCK)
        ctypes.memset(b, 1, BLOCK)  # touched: resident
        blocks.append(b)
    freed, kept = blocks[1::2], blocks[0::2]  # every other block: the freed ones cannot merge into the top
    try:
        for b in freed:
            libc.free(b)
        held = _rss_bytes()
        assert release_free_heap()
        released = held - _rss_bytes()
        assert released > 0.5 * BLOCK * BLOCKS, f"only {released / 1e6:.0f} MB of {BLOCK * BLOCKS / 1e6:.0f} MB released"
    finally:
        for b in kept:
            libc.free(b)
