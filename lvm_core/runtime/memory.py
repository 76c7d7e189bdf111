"""Allocator settings for a process that works through table-sized arrays one after another.

The build's coordinator (assemble, analyse, gates) allocates and frees arrays of a few bytes per chunk
row, stage after stage. Its peak RSS is what those arrays need plus what the allocators keep of the ones
already freed, and by default they keep a lot, in proportion to the table:

- glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, so later arrays of up to
  32 MiB come from the heap, where freed blocks stay resident between live ones;
- Arrow's default pool (mimalloc) keeps the pages of freed record batches for reuse.

Measured on the analyse step at 10^6 chunks: 701 -> 602 MiB peak RSS with both settings below (~40 MiB each
alone), ~150 MiB less still held after it; no slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: Blocks from this size get their own mapping and go back to the OS when freed (glibc's initial default).
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)

_applied = False


def return_freed_memory() -> None:
    """Make freed large buffers go back to the OS at once, for the rest of this process (idempotent).

    Fixes glibc's mmap threshold (where mallopt exists) and makes Arrow allocate from the system
    allocator. Only where memory goes changes, never what is computed.
    """
    global _applied
    if _applied:
        return
    _applied = True
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:  # glibc (and compatible); elsewhere the allocator keeps its own policy
        mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES))
