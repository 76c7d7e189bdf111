"""Frames of the ``article_chunks`` and ``article_chunks_exact`` suites, from the per-chunk numbers of the scan.

Per article (computed for every article, as numeric arrays, from chunks.parquet's article_id and
chunk_index in file order): n_chunks, min_index, max_index, n_distinct_index, span (max - min + 1),
rows_in_order (its rows form one block in strictly increasing chunk_index order), in_articles (its id is
in articles.parquet). ``article_chunks`` holds the seeded sample of articles; ``article_chunks_exact``
(one row) counts the articles that break each rule over all of them.

Articles are found as runs of equal article_id, so the work is a few passes over the two per-chunk
arrays plus arrays per article; only articles that are not one ordered block (none in a sound dataset)
are looked at again row by row, to count their distinct indexes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from expectations.frames.common import require_file
from expectations.frames.sample import SampleSpec
from lvm_core.contracts.errors import DataContractError

COLUMNS = ("article_id", "n_chunks", "min_index", "max_index", "n_distinct_index", "span", "rows_in_order", "in_articles")
EXACT_COLUMNS = (
    "n_articles",
    "n_index_not_from_zero",  # min_index != 0
    "n_repeated_index",  # n_distinct_index != n_chunks
    "n_span_mismatch",  # span != n_chunks
    "n_not_contiguous",  # any of the three (the chunk_index_contiguous measure)
    "n_out_of_order",  # not rows_in_order
    "n_unknown_articles",  # not in articles.parquet
)


def read_article_ids(path: Path) -> np.ndarray:
    """The article_id column of articles.parquet."""
    require_file(path)
    try:
        return pq.read_table(path, columns=["article_id"])["article_id"].to_numpy().astype(np.int64)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read column article_id: {exc}") from exc


def article_chunks_frames(
    article: np.ndarray, index: np.ndarray, article_ids: np.ndarray, sample: SampleSpec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the sampled articles' rows, the exact one-row counts) from per-chunk `article` and `index`."""
    per = article_summaries(article, index, article_ids)
    not_zero = per["min_index"] != 0
    repeated = per["n_distinct_index"] != per["n_chunks"]
    span_off = per["span"] != per["n_chunks"]
    exact = {
        "n_articles": len(per["article_id"]),
        "n_index_not_from_zero": int(not_zero.sum()),
        "n_repeated_index": int(repeated.sum()),
        "n_span_mismatch": int(span_off.sum()),
        "n_not_contiguous": int((not_zero | repeated | span_off).sum()),
        "n_out_of_order": int((~per["rows_in_order"]).sum()),
        "n_unknown_articles": int((~per["in_articles"]).sum()),
    }
    picks = sample.positions(len(per["article_id"]))
    frame = pd.DataFrame({name: per[name][picks] for name in COLUMNS}, columns=list(COLUMNS))
    return frame, pd.DataFrame([exact], columns=list(EXACT_COLUMNS))


def article_summaries(article: np.ndarray, index: np.ndarray, known: np.ndarray) -> dict[str, np.ndarray]:
    """COLUMNS as arrays, one entry per distinct article id (sorted)."""
    n = len(article)
    new_run = np.ones(n, dtype=bool)
    np.not_equal(article[1:], article[:-1], out=new_run[1:])
    # a row breaks the order when it continues its article but its chunk_index does not increase
    breaks = ~new_run
    breaks[1:] &= index[1:] <= index[:-1]
    starts = np.flatnonzero(new_run)
    del new_run
    run_breaks = np.add.reduceat(breaks, starts, dtype=np.int64) if n else np.zeros(0, np.int64)
    del breaks
    run_min = np.minimum.reduceat(index, starts) if n else np.zeros(0, np.int64)
    run_max = np.maximum.reduceat(index, starts) if n else np.zeros(0, np.int64)
    ids, inv, n_runs = np.unique(article[starts], return_inverse=True, return_counts=True)
    n_chunks = np.bincount(inv, weights=np.diff(np.r_[starts, n]), minlength=len(ids)).astype(np.int64)
    lo = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(len(ids), np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(lo, inv, run_min.astype(np.int64))
    np.maximum.at(hi, inv, run_max.astype(np.int64))
    in_order = (n_runs == 1) & (np.bincount(inv, weights=run_breaks, minlength=len(ids)) == 0)
    return {
        "article_id": ids,
        "n_chunks": n_chunks,
        "min_index": lo,
        "max_index": hi,
        "n_distinct_index": _distinct_indexes(article, index, ids, n_chunks, in_order),
        "span": hi - lo + 1,
        "rows_in_order": in_order,
        "in_articles": np.isin(ids, known),
    }


def _distinct_indexes(
    article: np.ndarray, index: np.ndarray, ids: np.ndarray, n_chunks: np.ndarray, in_order: np.ndarray
) -> np.ndarray:
    """Distinct chunk_index values per article: n_chunks where the rows strictly increase, else counted."""
    out = n_chunks.copy()
    odd = np.flatnonzero(~in_order)
    if odd.size:
        rows = np.isin(article, ids[odd])
        pairs = np.unique(np.stack([article[rows], index[rows].astype(np.int64)], axis=1), axis=0)
        pair_ids, counts = np.unique(pairs[:, 0], return_counts=True)
        out[odd] = counts[np.searchsorted(pair_ids, ids[odd])]
    return out
