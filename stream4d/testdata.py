"""Where the project's real test data lives: ``../shared/data`` beside the repository.

Tests and benchmarks read it from here; ``STREAM4D_SHARED_DATA`` overrides the
location (e.g. a CI machine that mounts it elsewhere). Nothing in the package
itself depends on it.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STREAM4D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def png_of_black(width: int, height: int) -> bytes:
    """A valid RGB PNG of black pixels, compressed row by row: a few hundred kB at most for any
    size, to test pixel limits without a large file."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(1)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
