"""Checked inputs shared by every metric: windows validated against the chunk table, predictions of the
right shape, and the one batched unit prediction of a predictor over windows.

Each metric is only as good as the rows it indexes: a window crossing an article, or a prediction of the
wrong shape, would silently corrupt every number. The checks themselves live in
`lvm_core.data.windows` and `lvm_core.models.predict`; here their errors become `EvaluationError`, the
one error type of evaluation.
"""

from __future__ import annotations

import numpy as np

from lvm_core.contracts.errors import DataContractError, UserError
from lvm_core.data import windows
from lvm_core.data.windows import SequenceLike, SequenceSet
from lvm_core.models import predict as models_predict
from lvm_core.models.predict import PredictionError, Predictor, check_predictions

__all__ = ["EvaluationError", "check_windows", "checked_predictions", "predict_rows", "subsample_windows", "windows_of"]


class EvaluationError(UserError, ValueError):
    """Bad input to an evaluation (misaligned arrays, windows crossing articles, bad predictor output)."""


def windows_of(seqs: SequenceLike) -> SequenceSet:
    """`seqs` as a SequenceSet (any object with the window attributes works)."""
    try:
        return SequenceSet.of(seqs)
    except DataContractError as exc:
        raise EvaluationError(str(exc)) from exc


def check_windows(seqs: SequenceLike, article_ids: np.ndarray, chunk_index: np.ndarray) -> SequenceSet:
    """Validate windows against the chunk table (`lvm_core.data.windows.check_windows`): rows in range, one
    article, consecutive chunk indices. A window crossing an article boundary, or a target that is not the
    chunk right after its context, would silently corrupt every metric (and the offset sweep's indexing)."""
    try:
        return windows.check_windows(seqs, article_ids=article_ids, chunk_index=chunk_index)
    except DataContractError as exc:
        raise EvaluationError(str(exc)) from exc


def checked_predictions(pred: np.ndarray, n: int, dim: int, what: str = "pred") -> np.ndarray:
    """`pred` as a finite (n, dim) array, or an EvaluationError naming what is wrong."""
    try:
        return check_predictions(pred, n, dim, what)
    except PredictionError as exc:
        raise EvaluationError(str(exc)) from exc


def predict_rows(
    predict: Predictor, vectors: np.ndarray, context_rows: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Unit predictions (n, D) for windows given as row indices (`lvm_core.models.predict.predict_rows`)."""
    try:
        return models_predict.predict_rows(predict, vectors, context_rows, batch_size, unit=True, finite=True)
    except PredictionError as exc:
        raise EvaluationError(str(exc)) from exc


def subsample_windows(seqs: SequenceLike, max_windows: int | None, seed: int = 0) -> SequenceSet:
    """At most `max_windows` windows, drawn with a seeded generator and kept in their original order."""
    w = windows_of(seqs)
    if max_windows is None or w.n <= max_windows:
        return w
    if max_windows < 1:
        raise EvaluationError(f"max_windows must be >= 1, got {max_windows}")
    idx = np.sort(np.random.default_rng(seed).choice(w.n, size=int(max_windows), replace=False))
    return w.subset(idx)
