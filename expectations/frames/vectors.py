"""Frames of the ``vectors`` and ``vectors_exact`` suites from embeddings.npy, read block by block.

``vectors_exact`` (one row): n_rows, n_non_finite, min_norm and max_norm over the finite rows, computed
over every row. ``vectors`` (the seeded sample): row, norm (L2, float64; NaN when the row is not finite)
and is_finite. No vector component is kept, and the norms come block by block with plain file reads, so
the frames (and the process) stay the same size whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from expectations.frames.common import require_file
from expectations.frames.sample import SampleSpec
from lvm_core.contracts.errors import DataContractError

_BLOCK_ROWS = 1 << 13  # embedding rows per norm block: 8192 x 384 float64 = 25 MB of temporaries
EXACT_COLUMNS = ("n_rows", "n_non_finite", "min_norm", "max_norm")


def load_embeddings(path: Path) -> np.ndarray:
    """embeddings.npy as a read-only memory map (no pickle)."""
    require_file(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}: cannot load embeddings: {exc}") from exc


def vectors_frames(emb: np.ndarray, sample: SampleSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the sampled rows' norms, the exact one-row summary) of the embedding matrix `emb`."""
    n_rows = int(emb.shape[0]) if emb.ndim >= 1 else 0
    picks = sample.positions(n_rows)
    norms = np.full(len(picks), np.nan, dtype=np.float64)
    finite = np.zeros(len(picks), dtype=bool)
    n_bad, lo, hi = (n_rows, np.nan, np.nan)
    if emb.ndim == 2 and np.issubdtype(emb.dtype, np.number):
        n_bad, lo, hi = 0, np.inf, -np.inf
        for start, block in _row_blocks(emb):
            ok, row_norms = _block_norms(block)
            n_bad += int((~ok).sum())
            if ok.any():
                lo, hi = min(lo, float(row_norms[ok].min())), max(hi, float(row_norms[ok].max()))
            a, b = np.searchsorted(picks, [start, start + len(ok)])
            finite[a:b] = ok[picks[a:b] - start]
            norms[a:b] = np.where(ok, row_norms, np.nan)[picks[a:b] - start]
        lo, hi = (lo, hi) if np.isfinite(lo) else (np.nan, np.nan)
    exact = pd.DataFrame([{"n_rows": n_rows, "n_non_finite": n_bad, "min_norm": lo, "max_norm": hi}],
                         columns=list(EXACT_COLUMNS)).astype({"min_norm": "float64", "max_norm": "float64"})
    return pd.DataFrame({"row": picks, "norm": norms, "is_finite": finite}), exact


def _row_blocks(emb: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) blocks of `emb`; a memory map is read with plain file reads, so the pages it
    went through do not stay mapped into the process (RSS would grow with the file otherwise)."""
    n_rows = int(emb.shape[0])
    if not (isinstance(emb, np.memmap) and emb.filename and emb.flags.c_contiguous):
        for start in range(0, n_rows, _BLOCK_ROWS):
            yield start, emb[start : start + _BLOCK_ROWS]
        return
    row_bytes = int(emb.strides[0])
    with open(emb.filename, "rb") as fh:
        fh.seek(int(emb.offset))
        for start in range(0, n_rows, _BLOCK_ROWS):
            k = min(_BLOCK_ROWS, n_rows - start)
            yield start, np.frombuffer(fh.read(k * row_bytes), dtype=emb.dtype).reshape((k, *emb.shape[1:]))


def _block_norms(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(every component finite, L2 norm) per row of `block`, in float64."""
    block = np.asarray(block, dtype=np.float64)
    ok = np.isfinite(block).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        return ok, np.sqrt(np.einsum("ij,ij->i", block, block))
