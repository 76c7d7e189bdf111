"""Frame of the ``vector_meta`` suite (one row): the embedding matrix's shape and dtype against encoder.json.

Columns: ndim, dim, expected_dim (encoder.json "dim"), dtype, expected_dtype (encoder.json
"vector_dtype", float32 when absent), n_rows, n_chunks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from expectations.frames.common import read_json_file
from lvm_core.contracts.layout import DEFAULT_VECTOR_DTYPE, VECTOR_DTYPE_KEY


def vector_meta_frame(emb: np.ndarray, encoder_path: Path, n_chunks: int) -> pd.DataFrame:
    """Shape and dtype of `emb`, the dim and dtype encoder.json declares, and the chunk count to align with."""
    encoder, err = read_json_file(encoder_path)
    expected_dim = encoder.get("dim") if isinstance(encoder, dict) and err is None else None
    if isinstance(expected_dim, bool) or not isinstance(expected_dim, int):
        expected_dim = None
    recorded = encoder.get(VECTOR_DTYPE_KEY) if isinstance(encoder, dict) and err is None else None
    expected_dtype = str(recorded) if recorded is not None else DEFAULT_VECTOR_DTYPE

    ndim = int(emb.ndim)
    return pd.DataFrame(
        [
            {
                "ndim": ndim,
                "dim": int(emb.shape[1]) if ndim == 2 else -1,
                "expected_dim": float("nan") if expected_dim is None else expected_dim,
                "dtype": str(emb.dtype),
                "expected_dtype": expected_dtype,
                "n_rows": int(emb.shape[0]) if ndim >= 1 else 0,
                "n_chunks": int(n_chunks),
            }
        ]
    )
