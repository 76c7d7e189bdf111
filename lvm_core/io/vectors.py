"""Row norms and unit-normalisation of embedding rows: the one place that scales vectors to unit length.

Every cosine in the project (data gate, baselines, evaluation, retrieval, drift, serving) is a dot
product of unit rows, so they all normalise here and agree to the last bit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def _file_source(vectors: np.ndarray) -> tuple[str, int] | None:
    """(file name, byte offset of row 0) of a C-ordered memory map that owns its map, else None."""
    import mmap as _mmap

    mm: Any = getattr(vectors, "_mmap", None)
    filename = getattr(vectors, "filename", None)
    if not isinstance(mm, _mmap.mmap) or id(getattr(vectors, "base", None)) != id(mm) or not filename:
        return None
    if vectors.ndim != 2 or not vectors.flags.c_contiguous or not hasattr(os, "preadv"):
        return None
    return str(filename), int(getattr(vectors, "offset", 0))


@contextmanager
def _opened(filename: str) -> Iterator[int]:
    fd = os.open(filename, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def _pread_into(fd: int, buf: np.ndarray, offset: int) -> None:
    """Fill `buf` (contiguous) from `fd` at `offset`; a short read means the file is shorter than its header says."""
    view = memoryview(cast(Any, buf)).cast("B")
    done = 0
    while done < view.nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"vector file ends {view.nbytes - done} bytes early at byte {offset + done}")
        done += got


def float32_rows(vectors: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """Rows of a (possibly memory-mapped, possibly float16) matrix as an in-memory float32 copy.

    From a memory map the rows are read from its file with ``preadv`` (one read per run of consecutive
    rows), not through the map: a page fault maps more of the file than the row it reads (the cached
    pages around it, and the whole folio on kernels that keep files in large folios, up to 2 MiB), so
    scattered gathers through the map held hundreds of MiB of the file in RSS even when released after
    every 256 rows. Read this way the file stays in the page cache and out of this process's RSS.
    In-memory arrays (and views of a map) are copied as they are.
    """
    source = _file_source(vectors)
    if source is None:
        out = np.array(vectors[rows], dtype=np.float32)
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(int(vectors.shape[0]))
            release_pages(vectors, start, stop)
        return out
    n_rows = int(vectors.shape[0])
    filename, offset = source
    row_bytes = int(vectors.strides[0])
    if isinstance(rows, slice):
        start, stop, step = rows.indices(n_rows)
        if step != 1:
            return float32_rows(vectors, np.arange(start, stop, step))
        block = np.empty((max(stop - start, 0), int(vectors.shape[1])), dtype=vectors.dtype)
        with _opened(filename) as fd:
            _pread_into(fd, block, offset + start * row_bytes)
        return block.astype(np.float32, copy=False)
    wanted = np.asarray(rows)
    if wanted.ndim != 1:
        raise IndexError(f"float32_rows: row indices must be 1-D, got shape {wanted.shape}")
    wanted = wanted.astype(np.int64, copy=False)
    if wanted.size and (int(wanted.min()) < -n_rows or int(wanted.max()) >= n_rows):
        raise IndexError(f"float32_rows: row index out of range for {n_rows} rows")
    wanted = np.where(wanted < 0, wanted + n_rows, wanted)
    dim = int(vectors.shape[1])
    ordered = wanted.size < 2 or bool((np.diff(wanted) > 0).all())
    unique, inverse = (wanted, None) if ordered else np.unique(wanted, return_inverse=True)
    buf = np.empty((unique.size, dim), dtype=vectors.dtype)
    if unique.size:
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        run_starts = np.concatenate([[0], breaks])
        run_ends = np.concatenate([breaks, [unique.size]])
        with _opened(filename) as fd:
            for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
                _pread_into(fd, buf[a:b], offset + int(unique[a]) * row_bytes)
    out = buf if inverse is None else buf[inverse.reshape(-1)]
    return out.astype(np.float32, copy=False)
