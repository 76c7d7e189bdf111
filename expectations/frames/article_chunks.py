"""Frame of the ``article_chunks`` suite: one row per article in chunks.parquet.

Columns: n_chunks, min_index, max_index, n_distinct_index, span (max - min + 1), rows_in_order (the
article's rows form one block in chunk_index order), in_articles (its id is in articles.parquet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from expectations.frames.common import require_file
from lvm_core.contracts.errors import DataContractError


def read_article_ids(path: Path) -> np.ndarray:
    """The article_id column of articles.parquet."""
    require_file(path)
    try:
        return pq.read_table(path, columns=["article_id"])["article_id"].to_numpy().astype(np.int64)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read column article_id: {exc}") from exc


def article_chunks_frame(chunks: pd.DataFrame, article_ids: np.ndarray) -> pd.DataFrame:
    """Per article: index range and count, whether its rows are one ordered block, whether it is a known article."""
    art = chunks["article_id"].to_numpy()
    idx = chunks["chunk_index"].to_numpy()
    row = np.arange(len(chunks))
    same_as_prev = np.r_[False, art[1:] == art[:-1]]
    # a row breaks the order when it continues its article but its chunk_index does not increase
    breaks = same_as_prev & np.r_[False, idx[1:] <= idx[:-1]]
    frame = pd.DataFrame({"article_id": art, "chunk_index": idx, "row": row, "breaks": breaks})
    g = frame.groupby("article_id", sort=False)
    out = g.agg(
        n_chunks=("chunk_index", "size"),
        min_index=("chunk_index", "min"),
        max_index=("chunk_index", "max"),
        n_distinct_index=("chunk_index", "nunique"),
        first_row=("row", "min"),
        last_row=("row", "max"),
        n_breaks=("breaks", "sum"),
    ).reset_index()
    out["span"] = out["max_index"] - out["min_index"] + 1
    one_block = (out["last_row"] - out["first_row"] + 1) == out["n_chunks"]
    out["rows_in_order"] = one_block & (out["n_breaks"] == 0)
    out["in_articles"] = np.isin(out["article_id"].to_numpy(), article_ids)
    return out[
        ["article_id", "n_chunks", "min_index", "max_index", "n_distinct_index", "span", "rows_in_order", "in_articles"]
    ]
