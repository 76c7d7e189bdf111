"""Retrieval ranks: can the true next chunk be found from the prediction, among all chunks or among its
own article's chunks?

A cosine says how close the prediction is; a rank says whether it is closer than every distractor, which
is what a search over the chunk bank needs. Ties are pessimistic and a chunk with the target's text
hash counts as the target (`ChunkBank.rank_of`), so a collapsed predictor cannot look good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np

from lvm_core.data.retrieval.bank import TIE_EPS, ChunkBank
from lvm_core.data.windows import SequenceLike, SequenceSet
from lvm_core.evaluation.inputs import EvaluationError, checked_predictions, windows_of
from lvm_core.io.vectors import l2_normalize

__all__ = ["rank_summary", "retrieval_metrics", "retrieval_ranks", "within_article_metrics", "within_article_ranks"]


def rank_summary(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """r@k (share of windows whose target ranks within the top k, in [0, 1]) for each k, and mrr (mean of
    1/rank, in (0, 1]); higher is better for both."""
    out = {f"r@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


def retrieval_metrics(
    pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Rank of the true target among ALL bank chunks, the window's own context rows excluded.

    Returns r@k for each k and mrr (in [0, 1], higher is better), and median_rank (>= 1, lower is
    better). Ties are pessimistic; chunks with the target's text hash count as the target (see
    `ChunkBank.rank_of`).
    """
    ranks = retrieval_ranks(pred, bank, seqs)
    out = rank_summary(ranks, ks)
    out["median_rank"] = float(np.median(ranks))
    return out


def retrieval_ranks(pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike) -> np.ndarray:
    """Per-window rank (1 = best) of the true target in the whole bank, context rows excluded."""
    w = windows_of(seqs)
    pred = checked_predictions(pred, w.n, bank.dim)
    return np.asarray(bank.rank_of(pred, w.target_rows, w.context_rows))


def within_article_metrics(
    pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike, ks: Sequence[int] = (1, 5), tie_eps: float = TIE_EPS
) -> dict[str, float]:
    """Rank of the true target among its own article's chunks minus the window's context rows: r@k and
    mrr, in [0, 1], higher is better.

    Harder than it sounds: neighbouring chunks of one article are the closest distractors.
    Same tie policy as `ChunkBank.rank_of` (pessimistic; same-text-hash chunks count as the target).
    """
    return rank_summary(within_article_ranks(pred, bank, seqs, tie_eps), ks)


def within_article_ranks(
    pred: np.ndarray, bank: ChunkBank, seqs: SequenceLike, tie_eps: float = TIE_EPS
) -> np.ndarray:
    """Per-window rank (1 = best) of the true target among its own article's chunks minus the context rows."""
    w = windows_of(seqs)
    pred = l2_normalize(checked_predictions(pred, w.n, bank.dim))
    ranks = np.ones(w.n, dtype=np.int64)
    for aid in np.unique(w.article_ids):
        win = np.flatnonzero(w.article_ids == aid)
        ranks[win] = _article_ranks(pred[win], bank, w, win, int(aid), tie_eps)
    return ranks


def _article_ranks(
    pred: np.ndarray, bank: ChunkBank, w: SequenceSet, win: np.ndarray, aid: int, tie_eps: float
) -> np.ndarray:
    """Ranks of the windows `win` (all of article `aid`) among that article's bank rows."""
    rows = bank.rows_of_article(aid)
    pos_t = np.searchsorted(rows, w.target_rows[win])
    if (
        rows.size == 0
        or (pos_t >= rows.size).any()
        or (rows[np.minimum(pos_t, rows.size - 1)] != w.target_rows[win]).any()
    ):
        raise EvaluationError(f"within_article_metrics: a target row of article {aid} is not in the bank's article")
    scores = pred @ bank.vectors[rows].T
    true_s = scores[np.arange(win.size), pos_t]
    ahead = scores >= (true_s - np.float32(tie_eps))[:, None]
    codes = bank.hash_codes
    if codes is not None:
        ahead &= codes[rows][None, :] != codes[w.target_rows[win]][:, None]
    ahead[np.arange(win.size), pos_t] = False
    ctx_rows = w.context_rows[win]
    pos_c = np.searchsorted(rows, ctx_rows)
    in_art = (pos_c < rows.size) & (rows[np.minimum(pos_c, rows.size - 1)] == ctx_rows)
    ii, jj = np.nonzero(in_art)
    ahead[ii, pos_c[ii, jj]] = False
    return cast(np.ndarray, 1 + ahead.sum(axis=1))
