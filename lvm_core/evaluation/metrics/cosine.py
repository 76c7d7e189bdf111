"""Cosine to the true next chunk and the margin over the last context chunk: the headline numbers.

Both compare a predicted vector with real chunk vectors of the dataset, one value per window; the
evaluation averages them and puts the averages beside the trivial baselines'.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from lvm_core.data.windows import SequenceLike
from lvm_core.evaluation.inputs import checked_predictions, windows_of
from lvm_core.io.vectors import l2_normalize

__all__ = ["cosine_to_target", "margin_vs_last", "mean_or_nan", "rowwise_cosine"]


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a[i], b[i]) per row, in [-1, 1] (float64)."""
    return cast(np.ndarray, np.einsum("ij,ij->i", l2_normalize(a), l2_normalize(b)).astype(np.float64))


def mean_or_nan(x: np.ndarray) -> float:
    """Mean of `x`; NaN for an empty array (no windows: no number, rather than a misleading 0)."""
    return float(np.mean(x)) if np.size(x) else float("nan")


def cosine_to_target(pred: np.ndarray, vectors: np.ndarray, seqs: SequenceLike) -> np.ndarray:
    """cos(pred, target) per window: in [-1, 1], higher is better, 1 = the true next chunk's vector."""
    w = windows_of(seqs)
    pred = checked_predictions(pred, w.n, vectors.shape[1])
    return rowwise_cosine(pred, vectors[w.target_rows])


def margin_vs_last(pred: np.ndarray, vectors: np.ndarray, seqs: SequenceLike) -> np.ndarray:
    """cos(pred, target) - cos(pred, ctx[-1]) per window, in [-2, 2]: > 0 means closer to the future than
    to the past; a copy-last predictor scores about cos(ctx[-1], target) - 1 (negative). Higher is better."""
    w = windows_of(seqs)
    pred = checked_predictions(pred, w.n, vectors.shape[1])
    return cast(np.ndarray, rowwise_cosine(pred, vectors[w.target_rows]) - rowwise_cosine(pred, vectors[w.context_rows[:, -1]]))
