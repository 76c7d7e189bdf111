"""The row layout of the chunk table: each article one contiguous run of rows, chunk_index 0..n_i-1.

Windows (`windows.build_windows`) and coherence both rely on it; a window or a consecutive-chunk
cosine taken on misordered rows silently crosses chunks or articles, so both check it here first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvm_core.contracts.errors import DataContractError


@dataclass(frozen=True)
class ArticleRuns:
    """Row layout of the chunk table: one run of rows per article (validated by check_chunk_order)."""

    starts: np.ndarray  # (n_articles,) first row of each article
    lengths: np.ndarray  # (n_articles,) rows per article
    article_ids: np.ndarray  # (n_articles,) in dataset order
    is_start: np.ndarray  # (n_rows,) bool: row is chunk 0 of its article


def check_chunk_order(article_ids: np.ndarray, chunk_index: np.ndarray) -> ArticleRuns:
    """Validate the row layout: each article is one contiguous run of rows with chunk_index 0, 1, ..., n_i-1.

    Raises DataContractError naming the first offending article. Cost: a few passes over the two
    index arrays (no per-row Python work).
    """
    article_ids = np.asarray(article_ids)
    chunk_index = np.asarray(chunk_index)
    if article_ids.ndim != 1 or chunk_index.ndim != 1:
        raise DataContractError(
            f"article_ids and chunk_index must be 1-D, got shapes {article_ids.shape} and {chunk_index.shape}"
        )
    if article_ids.shape != chunk_index.shape:
        raise DataContractError(
            f"article_ids ({article_ids.shape[0]} rows) and chunk_index ({chunk_index.shape[0]} rows) "
            "are not aligned"
        )
    if not np.issubdtype(article_ids.dtype, np.integer) or not np.issubdtype(chunk_index.dtype, np.integer):
        raise DataContractError(
            f"article_ids and chunk_index must be integer arrays, got {article_ids.dtype} and {chunk_index.dtype}"
        )
    n = article_ids.shape[0]
    if n == 0:
        z = np.empty(0, np.int64)
        return ArticleRuns(z, z, z, np.empty(0, bool))
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(article_ids[1:], article_ids[:-1], out=is_start[1:])

    starts = np.flatnonzero(is_start)
    lengths = np.diff(np.append(starts, n))
    run_ids = article_ids[starts].astype(np.int64)
    # An article id that starts two runs is split across the table.
    order = np.argsort(run_ids, kind="stable")
    sorted_ids = run_ids[order]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1
    if repeated.size:
        second_run = int(order[repeated].min())  # the earliest run whose article was seen before
        art = int(run_ids[second_run])
        raise DataContractError(
            f"chunk rows of article {art} are not contiguous: the article reappears at row "
            f"{int(starts[second_run])} after other articles (rows must be grouped by article)"
        )

    # chunk 0 at each article start, +1 from each row to the next inside an article
    ok = np.empty(n, dtype=bool)
    ok[0] = chunk_index[0] == 0
    np.equal(np.diff(chunk_index), 1, out=ok[1:])
    ok[1:] = np.where(is_start[1:], chunk_index[1:] == 0, ok[1:])
    if not ok.all():
        row = int(np.argmin(ok))
        expected = int(np.argmax(is_start[row::-1]))  # rows back to this article's first row
        raise DataContractError(
            f"chunk_index of article {int(article_ids[row])} is not contiguous 0..n-1 in row order: row {row} "
            f"has chunk_index {int(chunk_index[row])}, expected {expected}"
        )

    return ArticleRuns(starts, lengths, run_ids, is_start)
