"""Breakdowns for a human reader: the nearest chunk texts to a few predictions, and cosine per
coherence bin of the window's article.

Averages hide what a prediction looks like; the neighbour table shows the texts a search would return,
and the per-bin cosine shows whether the model only works on articles that are easy to continue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.windows import SequenceLike
from lvm_core.evaluation.inputs import EvaluationError, checked_predictions, windows_of
from lvm_core.evaluation.metrics.cosine import mean_or_nan, rowwise_cosine

__all__ = ["cosine_by_bin", "neighbor_table"]


def neighbor_table(
    pred: np.ndarray,
    bank: ChunkBank,
    texts: Sequence[str] | np.ndarray,
    seqs: SequenceLike,
    n_samples: int = 5,
    k: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Nearest chunk texts to the prediction for a few seeded sample windows (context rows excluded).

    Each row: window, article_id, target_chunk_index, context_last (text), target (text),
    cosine_to_target, target_rank, neighbors [{row, score, text, is_target}] — for a human to judge.
    """
    w = windows_of(seqs)
    pred = checked_predictions(pred, w.n, bank.dim)
    if len(texts) != bank.n:
        raise EvaluationError(f"neighbor_table: texts has {len(texts)} rows, expected {bank.n}")
    if w.n == 0 or n_samples < 1:
        return []
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(w.n, size=min(n_samples, w.n), replace=False))
    sub = w.subset(pick)
    scores, rows = bank.search(pred[pick], k, sub.context_rows)
    ranks = bank.rank_of(pred[pick], sub.target_rows, sub.context_rows)
    cos = rowwise_cosine(pred[pick], bank.vectors[sub.target_rows])
    text_of = _texts_of(texts, np.concatenate([sub.context_rows[:, -1], sub.target_rows, rows[rows >= 0]]))
    out = []
    for i, win in enumerate(pick):
        out.append(
            {
                "window": int(win),
                "article_id": int(sub.article_ids[i]),
                "target_chunk_index": int(sub.target_chunk_index[i]),
                "context_last": text_of[int(sub.context_rows[i, -1])],
                "target": text_of[int(sub.target_rows[i])],
                "cosine_to_target": float(cos[i]),
                "target_rank": int(ranks[i]),
                "neighbors": _neighbors(scores[i], rows[i], int(sub.target_rows[i]), bank, text_of),
            }
        )
    return out


def _texts_of(texts: Sequence[str] | np.ndarray, rows: np.ndarray) -> dict[int, str]:
    """{row: text} for `rows`, in one read when `texts` reads lazily (`ColumnRows.take`)."""
    wanted = sorted({int(r) for r in rows})
    take = getattr(texts, "take", None)
    values = take(wanted) if callable(take) and not isinstance(texts, np.ndarray) else [texts[r] for r in wanted]
    return {r: str(v) for r, v in zip(wanted, values)}


def _neighbors(
    scores: np.ndarray, rows: np.ndarray, target: int, bank: ChunkBank, texts: dict[int, str]
) -> list[dict[str, Any]]:
    """One window's search hits as {row, score, text, is_target} (a same-text-hash chunk is the target)."""
    codes = bank.hash_codes
    neigh = []
    for s, r in zip(scores, rows):
        if r < 0:
            continue
        same = r == target or (codes is not None and codes[r] == codes[target])
        neigh.append({"row": int(r), "score": float(s), "text": texts[int(r)], "is_target": bool(same)})
    return neigh


def cosine_by_bin(
    cos: np.ndarray, seqs: SequenceLike, article_bins: Mapping[int, Any]
) -> tuple[dict[Any, float], dict[Any, int]]:
    """Mean per-window cosine (in [-1, 1], higher is better) per coherence bin of the window's article,
    and the windows per bin (articles without a bin skipped). A model whose cosine rises steeply with
    the bin mostly continues articles that are easy to continue."""
    w = windows_of(seqs)
    labels = [article_bins.get(int(a)) for a in w.article_ids]
    means: dict[Any, float] = {}
    counts: dict[Any, int] = {}
    for b in sorted({b for b in labels if b is not None}, key=lambda x: (str(type(x)), x)):
        sel = np.array([lab == b for lab in labels])
        means[b] = mean_or_nan(cos[sel])
        counts[b] = int(sel.sum())
    return means, counts
