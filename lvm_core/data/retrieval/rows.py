"""Checked inputs of retrieval: unit rows, the bank matrix kept as it is when it already has unit rows,
exclusion lists, row indices, top-k merging and seeded training samples.

Every search and rank path validates through these, so a bad array fails the same way, with one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lvm_core.contracts.errors import UserError
from lvm_core.data.embedding.fingerprint import UNIT_NORM_TOLERANCE
from lvm_core.data.vector_files import VALIDATE_BLOCK_ROWS, as_float32_block, iter_row_blocks
from lvm_core.io.vectors import NORM_EPS, l2_normalize, row_norms

__all__ = [
    "ExcludeRows",
    "RetrievalError",
    "bank_rows",
    "check_rows",
    "normalize_exclusions",
    "sorted_topk",
    "training_sample",
    "unit_rows",
]


class RetrievalError(UserError, ValueError):
    """Bad input to the retrieval bank (shape, dtype, row index out of range, missing faiss)."""


ExcludeRows = Sequence[np.ndarray] | np.ndarray | None


def unit_rows(x: Any, name: str) -> np.ndarray:
    """Float32 C-contiguous copy of `x` with unit-length rows; rejects non-finite and zero rows."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise RetrievalError(f"{name}: expected a non-empty 2-D array (n, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise RetrievalError(f"{name}: contains NaN or inf")
    norms = row_norms(arr)
    if (norms <= NORM_EPS).any():
        bad = int(np.flatnonzero(norms <= NORM_EPS)[0])
        raise RetrievalError(f"{name}: row {bad} has zero length; cosine is undefined")
    if np.allclose(norms, 1.0, atol=1e-6):
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(l2_normalize(arr))



def bank_rows(vectors: Any, name: str, block: int = VALIDATE_BLOCK_ROWS) -> np.ndarray:
    """`vectors` itself (no copy: a memory map stays on disk) when it is a float32/float16 matrix of unit
    rows, checked block by block; otherwise a normalised float32 copy (`unit_rows`).

    float16 rows are unit only to float16 precision, so they are accepted within the data contract's
    tolerance; float32 rows within 1e-6 (as `unit_rows`).
    """
    if not (isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype in (np.float32, np.float16)):
        return unit_rows(vectors, name)
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise RetrievalError(f"{name}: expected a non-empty 2-D array (n, dim), got shape {vectors.shape}")
    atol = 1e-6 if vectors.dtype == np.float32 else UNIT_NORM_TOLERANCE
    for start, end in iter_row_blocks(vectors.shape[0], block):
        blk = as_float32_block(vectors, slice(start, end))
        if not np.isfinite(blk).all():
            raise RetrievalError(f"{name}: contains NaN or inf")
        norms = np.linalg.norm(blk, axis=1)
        if not np.allclose(norms, 1.0, atol=atol):
            return unit_rows(vectors, name)
    return vectors


def normalize_exclusions(exclude_rows: ExcludeRows, n_queries: int, n_rows: int) -> np.ndarray:
    """Exclusions as a padded int64 matrix (n_queries, e); -1 marks padding.

    Accepts None, an (n_queries, e) integer array (negative entries = padding) or a list of 1-D
    arrays (one per query, lengths may differ).
    """
    if exclude_rows is None:
        return np.full((n_queries, 0), -1, dtype=np.int64)
    if isinstance(exclude_rows, np.ndarray) and exclude_rows.ndim == 2:
        mat = exclude_rows
        if not np.issubdtype(mat.dtype, np.integer):
            raise RetrievalError(f"exclude_rows: expected integer row indices, got dtype {mat.dtype}")
        mat = mat.astype(np.int64, copy=True)
    else:
        items = list(exclude_rows)
        if len(items) != n_queries:
            raise RetrievalError(f"exclude_rows: {len(items)} entries for {n_queries} queries")
        width = max((np.asarray(r).size for r in items), default=0)
        mat = np.full((n_queries, width), -1, dtype=np.int64)
        for i, r in enumerate(items):
            r = np.asarray(r).ravel()
            if r.size and not np.issubdtype(r.dtype, np.integer):
                raise RetrievalError(f"exclude_rows[{i}]: expected integer row indices, got dtype {r.dtype}")
            mat[i, : r.size] = r
    if mat.shape[0] != n_queries:
        raise RetrievalError(f"exclude_rows: {mat.shape[0]} rows for {n_queries} queries")
    mat[mat < 0] = -1
    if mat.size and mat.max() >= n_rows:
        raise RetrievalError(f"exclude_rows: row {int(mat.max())} out of range for a bank of {n_rows} rows")
    return mat


def check_rows(rows: Any, n_rows: int, name: str) -> np.ndarray:
    """`rows` as a 1-D int64 array of bank row indices in [0, n_rows); `name` names it in the error."""
    arr = np.asarray(rows)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise RetrievalError(f"{name}: expected a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_rows):
        raise RetrievalError(f"{name}: row index out of range [0, {n_rows})")
    return arr


def sorted_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per query row: best score first, ties by smaller row index."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        rows = np.take_along_axis(rows, part, axis=1)
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)



def training_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded float32 sample of at most `size` rows (sorted, so a memory map is read in order)."""
    n = vectors.shape[0]
    if n <= size:
        return as_float32_block(vectors, slice(0, n))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=int(size), replace=False))
    return as_float32_block(vectors, rows)
