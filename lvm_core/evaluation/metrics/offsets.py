"""Offset sweep: how close the prediction is to each chunk around the target, not only the target.

A predictor that merely echoes its context peaks at k = -1 (the last context chunk); one that predicts
the future peaks at k = 0. The sweep shows which, where a single cosine cannot.
"""

from __future__ import annotations

import math

import numpy as np

from lvm_core.data.windows import SequenceLike
from lvm_core.evaluation.inputs import checked_predictions, windows_of
from lvm_core.evaluation.metrics.cosine import mean_or_nan
from lvm_core.io.vectors import l2_normalize

__all__ = ["OFFSET_AFTER", "offset_rows", "offset_sweep", "peak_offset"]

#: Offsets after the target covered by the offset sweep (k = 1..OFFSET_AFTER).
OFFSET_AFTER = 3


def offset_rows(
    seqs: SequenceLike, article_ids: np.ndarray, chunk_index: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row of the chunk at position target+k per window and whether it exists in the same article.

    k = 0 is the target, k = -1 is ctx[-1], k = -ctx is ctx[0]. Rows are sorted by article then
    chunk_index, so the candidate is row target+k; it counts only when that row belongs to the same
    article and has chunk_index = target_chunk_index + k.
    """
    w = windows_of(seqs)
    n_rows = np.asarray(article_ids).shape[0]
    rows = w.target_rows + int(k)
    inside = (rows >= 0) & (rows < n_rows)
    safe = np.clip(rows, 0, n_rows - 1)
    valid = (
        inside
        & (np.asarray(article_ids)[safe] == w.article_ids)
        & (np.asarray(chunk_index)[safe] == w.target_chunk_index + int(k))
    )
    return safe, valid


def offset_sweep(
    pred: np.ndarray,
    vectors: np.ndarray,
    seqs: SequenceLike,
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    ctx: int | None = None,
    after: int = OFFSET_AFTER,
) -> dict[int, dict[str, float]]:
    """k -> {"cosine": mean cos(pred, chunk at target+k), "n": windows where that chunk exists}.

    k runs from -ctx (ctx[0]) to +after; k = 0 is the target, k = -1 is ctx[-1]. Cosines are in
    [-1, 1] (NaN where no window has that chunk). A good predictor peaks at k = 0; a copy-last-like
    one peaks at k = -1.
    """
    w = windows_of(seqs)
    pred = l2_normalize(checked_predictions(pred, w.n, vectors.shape[1]))
    ctx = w.ctx if ctx is None else int(ctx)
    out: dict[int, dict[str, float]] = {}
    for k in range(-ctx, after + 1):
        rows, valid = offset_rows(w, article_ids, chunk_index, k)
        cos = np.einsum("ij,ij->i", pred[valid], l2_normalize(vectors[rows[valid]])).astype(np.float64)
        out[k] = {"cosine": mean_or_nan(cos), "n": int(valid.sum())}
    return out


def peak_offset(sweep: dict[int, dict[str, float]]) -> int:
    """The k of the sweep's highest mean cosine (NaN entries never win): 0 is right, -1 is an echo."""
    return int(max(sweep, key=lambda k: -np.inf if math.isnan(sweep[k]["cosine"]) else sweep[k]["cosine"]))
