"""Leakage between train and val/ood: shared articles, shared chunk text, near-duplicate vectors.

Three checks (DESIGN "Leakage", all must end at 0):

1. ``article_overlap``: article ids whose rows carry more than one split name.
2. ``text_hash_overlap``: val/ood chunks whose normalised-text hash (``chunks.text_hash``) also occurs
   in a train chunk.
3. ``near_duplicates``: val/ood chunk vectors with cosine >= threshold (default 0.995) to some train chunk.
   Exact text duplicates embed identically, so they are counted here too; both numbers are reported.

Real Wikipedia repeats boilerplate sentences across articles ("This article is a stub", list
intros, coordinates lines), so a clean article split still has a few val/ood chunks whose text also sits
in train. The dataset builder therefore records the raw counts of this report, removes every val/ood
window whose target or any context row leaks (:func:`purge_leaking_windows`), and records the
post-purge window leakage (:func:`count_leaking_windows`), which must then be 0. The leaking chunks stay
in the chunk table and the retrieval bank; only the windows that would score a model on memorised
text are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from lvm_core.contracts import EVAL_SPLITS, DataContractError
from lvm_core.sequences import SequenceSet


@dataclass
class LeakageScan:
    """Per-row leakage of one split assignment; compute once, read the report and the row mask from it."""

    row_split: np.ndarray  # (n,) split name per row, "" for unsplit rows
    text_leak: np.ndarray  # (n,) bool: val/ood row whose text hash occurs in train
    near_leak: np.ndarray  # (n,) bool: val/ood row with max cos to train >= threshold
    max_train_cos: np.ndarray  # (n,) float32: max cos to any train row (NaN for non-val/ood rows)
    article_overlap: int
    overlapping_articles: list[int]
    threshold: float

    @property
    def leaking_rows(self) -> np.ndarray:
        return self.text_leak | self.near_leak

    def report(self) -> dict[str, Any]:
        counts = {s: int((self.row_split == s).sum()) for s in ("train", *EVAL_SPLITS)}
        n_eval = sum(counts[s] for s in EVAL_SPLITS)
        text = {s: int((self.text_leak & (self.row_split == s)).sum()) for s in EVAL_SPLITS}
        near = {s: int((self.near_leak & (self.row_split == s)).sum()) for s in EVAL_SPLITS}
        either = {s: int((self.leaking_rows & (self.row_split == s)).sum()) for s in EVAL_SPLITS}
        evalmask = np.isin(self.row_split, EVAL_SPLITS)
        finite = self.max_train_cos[evalmask]
        finite = finite[np.isfinite(finite)]
        return {
            "rows": counts,
            "article_overlap": self.article_overlap,
            "overlapping_articles": self.overlapping_articles[:20],
            "text_hash_overlap": {**text, "rate": _rate(sum(text.values()), n_eval)},
            "near_duplicates": {
                **near,
                "rate": _rate(sum(near.values()), n_eval),
                "threshold": self.threshold,
                "max_cos": float(finite.max()) if finite.size else None,
            },
            "leaking_rows": {**either, "rate": _rate(sum(either.values()), n_eval)},
        }


def scan_leakage(
    article_ids: np.ndarray,
    text_hash: Any,
    vectors: np.ndarray,
    row_split: np.ndarray,
    near_dup_threshold: float = 0.995,
    query_block: int = 2048,
    train_block: int = 8192,
) -> LeakageScan:
    """Run all three checks. Near duplicates use blockwise matrix products of (query_block x train_block)
    similarities over gathered row blocks, so memory stays at ~(query_block + train_block) x D floats
    plus one similarity block (64 MiB at the defaults) for any table size.
    """
    article_ids = np.asarray(article_ids)
    row_split = np.asarray(row_split).astype(str)
    n = article_ids.shape[0]
    if isinstance(text_hash, pl.Series):
        hashes = text_hash.cast(pl.Utf8)
    else:
        hashes = pl.Series("text_hash", text_hash, dtype=pl.Utf8)
    if vectors.ndim != 2 or vectors.shape[0] != n or row_split.shape != (n,) or hashes.len() != n:
        raise DataContractError(
            f"leakage inputs are not aligned: article_ids {n} rows, text_hash {hashes.len()}, "
            f"vectors {vectors.shape}, row_split {row_split.shape}"
        )
    unknown = set(np.unique(row_split).tolist()) - {"", "train", *EVAL_SPLITS}
    if unknown:
        raise DataContractError(f"row_split has unknown split name(s) {sorted(unknown)}")

    # 1. articles carrying more than one split
    per_article = (
        pl.DataFrame({"article_id": article_ids.astype(np.int64), "split": row_split})
        .filter(pl.col("split") != "")
        .group_by("article_id")
        .agg(pl.col("split").n_unique().alias("n_splits"))
        .filter(pl.col("n_splits") > 1)
        .sort("article_id")
    )
    overlapping = per_article["article_id"].to_list()

    train = row_split == "train"
    evalmask = np.isin(row_split, EVAL_SPLITS)

    # 2. text hash of a val/ood chunk also present in train
    train_hashes = hashes.filter(pl.Series(train)).unique()
    text_leak = (hashes.is_in(train_hashes.implode()).fill_null(False).to_numpy()) & evalmask

    # 3. near-duplicate vectors
    max_cos = np.full(n, np.nan, dtype=np.float32)
    eval_rows = np.flatnonzero(evalmask)
    train_rows = np.flatnonzero(train)
    if eval_rows.size:
        best = np.full(eval_rows.size, -np.inf, dtype=np.float32)
        for ts in range(0, train_rows.size, train_block):
            t = np.asarray(vectors[train_rows[ts : ts + train_block]], dtype=np.float32)
            for qs in range(0, eval_rows.size, query_block):
                q = np.asarray(vectors[eval_rows[qs : qs + query_block]], dtype=np.float32)
                sims = q @ t.T
                np.maximum(best[qs : qs + q.shape[0]], sims.max(axis=1), out=best[qs : qs + q.shape[0]])
        max_cos[eval_rows] = np.where(np.isfinite(best), best, np.nan)
    with np.errstate(invalid="ignore"):
        near_leak = evalmask & (max_cos >= near_dup_threshold)

    return LeakageScan(
        row_split=row_split,
        text_leak=text_leak,
        near_leak=near_leak,
        max_train_cos=max_cos,
        article_overlap=len(overlapping),
        overlapping_articles=[int(x) for x in overlapping],
        threshold=float(near_dup_threshold),
    )


def leakage_report(
    article_ids: np.ndarray,
    text_hash: Any,
    vectors: np.ndarray,
    row_split: np.ndarray,
    near_dup_threshold: float = 0.995,
) -> dict[str, Any]:
    """Counts and rates of the three leakage checks (see module docstring). One pass of
    :func:`scan_leakage`; call that directly when you also need :func:`leaking_rows`."""
    return scan_leakage(article_ids, text_hash, vectors, row_split, near_dup_threshold).report()


def leaking_rows(
    article_ids: np.ndarray,
    text_hash: Any,
    vectors: np.ndarray,
    row_split: np.ndarray,
    near_dup_threshold: float = 0.995,
) -> np.ndarray:
    """(n,) bool: val/ood rows that leak by text hash or near-duplicate vector."""
    return scan_leakage(article_ids, text_hash, vectors, row_split, near_dup_threshold).leaking_rows


def count_leaking_windows(seqs: SequenceSet, leaking_row_mask: np.ndarray) -> int:
    """Windows whose target or any context row is marked leaking."""
    if len(seqs) == 0:
        return 0
    mask = np.asarray(leaking_row_mask, dtype=bool)
    hit = mask[seqs.target_rows] | mask[seqs.context_rows].any(axis=1)
    return int(hit.sum())


def purge_leaking_windows(seqs: SequenceSet, leaking_row_mask: np.ndarray) -> tuple[SequenceSet, int]:
    """Drop windows whose target or any context row leaks; returns (kept windows, number removed)."""
    if len(seqs) == 0:
        return seqs, 0
    mask = np.asarray(leaking_row_mask, dtype=bool)
    hit = mask[seqs.target_rows] | mask[seqs.context_rows].any(axis=1)
    return seqs.subset(~hit), int(hit.sum())


def _rate(count: int, total: int) -> float:
    return float(count / total) if total else 0.0
