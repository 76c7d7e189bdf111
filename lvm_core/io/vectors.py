"""Row norms and unit-normalisation of embedding rows: the one place that scales vectors to unit length.

Every cosine in the project (data gate, baselines, evaluation, retrieval, drift, serving) is a dot
product of unit rows, so they all normalise here and agree to the last bit.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

#: Rows shorter than this are left as they are (zero rows stay zero) instead of being divided by ~0.
NORM_EPS = 1e-12


def row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean length of each row (last axis), in the dtype of ``x``."""
    return cast(np.ndarray, np.linalg.norm(x, axis=-1))


def l2_normalize(
    x: Any, eps: float = NORM_EPS, *, dtype: type | None = np.float32, out: np.ndarray | None = None
) -> np.ndarray:
    """Rows of ``x`` scaled to unit length; rows with norm < ``eps`` are returned unchanged.

    ``dtype`` is the result type (float32 by default, None keeps the input's); ``out=x`` normalises a
    float array in place (no second full-size copy of an encoder batch).
    """
    arr = x if out is not None else np.asarray(x, dtype=dtype)
    norm = row_norms(arr)[..., None]
    return cast(np.ndarray, np.divide(arr, np.where(norm < eps, 1, norm), out=out))


#: How much of a mapped file around a faulting page the kernel maps with it ("fault-around": 16 pages).
FAULT_AROUND_BYTES = 1 << 16


def release_pages(vectors: np.ndarray, first_row: int = 0, end_row: int | None = None) -> None:
    """Drop this process's mapped pages of rows ``first_row..end_row`` of a read-only memory map.

    Pages of a mapped file that a process has touched count in its RSS until they are unmapped, so a
    pass over a 10^8-row `embeddings.npy` would otherwise end up "holding" the whole file. After
    ``madvise(MADV_DONTNEED)`` the pages stay in the OS page cache (a later read is a cheap minor fault);
    only this process's mapping of them goes, with the `FAULT_AROUND_BYTES` on either side that faults
    there may have mapped. A no-op for in-memory arrays and views of a map.
    """
    import mmap as _mmap

    mm: Any = getattr(vectors, "_mmap", None)
    owns_map = id(getattr(vectors, "base", None)) == id(mm)  # the map's own array, not a view of it
    if not isinstance(mm, _mmap.mmap) or not owns_map or not hasattr(mm, "madvise"):
        return
    if getattr(vectors, "mode", None) == "c":  # a private copy-on-write map: its changed pages would be lost
        return

    row_bytes = int(vectors.strides[0]) if vectors.ndim else 0
    n_rows = int(vectors.shape[0]) if vectors.ndim else 0
    end_row = n_rows if end_row is None else min(int(end_row), n_rows)
    if row_bytes <= 0 or end_row <= first_row:
        return
    # np.memmap maps from the allocation-granularity boundary below the array's file offset
    lead = int(vectors.offset) % _mmap.ALLOCATIONGRANULARITY  # type: ignore[attr-defined]
    # a fault also maps the cached pages around it: released too, or each pass over scattered rows would
    # leave a few of them behind per gathered block, adding up over the file
    start = max(lead + int(first_row) * row_bytes - FAULT_AROUND_BYTES, 0)
    stop = min(lead + end_row * row_bytes + FAULT_AROUND_BYTES, len(mm))
    page = _mmap.PAGESIZE
    start -= start % page
    if stop > start:
        mm.madvise(_mmap.MADV_DONTNEED, start, stop - start)


#: Scattered rows of a memory map gathered between two page releases. The kernel maps up to 16 cached
#: pages around each faulting one ("fault-around", 64 KiB), so each scattered row can put 64 KiB of the
#: file in RSS: 4096 rows mapped ~256 MiB of a 1.5 GiB embeddings.npy at once; 256 rows map <= 16 MiB.
GATHER_BLOCK_ROWS = 256


def float32_rows(vectors: np.ndarray, rows: slice | np.ndarray, gather_block: int = GATHER_BLOCK_ROWS) -> np.ndarray:
    """Rows of a (possibly memory-mapped, possibly float16) matrix as an in-memory float32 copy; the
    mapped pages read for it are released (`release_pages`), so streaming a file costs one block.

    Scattered rows of a large map each touch their own pages (and the pages the kernel maps around
    them), so an index array is gathered `gather_block` rows at a time, releasing the pages after each:
    at most ~16 MiB of the file are mapped at once whatever the number of rows asked for.
    """
    if isinstance(rows, slice):
        out = np.array(vectors[rows], dtype=np.float32)
        start, stop, _ = rows.indices(int(vectors.shape[0]))
        release_pages(vectors, start, stop)
        return out
    idx = np.asarray(rows)
    if getattr(vectors, "_mmap", None) is None or idx.ndim != 1 or idx.size <= gather_block:
        out = np.array(vectors[idx], dtype=np.float32)
        if idx.size:
            release_pages(vectors, int(idx.min()), int(idx.max()) + 1)
        return out
    out = np.empty((idx.size, *vectors.shape[1:]), dtype=np.float32)
    for s in range(0, idx.size, gather_block):
        part = idx[s : s + gather_block]
        out[s : s + part.size] = vectors[part]
        release_pages(vectors, int(part.min()), int(part.max()) + 1)
    return out
