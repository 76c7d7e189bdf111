"""Leakage between train and val/ood: shared articles, shared chunk text, near-duplicate vectors.

Three checks between train and the evaluation splits (DESIGN "Leakage", all must end at 0), and the
same text and vector checks between val and test (``val_test``): a test chunk repeating a val chunk
lets what selection saw on val reappear in the reported number.

1. ``article_overlap``: article ids whose rows carry more than one split name.
2. ``text_hash_overlap``: val/ood chunks whose normalised-text hash (``chunks.text_hash``) also occurs
   in a train chunk.
3. ``near_duplicates``: val/ood chunk vectors with cosine >= threshold (default 0.995) to some train chunk.
   Exact text duplicates embed identically, so they are counted here too; both numbers are reported.

At scale (10^8 chunks) nothing here holds the vectors or the hash strings in memory: the build passes
the text hashes as 64-bit codes (`hash_codes`; sorted train codes, ``searchsorted``; hash strings, as
tests pass them, are matched on 64-bit codes and confirmed on the strings), the split of each row is an
int8 code (`SPLIT_CODES`), and the near-duplicate check streams gathered row blocks of the
(memory-mapped, float32 or float16) matrix through `retrieval.max_cosine` — exact while the scan stays
within `retrieval.EXACT_PAIR_BUDGET` (val/ood x train) pairs (numpy, or ``faiss.knn`` from
`retrieval.FAISS_AUTO_THRESHOLD` train rows), above it the bounded IVF scan, whose cost
(``near_duplicates.search``) and recall against an exact scan of a seeded sample
(``near_duplicates.near_dup_recall``) are in the report.

Real Wikipedia repeats boilerplate sentences across articles ("This article is a stub", list
intros, coordinates lines), so a clean article split still has a few val/ood chunks whose text also sits
in train. The dataset builder therefore records the raw counts of this report, removes every val/ood
window whose target or any context row leaks (:func:`purge_leaking_windows`), and records the
post-purge leakage (:meth:`LeakageScan.report` over the rows still in use), which must then be 0. The leaking chunks stay
in the chunk table and the retrieval bank; only the windows that would score a model on memorised
text are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import polars as pl

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import EVAL_SPLITS, SPLIT_NAMES
from lvm_core.data.retrieval.nearest import (
    ivf_plan,
    max_cosine,
    max_cosine_backend,
    max_cosine_ivf,
    max_cosine_recall,
)
from lvm_core.data.windows import SequenceSet

#: Split of each row as an int8 code (`SPLIT_NAMES` order); `UNSPLIT` for rows of no split.
SPLIT_CODES: dict[str, int] = {name: i for i, name in enumerate(SPLIT_NAMES)}
UNSPLIT = -1
_EVAL_CODES = np.array([SPLIT_CODES[s] for s in EVAL_SPLITS], dtype=np.int8)


def split_codes(row_split: Any) -> np.ndarray:
    """(n,) int8 split code per row from split names ("" = no split) or codes; refuses unknown names."""
    arr = np.asarray(row_split)
    if np.issubdtype(arr.dtype, np.integer):
        codes = arr.astype(np.int8, copy=False)
        if codes.size and (codes.min() < UNSPLIT or codes.max() >= len(SPLIT_NAMES)):
            raise DataContractError(f"row_split has unknown split code(s) outside {UNSPLIT}..{len(SPLIT_NAMES) - 1}")
        return codes
    names, inverse = np.unique(arr.astype(str), return_inverse=True)
    unknown = set(names.tolist()) - {"", *SPLIT_NAMES}
    if unknown:
        raise DataContractError(f"row_split has unknown split name(s) {sorted(unknown)}")
    table = np.array([SPLIT_CODES.get(str(x), UNSPLIT) for x in names], dtype=np.int8)
    return table[inverse.reshape(arr.shape)]


@dataclass
class LeakageScan:
    """Per-row leakage of one split assignment (:func:`scan_leakage`): compute once, then read the counts
    (:meth:`report`) and the row mask (:attr:`leaking_rows`) from it."""

    row_split: np.ndarray  # (n,) int8 split code per row (`SPLIT_CODES`; names are converted), -1 unsplit
    text_leak: np.ndarray  # (n,) bool: val/ood row whose text hash occurs in train
    near_leak: np.ndarray  # (n,) bool: val/ood row with max cos to train >= threshold
    max_train_cos: np.ndarray  # (n,) float32: max cos to any train row (NaN for non-val/ood rows)
    article_overlap: int
    overlapping_articles: list[int]
    threshold: float
    backend: str = "exact"  # near-duplicate search: exact, faiss-flat (exact) or ivf (bounded, approximate)
    search: dict[str, Any] = field(default_factory=dict)  # cost bound and measured recall of the search
    val_test_text: np.ndarray | None = None  # (n,) bool: test row whose text hash occurs in val
    val_test_near: np.ndarray | None = None  # (n,) bool: test row with max cos to val >= threshold

    def __post_init__(self) -> None:
        self.row_split = split_codes(self.row_split)

    @property
    def leaking_rows(self) -> np.ndarray:
        """(n,) bool: val/ood rows that leak by text hash or near-duplicate vector."""
        return cast(np.ndarray, self.text_leak | self.near_leak)

    def report(self) -> dict[str, Any]:
        counts = {s: int(np.count_nonzero(self.row_split == SPLIT_CODES[s])) for s in SPLIT_NAMES}
        n_eval = sum(counts[s] for s in EVAL_SPLITS)
        text, near, either = {}, {}, {}
        for s in EVAL_SPLITS:
            rows = np.flatnonzero(self.row_split == SPLIT_CODES[s])
            text[s] = int(np.count_nonzero(self.text_leak[rows]))
            near[s] = int(np.count_nonzero(self.near_leak[rows]))
            either[s] = int(np.count_nonzero(self.text_leak[rows] | self.near_leak[rows]))
        finite = self.max_train_cos[np.isin(self.row_split, _EVAL_CODES)]
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
                "backend": self.backend,
                **self.search,
            },
            "leaking_rows": {**either, "rate": _rate(sum(either.values()), n_eval)},
            "val_test": self._val_test(),
        }

    def _val_test(self) -> dict[str, Any]:
        """Test rows (of this assignment) repeating a val chunk's text or nearly its vector, and their share."""
        test = self.row_split == SPLIT_CODES["test"]
        n = int(np.count_nonzero(test))
        text = self.val_test_text if self.val_test_text is not None else np.zeros(test.shape, dtype=bool)
        near = self.val_test_near if self.val_test_near is not None else np.zeros(test.shape, dtype=bool)
        either = int(np.count_nonzero((text | near) & test))
        return {"test_rows": n, "text_hash_overlap": int(np.count_nonzero(text & test)),
                "near_duplicates": int(np.count_nonzero(near & test)), "rate": _rate(either, n)}


def scan_leakage(
    article_ids: np.ndarray,
    text_hash: Any,
    vectors: np.ndarray,
    row_split: np.ndarray,
    near_dup_threshold: float = 0.995,
    query_block: int = 2048,
    train_block: int = 8192,
    use_faiss: bool | None = None,
) -> LeakageScan:
    """Run all three checks. Near duplicates use blockwise matrix products of (query_block x train_block)
    similarities over gathered row blocks, so memory stays at ~(query_block + train_block) x D floats
    plus one similarity block (64 MiB at the defaults) for any table size; above
    `retrieval.EXACT_PAIR_BUDGET` pairs the bounded IVF scan (its cost and recall go in the report).
    `use_faiss` None picks the backend by size (`retrieval.max_cosine_backend`); True/False force an exact
    scan with/without FAISS. `text_hash`: uint64 codes (`hash_codes`) or hash strings; `row_split`: split
    names or int8 codes (`split_codes`).
    """
    article_ids = np.asarray(article_ids)
    codes = split_codes(row_split)
    _check_inputs(article_ids, text_hash, vectors, codes)

    # 1. articles carrying more than one split
    overlapping = _overlapping_articles(article_ids, codes)

    train = codes == SPLIT_CODES["train"]
    evalmask = np.isin(codes, _EVAL_CODES)

    # 2. text hash of a val/ood chunk also present in train
    text_leak = _hash_leaks(text_hash, train, evalmask)

    # 3. near-duplicate vectors
    max_cos, backend, search = _max_train_cosine(
        vectors, train, evalmask, use_faiss, query_block, train_block, near_dup_threshold
    )
    with np.errstate(invalid="ignore"):
        near_leak = evalmask & (max_cos >= near_dup_threshold)

    # 4. val <-> test: test chunks repeating a val chunk (text hash, or a near-duplicate vector)
    val, test = codes == SPLIT_CODES["val"], codes == SPLIT_CODES["test"]
    vt_text = _hash_leaks(text_hash, val, test)
    vt_near = np.zeros(codes.shape[0], dtype=bool)
    if val.any() and test.any():
        vt_cos, _, _ = _max_train_cosine(vectors, val, test, use_faiss, query_block, train_block, near_dup_threshold)
        with np.errstate(invalid="ignore"):
            vt_near = test & (vt_cos >= near_dup_threshold)

    return LeakageScan(
        row_split=codes,
        text_leak=text_leak,
        near_leak=near_leak,
        max_train_cos=max_cos,
        article_overlap=len(overlapping),
        overlapping_articles=[int(x) for x in overlapping],
        threshold=float(near_dup_threshold),
        backend=backend,
        search=search,
        val_test_text=vt_text,
        val_test_near=vt_near,
    )


def _hash_leaks(text_hash: Any, reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Rows of `query` whose text hash is also a hash of a `reference` row (codes or hash strings)."""
    if isinstance(text_hash, np.ndarray) and np.issubdtype(text_hash.dtype, np.integer):
        return code_leaks(text_hash, reference, query)
    return text_hash_leaks(_as_hash_series(text_hash), reference, query)


def _check_inputs(article_ids: np.ndarray, text_hash: Any, vectors: np.ndarray, row_split: np.ndarray) -> None:
    """Refuse inputs that are not aligned row for row."""
    n = article_ids.shape[0]
    n_hash = len(text_hash)
    if vectors.ndim != 2 or vectors.shape[0] != n or row_split.shape != (n,) or n_hash != n:
        raise DataContractError(
            f"leakage inputs are not aligned: article_ids {n} rows, text_hash {n_hash}, "
            f"vectors {vectors.shape}, row_split {row_split.shape}"
        )


def _overlapping_articles(article_ids: np.ndarray, row_split: np.ndarray) -> list[Any]:
    """Ids of the articles whose rows carry more than one split, ascending."""
    per_article = (
        pl.DataFrame({"article_id": article_ids.astype(np.int64, copy=False), "split": row_split})
        .lazy()
        .filter(pl.col("split") != UNSPLIT)
        .group_by("article_id")
        .agg(pl.col("split").n_unique().alias("n_splits"))
        .filter(pl.col("n_splits") > 1)
        .sort("article_id")
        .collect()
    )
    return per_article["article_id"].to_list()


def _max_train_cosine(
    vectors: np.ndarray, train: np.ndarray, evalmask: np.ndarray, use_faiss: bool | None,
    query_block: int, train_block: int, threshold: float,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Max cosine of each val/ood row to any train row (NaN elsewhere), the backend, and for the bounded
    scan its cost bound and measured recall (``search`` and ``near_dup_recall`` of the report)."""
    max_cos = np.full(train.shape[0], np.nan, dtype=np.float32)
    eval_rows = np.flatnonzero(evalmask)
    train_rows = np.flatnonzero(train)
    backend = max_cosine_backend(int(train_rows.size), use_faiss, n_query=int(eval_rows.size))
    search: dict[str, Any] = {}  # an exact scan (within EXACT_PAIR_BUDGET) needs no bound and has recall 1
    if backend == "ivf":
        plan = ivf_plan(eval_rows.size, train_rows.size)
        best, pairs = max_cosine_ivf(vectors, eval_rows, train_rows, plan)
        search = {
            "search": {**plan.to_dict(), "pairs_scored": pairs},
            "near_dup_recall": max_cosine_recall(vectors, eval_rows, train_rows, best, threshold),
        }
        max_cos[eval_rows] = np.where(np.isfinite(best), best, np.nan)
    elif eval_rows.size:
        best = max_cosine(
            vectors, eval_rows, train_rows, backend=backend, query_block=query_block, bank_block=train_block
        )
        max_cos[eval_rows] = np.where(np.isfinite(best), best, np.nan)
    return max_cos, backend, search


def code_leaks(codes: np.ndarray, train: np.ndarray, evalmask: np.ndarray) -> np.ndarray:
    """(n,) bool: eval rows whose 64-bit text-hash code (`hash_codes`) occurs in a train row.

    Sorted unique train codes + searchsorted: 8 bytes a train row. Equal texts always match; two texts
    collide with probability 2^-64 a pair (see `hash_codes`), which could only flag one row too many.
    """
    codes = np.asarray(codes).astype(np.uint64, copy=False)
    out = np.zeros(codes.shape[0], dtype=bool)
    eval_rows = np.flatnonzero(evalmask)
    train_codes = np.unique(codes[train])
    if eval_rows.size == 0 or train_codes.size == 0:
        return out
    ev = codes[eval_rows]
    pos = np.minimum(np.searchsorted(train_codes, ev), train_codes.size - 1)
    out[eval_rows[train_codes[pos] == ev]] = True
    return out


def _as_hash_series(text_hash: Any) -> pl.Series:
    """Text hashes as a polars string Series (a pyarrow column converts without a Python list)."""
    if isinstance(text_hash, pl.Series):
        return text_hash.cast(pl.Utf8)
    if hasattr(text_hash, "__arrow_c_stream__") or hasattr(text_hash, "__arrow_c_array__"):
        series = pl.Series("text_hash", text_hash)
        return series.cast(pl.Utf8)
    return pl.Series("text_hash", text_hash, dtype=pl.Utf8)


def text_hash_leaks(hashes: pl.Series, train: np.ndarray, evalmask: np.ndarray) -> np.ndarray:
    """(n,) bool: eval rows whose text hash occurs in a train row.

    64-bit codes of the hash strings are matched with numpy (sorted unique train codes + searchsorted:
    8 bytes a row, no hash set of strings); the candidate rows are then confirmed on the strings, so a
    code collision between two different texts is never reported as a leak.
    """
    codes = hashes.hash(seed=0).to_numpy()
    train_codes = np.unique(codes[train])
    eval_rows = np.flatnonzero(evalmask)
    out = np.zeros(codes.shape[0], dtype=bool)
    if eval_rows.size == 0 or train_codes.size == 0:
        return out
    ev = codes[eval_rows]
    pos = np.minimum(np.searchsorted(train_codes, ev), train_codes.size - 1)
    cand = eval_rows[train_codes[pos] == ev]
    if cand.size:
        train_same = hashes.filter(pl.Series(train & np.isin(codes, codes[cand])))
        confirmed = hashes.gather(cand).is_in(train_same.implode()).fill_null(False).to_numpy()
        out[cand[confirmed]] = True
    return out


def purge_leaking_windows(seqs: SequenceSet, leaking_row_mask: np.ndarray) -> tuple[SequenceSet, int]:
    """Drop windows whose target or any context row leaks; returns (kept windows, number removed)."""
    if len(seqs) == 0:
        return seqs, 0
    mask = np.asarray(leaking_row_mask, dtype=bool)
    hit = mask[seqs.target_rows] | mask[seqs.context_rows].any(axis=1)
    return seqs.subset(~hit), int(hit.sum())


def _rate(count: int, total: int) -> float:
    return float(count / total) if total else 0.0
