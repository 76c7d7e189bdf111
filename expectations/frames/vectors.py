"""Frame of the ``vectors`` suite: norm (L2, float64; NaN when the row is not finite) and is_finite per embedding row.

No vector component is kept, so validating a million-chunk dataset stays cheap; the norms are computed
block by block from a memory map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from expectations.frames.common import require_file
from lvm_core.contracts.errors import DataContractError

_BLOCK_ROWS = 1 << 16  # embedding rows per norm block: bounded memory on large datasets


def load_embeddings(path: Path) -> np.ndarray:
    """embeddings.npy as a read-only memory map (no pickle)."""
    require_file(path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}: cannot load embeddings: {exc}") from exc


def vectors_frame(emb: np.ndarray) -> pd.DataFrame:
    """One row per embedding row: its norm (NaN unless every component is finite) and finiteness."""
    n_rows = int(emb.shape[0]) if emb.ndim >= 1 else 0
    norms = np.full(n_rows, np.nan, dtype=np.float64)
    finite = np.zeros(n_rows, dtype=bool)
    if emb.ndim == 2 and np.issubdtype(emb.dtype, np.number):
        for start in range(0, n_rows, _BLOCK_ROWS):
            block = np.asarray(emb[start : start + _BLOCK_ROWS], dtype=np.float64)
            ok = np.isfinite(block).all(axis=1)
            with np.errstate(invalid="ignore", over="ignore"):
                row_norms = np.sqrt(np.einsum("ij,ij->i", block, block))
            finite[start : start + len(block)] = ok
            norms[start : start + len(block)] = np.where(ok, row_norms, np.nan)
    return pd.DataFrame({"norm": norms, "is_finite": finite})
