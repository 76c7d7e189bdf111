"""Frame of the ``article_splits`` suite: one row per article in splits.parquet or in the sequences.

Columns: n_splits (distinct splits over both sources), n_split_rows (rows in splits.parquet),
in_split_table, splits (comma-joined names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from expectations.frames.common import require_file
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import SPLIT_NAMES


def read_splits(path: Path) -> pd.DataFrame:
    """article_id and split of every row of splits.parquet."""
    require_file(path)
    try:
        table = pq.read_table(path, columns=["article_id", "split"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read columns article_id, split: {exc}") from exc
    return pd.DataFrame(
        {
            "article_id": table["article_id"].to_numpy().astype(np.int64),
            "split": table["split"].to_pylist(),
        }
    )


def article_splits_frame(splits_table: pd.DataFrame, sequences: dict[str, np.ndarray | str]) -> pd.DataFrame:
    """Per article: the splits the split table and the window arrays put it in, and its split-table rows."""
    parts = [splits_table.assign(source="table")]
    for split in SPLIT_NAMES:
        ids = sequences.get(f"{split}_article_ids")
        if isinstance(ids, np.ndarray) and ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer):
            uniq = np.unique(ids).astype(np.int64)
            parts.append(pd.DataFrame({"article_id": uniq, "split": split, "source": "sequences"}))
    both = pd.concat(parts, ignore_index=True)
    g = both.groupby("article_id", sort=True)
    out = g.agg(
        n_splits=("split", "nunique"),
        splits=("split", lambda s: ",".join(sorted(set(map(str, s))))),
    ).reset_index()
    table_rows = splits_table.groupby("article_id").size()
    out["n_split_rows"] = out["article_id"].map(table_rows).fillna(0).astype(np.int64)
    out["in_split_table"] = out["n_split_rows"] > 0
    return out[["article_id", "n_splits", "n_split_rows", "in_split_table", "splits"]]
