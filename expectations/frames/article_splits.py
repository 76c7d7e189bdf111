"""Frames of the ``article_splits`` and ``article_splits_exact`` suites: each article's splits.

Per article in splits.parquet or in the sequences: n_splits (distinct splits over both sources),
n_split_rows (rows in splits.parquet), in_split_table, splits (comma-joined names). Splits are read as
small integer codes, never as one Python string per row. ``article_splits`` holds the seeded sample of
articles; ``article_splits_exact`` (one row) counts the articles that break each rule over all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from expectations.frames.common import require_file
from expectations.frames.npz_blocks import Header, SequenceArrays
from expectations.frames.sample import SampleSpec
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import SPLIT_NAMES

COLUMNS = ("article_id", "n_splits", "n_split_rows", "in_split_table", "splits")
EXACT_COLUMNS = (
    "n_articles",
    "n_in_several_splits",  # n_splits > 1
    "n_repeated_split_rows",  # n_split_rows > 1
    "n_split_conflicts",  # either (the splits_disjoint measure)
    "n_not_in_split_table",  # in the sequences only
)


def read_splits(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(article_id, split code, split names) of every row of splits.parquet; codes index the names."""
    require_file(path)
    try:
        table = pq.read_table(path, columns=["article_id", "split"])
        split = pc.dictionary_encode(table["split"].combine_chunks())
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read columns article_id, split: {exc}") from exc
    names = [str(x) for x in split.dictionary.to_pylist()]
    codes = pc.fill_null(split.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if (codes < 0).any():
        names.append("None")
        codes[codes < 0] = len(names) - 1
    return table["article_id"].to_numpy().astype(np.int64), codes, names


def article_splits_frames(
    splits_table: tuple[np.ndarray, np.ndarray, list[str]], sequences: SequenceArrays, sample: SampleSpec
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the sampled articles' rows, the exact one-row counts) over the split table and the window arrays."""
    table_ids, table_codes, names = splits_table
    names = list(names)
    ids, codes = [table_ids], [table_codes]
    for split in SPLIT_NAMES:
        head = sequences.header(f"{split}_article_ids")
        if isinstance(head, Header) and len(head.shape) == 1 and np.issubdtype(head.dtype, np.integer):
            if split not in names:
                names.append(split)
            uniq = sequences.unique(f"{split}_article_ids").astype(np.int64)
            ids.append(uniq)
            codes.append(np.full(len(uniq), names.index(split), dtype=np.int64))
    pairs = np.unique(np.stack([np.concatenate(ids), np.concatenate(codes)], axis=1), axis=0)
    articles, n_splits = np.unique(pairs[:, 0], return_counts=True)
    table_articles, table_rows = np.unique(table_ids, return_counts=True)
    n_rows = np.zeros(len(articles), dtype=np.int64)
    n_rows[np.searchsorted(articles, table_articles)] = table_rows
    several, repeated, absent = n_splits > 1, n_rows > 1, n_rows == 0
    exact = {
        "n_articles": len(articles),
        "n_in_several_splits": int(several.sum()),
        "n_repeated_split_rows": int(repeated.sum()),
        "n_split_conflicts": int((several | repeated).sum()),
        "n_not_in_split_table": int(absent.sum()),
    }
    picks = sample.positions(len(articles))
    frame = pd.DataFrame(
        {
            "article_id": articles[picks],
            "n_splits": n_splits[picks],
            "n_split_rows": n_rows[picks],
            "in_split_table": ~absent[picks],
            "splits": [_names(pairs, a, names) for a in articles[picks]],
        },
        columns=list(COLUMNS),
    )
    return frame, pd.DataFrame([exact], columns=list(EXACT_COLUMNS))


def _names(pairs: np.ndarray, article: int, names: list[str]) -> str:
    lo, hi = np.searchsorted(pairs[:, 0], [article, article + 1])
    return ",".join(sorted(names[c] for c in pairs[lo:hi, 1]))
