"""Frames of the ``chunks`` and ``chunks_exact`` suites, from one streaming pass over chunks.parquet.

The file is read in record batches with pre-buffering off (`lvm_core.data.ingest.base.open_parquet`), so the reader holds a few MB
whatever the file or row-group size. Each batch is reduced before the next is read: the text to its
stripped length, the chunk_id to a 64-bit hash. What is kept per chunk is numeric: its article id (8 B),
chunk index (4 B, both needed by the window recount) and the chunk_id hash (8 B, sorted once to count
duplicates; equal hashes are confirmed on the ids themselves in a second pass over chunk_id, so a hash
collision never fails the gate). The rows of the seeded sample keep every column the ``chunks`` suite checks.

Measured on 10^6 synthetic chunks (docs/data-gates.md): this reader keeps the Arrow pool at ~31 MB at
any size; a polars streaming query is faster but its exact `n_unique` holds every chunk_id (~0.4 KB per
chunk), and reading whole row groups holds one row group's text (1.2 GB for a million-row group).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from expectations.frames.common import require_file
from expectations.frames.sample import SampleSpec
from lvm_core.contracts.errors import DataContractError
from lvm_core.data.ingest.base import open_parquet

CHUNK_COLUMNS = ("chunk_id", "article_id", "chunk_index", "text", "n_words")
SAMPLE_COLUMNS = ("row", "chunk_id", "article_id", "chunk_index", "n_words", "text_chars")
EXACT_COLUMNS = (
    "n_rows",
    "n_null_chunk_id",
    "n_empty_chunk_id",
    "n_duplicate_chunk_id",  # rows whose chunk_id an earlier row already has
    "n_blank_text",  # text empty or whitespace only
    "n_no_words",  # n_words < 1
    "n_empty_rows",  # rows with a blank text or no words (the chunk_text_nonempty measure)
)
BATCH_ROWS = 16_384
_READ_BUFFER = 1 << 20
_HASH_SEED = 0x5EED


@dataclass
class ChunkScan:
    """What the gates need of chunks.parquet: per-chunk article id and index, exact facts, the sample."""

    article_id: np.ndarray  # int64, one per row in file order
    chunk_index: np.ndarray  # int32, one per row in file order
    exact: pd.DataFrame  # one row, EXACT_COLUMNS
    sample: pd.DataFrame  # the sampled rows, SAMPLE_COLUMNS

    @property
    def n_rows(self) -> int:
        return len(self.article_id)


def scan_chunks(path: Path, sample: SampleSpec) -> ChunkScan:
    """One pass over chunks.parquet: exact counts over every row, the sampled rows, per-chunk numbers."""
    require_file(path)
    reader = open_parquet(path, CHUNK_COLUMNS, error=DataContractError, pre_buffer=False, buffer_size=_READ_BUFFER)
    n = reader.metadata.num_rows
    picks = sample.positions(n)
    article = np.empty(n, dtype=np.int64)
    index = np.empty(n, dtype=np.int32)
    hashes = np.empty(n, dtype=np.uint64)
    counts = dict.fromkeys(EXACT_COLUMNS, 0)
    parts: list[pd.DataFrame] = []
    start = n_hashed = 0
    try:
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=list(CHUNK_COLUMNS), use_threads=False):
            stop = start + batch.num_rows
            article[start:stop] = batch.column("article_id").to_numpy(zero_copy_only=False)
            index[start:stop] = batch.column("chunk_index").to_numpy(zero_copy_only=False)
            ids = batch.column("chunk_id")
            kept = _id_hashes(ids)
            hashes[n_hashed : n_hashed + len(kept)] = kept
            n_hashed += len(kept)
            text_chars = _count_batch(batch, counts)
            parts.append(_sample_part(batch, text_chars, picks, start))
            start = stop
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataContractError(f"{path}: cannot read columns {list(CHUNK_COLUMNS)}: {exc}") from exc
    counts["n_rows"] = n
    counts["n_duplicate_chunk_id"] = _duplicates(hashes[:n_hashed], reader)
    del hashes
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SAMPLE_COLUMNS))
    return ChunkScan(article, index, pd.DataFrame([counts], columns=list(EXACT_COLUMNS)), frame)


def _id_hashes(ids: pa.Array) -> np.ndarray:
    """64-bit hashes of the non-null chunk ids of a batch (nulls are counted, not compared)."""
    return _hash(pl.Series(ids).drop_nulls()).to_numpy()


def _hash(ids: pl.Series) -> pl.Series:
    """The 64-bit hash both passes use (stable within a process, which is all they need)."""
    return ids.hash(seed=_HASH_SEED)


def _count_batch(batch: pa.RecordBatch, counts: dict[str, int]) -> pa.Array:
    """Add the batch's null/empty ids, blank texts and word-less rows to `counts`; its stripped text lengths."""
    ids = batch.column("chunk_id")
    counts["n_null_chunk_id"] += ids.null_count
    counts["n_empty_chunk_id"] += _true(pc.equal(pc.utf8_length(ids), 0))
    text_chars = pc.utf8_length(pc.utf8_trim_whitespace(batch.column("text")))
    blank = pc.fill_null(pc.less(text_chars, 1), True)
    no_words = pc.fill_null(pc.less(batch.column("n_words"), 1), True)
    counts["n_blank_text"] += _true(blank)
    counts["n_no_words"] += _true(no_words)
    counts["n_empty_rows"] += _true(pc.or_(blank, no_words))
    return text_chars


def _true(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _sample_part(batch: pa.RecordBatch, text_chars: pa.Array, picks: np.ndarray, start: int) -> pd.DataFrame:
    """The sampled rows that fall in this batch (rows start .. start + len(batch) - 1)."""
    lo, hi = np.searchsorted(picks, [start, start + batch.num_rows])
    local = pa.array(picks[lo:hi] - start)
    return pd.DataFrame(
        {
            "row": picks[lo:hi],
            "chunk_id": batch.column("chunk_id").take(local).to_pandas(),
            "article_id": batch.column("article_id").take(local).to_numpy(zero_copy_only=False).astype(np.int64),
            "chunk_index": batch.column("chunk_index").take(local).to_numpy(zero_copy_only=False).astype(np.int64),
            "n_words": batch.column("n_words").take(local).to_numpy(zero_copy_only=False).astype(np.int64),
            "text_chars": text_chars.take(local).to_numpy(zero_copy_only=False),
        },
        columns=list(SAMPLE_COLUMNS),
    )


def _duplicates(hashes: np.ndarray, reader: pq.ParquetFile) -> int:
    """Rows repeating an earlier chunk_id: equal hashes found by sorting, then confirmed on the ids."""
    hashes.sort()
    equal = hashes[1:] == hashes[:-1]
    if not equal.any():
        return 0
    suspects = np.unique(hashes[1:][equal])
    seen: list[pl.Series] = []
    for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=["chunk_id"], use_threads=False):
        ids = pl.Series(batch.column("chunk_id")).drop_nulls()
        seen.append(ids.filter(pl.Series(np.isin(_hash(ids).to_numpy(), suspects))))
    ids = pl.concat(seen)
    return len(ids) - ids.n_unique()
