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
