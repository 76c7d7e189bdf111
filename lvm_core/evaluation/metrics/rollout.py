"""Rollout: how fast do predictions degrade when fed back as context?

A generator built on the model would predict several chunks ahead from its own outputs; one-step cosine
does not show how quickly that drifts from the real text.
"""

from __future__ import annotations

import numpy as np

from lvm_core.data.windows import SequenceLike
from lvm_core.evaluation.inputs import EvaluationError, checked_predictions, windows_of
from lvm_core.evaluation.metrics.cosine import rowwise_cosine
from lvm_core.evaluation.metrics.offsets import offset_rows
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.predict import Predictor

__all__ = ["rollout", "rollout_mask"]


def rollout_mask(seqs: SequenceLike, article_ids: np.ndarray, chunk_index: np.ndarray, horizon: int) -> np.ndarray:
    """Windows whose target and the next horizon-1 chunks exist in the same article."""
    w = windows_of(seqs)
    mask = np.ones(w.n, dtype=bool)
    for h in range(horizon):
        mask &= offset_rows(w, article_ids, chunk_index, h)[1]
    return mask


def rollout(
    predict: Predictor,
    vectors: np.ndarray,
    seqs: SequenceLike,
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    horizon: int = 3,
    *,
    batch_size: int = 1024,
) -> list[float]:
    """Mean cos to the true future chunk at steps h = 1..horizon, feeding predictions back.

    Step 1 predicts the target; step h appends the step h-1 prediction to the context (dropping the
    oldest slot) and is compared with the chunk at target+h-1. Only windows with `horizon` future chunks
    in the same article take part (`rollout_mask`), so every step averages the same windows. Each value
    is in [-1, 1], higher is better (NaN when no window has `horizon` future chunks); a slow decline
    over h is what a generator needs.
    """
    if horizon < 1:
        raise EvaluationError(f"rollout: horizon must be >= 1, got {horizon}")
    w = windows_of(seqs)
    keep = np.flatnonzero(rollout_mask(w, article_ids, chunk_index, horizon))
    if keep.size == 0:
        return [float("nan")] * horizon
    sums = np.zeros(horizon)
    for s in range(0, keep.size, batch_size):
        idx = keep[s : s + batch_size]
        ctx = np.ascontiguousarray(vectors[w.context_rows[idx]], dtype=np.float32)
        for h in range(horizon):
            out = checked_predictions(np.asarray(predict(ctx)), idx.size, vectors.shape[1], "predictor output")
            p = l2_normalize(out)
            sums[h] += rowwise_cosine(p, vectors[w.target_rows[idx] + h]).sum()
            ctx = np.concatenate([ctx[:, 1:], p[:, None, :]], axis=1)
    return [float(x / keep.size) for x in sums]
