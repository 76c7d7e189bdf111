"""The global pass over all ingested article files: the first `limit_articles` articles, then one row per id.

Shards are read independently, so the source-wide rules (a limit counted from the start, the first or
last of repeated ids) can only be applied once every shard is in; this pass reads only the
(article_id, text_sha1) columns and rewrites just the files that lose rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import ARTICLES_SCHEMA
from lvm_core.data.build.ingest import INGEST_STATS_FILE
from lvm_core.data.build.records import IngestedShard, KeptArticles
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.build.work import (
    done_record,
    finish_shard,
    local_record,
    read_columns,
    step_key,
    work_dir,
    work_ref,
    work_store,
)
from lvm_core.data.ingest.base import IngestError
from lvm_core.data.ingest.duplicates import DUPLICATE_POLICIES, DuplicateIdError, DuplicateReport
from lvm_core.data.ingest.sources import is_tabular
from lvm_core.io.storage import write_json, write_parquet


def dedup_work_dir(ingested: list[IngestedShard], source: SourceInfo, config: BuildConfig) -> Path:
    policy = config.on_duplicate if _is_tabular(source) else "first"
    files = [work_ref(f) for r in ingested for f in r.files]
    key = step_key("ingest", "dedup", files, config.limit_articles, policy)
    return work_dir(config.work_data_dir(), "ingest", key)


def _is_tabular(source: SourceInfo) -> bool:
    return is_tabular(source.path)


def dedup_articles(
    ingested: list[IngestedShard], source: SourceInfo, config: BuildConfig, out_dir: Path
) -> KeptArticles:
    """The global pass over the (article_id, text_sha1) columns of all article files, in source order.

    Keeps the first `limit_articles` articles read, then the rules of `drop_duplicate_ids` for repeated
    ids (first wins for dumps, `on_duplicate` for tabular sources; the counts go to `ingest_stats.json`).
    Files that lose no row are passed on as they are; the others are rewritten into `out_dir`. Returns
    the final article files and counts.

    Rows are held as fixed-width codes (id, 64-bit hash of the text digest, file, row): ~24 bytes per
    article, against ~700 as Python objects, so the pass fits a coordinator at full enwiki size (6.9M
    articles ≈ 170 MB). Hashes are only compared within one id, where a 64-bit collision is negligible.
    """
    out_dir, store = Path(out_dir), work_store(config)
    done = None if config.cold else done_record(out_dir, KeptArticles, store)  # cold: nothing reused from work/
    if done is not None:
        return done
    ingested = [local_record(r, config.work_data_dir(), store) for r in ingested]  # made on other machines
    files = [Path(f) for r in ingested for f in r.files]
    rows = _id_rows(files)
    n_read = rows.height
    if config.limit_articles is not None:
        rows = rows.head(config.limit_articles)
    if rows.height == 0:
        raise IngestError(f"{Path(source.path).name}: no article found (empty dump or every page filtered out)")
    policy = config.on_duplicate if _is_tabular(source) else "first"
    kept, report = _kept_rows(rows, policy, Path(source.path).name)
    offsets = np.cumsum([0] + [int(pq.ParquetFile(f).metadata.num_rows) for f in files])
    out_files = _write_kept_files(files, offsets, kept, out_dir)
    write_json(out_dir / INGEST_STATS_FILE, report.to_dict())
    return finish_shard(out_dir, KeptArticles(
        files=tuple(out_files), articles=int(kept.height), read=n_read, stats=report,
    ), store)


def _id_rows(files: list[Path]) -> pl.DataFrame:
    """One row per article row read: article_id, 64-bit code of text_sha1, its file, its global row."""
    parts = []
    for i, f in enumerate(files):
        table = pl.from_arrow(read_columns(f, ["article_id", "text_sha1"]))
        assert isinstance(table, pl.DataFrame)
        parts.append(table.select(
            pl.col("article_id").cast(pl.Int64),
            pl.col("text_sha1").hash(seed=0).alias("code"),
            pl.lit(i, dtype=pl.UInt32).alias("file"),
        ))
    if not parts:
        return pl.DataFrame(schema={"article_id": pl.Int64, "code": pl.UInt64, "file": pl.UInt32, "row": pl.UInt64})
    return pl.concat(parts).with_row_index("row").with_columns(pl.col("row").cast(pl.UInt64))


def _kept_rows(rows: pl.DataFrame, policy: str, source_name: str) -> tuple[pl.DataFrame, DuplicateReport]:
    """Per id, in first-seen order: its first row and the row whose content is kept, and the report.

    The same rules as `drop_duplicate_ids`, on codes: an id conflicts when its rows hold more than one
    text; conflicting ids are listed in the order their first differing row was read.
    """
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"on_duplicate={policy!r}: expected one of {', '.join(DUPLICATE_POLICIES)}")
    flagged = rows.sort("article_id", "row").with_columns(
        (pl.col("code") != pl.col("code").shift(1).over("article_id")).fill_null(False).alias("differs")
    )
    per_id = flagged.group_by("article_id").agg(
        pl.col("row").first().alias("first_row"),
        pl.col("row").last().alias("last_row"),
        pl.len().alias("n"),
        pl.col("row").filter(pl.col("differs")).min().alias("conflict_row"),
    ).sort("first_row")
    repeated = per_id.filter(pl.col("n") > 1)
    conflicting = repeated.filter(pl.col("conflict_row").is_not_null()).sort("conflict_row")["article_id"].to_list()
    report = DuplicateReport(
        policy=policy, duplicate_ids=repeated.height, duplicate_rows_dropped=int((repeated["n"] - 1).sum() or 0),
        conflicting_ids=len(conflicting), conflicting_examples=[int(a) for a in conflicting[:10]],
    )
    if conflicting and policy == "error":
        ids = ", ".join(str(a) for a in conflicting[:5]) + (", ..." if len(conflicting) > 5 else "")
        raise DuplicateIdError(
            f"{source_name}: {len(conflicting)} id(s) occur in several rows with different texts "
            f"(e.g. id {ids}); choose which row to keep with --on-duplicate first|last"
        )
    kept_row = pl.col("last_row") if policy == "last" else pl.col("first_row")
    files = flagged.select("row", "file").rename({"row": "first_row"})
    kept = per_id.select("first_row", kept_row.alias("kept_row")).join(files, on="first_row", how="left")
    return kept.sort("first_row"), report


def _write_kept_files(files: list[Path], offsets: np.ndarray, kept: pl.DataFrame, out_dir: Path) -> list[str]:
    """The article files to pass on: a file that keeps all its rows in order as it is, the others rewritten
    with their kept rows (a kept slot belongs to the file of the id's first row)."""
    out_files: list[str] = []
    for (i,), group in kept.group_by(["file"], maintain_order=True):
        rows = group["kept_row"].to_numpy().astype(np.int64)
        f = files[int(i)]
        if np.array_equal(rows, np.arange(offsets[int(i)], offsets[int(i) + 1])):
            out_files.append(str(f))
            continue
        out = out_dir / f"{f.stem}-kept.parquet"
        write_parquet(out, _take_rows(files, offsets, rows))
        out_files.append(str(out))
    return out_files  # groups come in first-row order, which is file order


def _take_rows(files: list[Path], offsets: np.ndarray, rows: np.ndarray) -> pa.Table:
    """The given global rows of the article files, in that order (only files that lose or swap rows)."""
    file_of = np.searchsorted(offsets, rows, side="right") - 1
    cuts = np.flatnonzero(np.diff(file_of)) + 1  # runs of consecutive rows from one file
    tables: dict[int, pa.Table] = {}
    parts = []
    for run in np.split(np.arange(rows.shape[0]), cuts):
        if run.size == 0:
            continue
        i = int(file_of[run[0]])
        if i not in tables:
            tables[i] = read_columns(files[i], list(ARTICLES_SCHEMA.names))
        parts.append(tables[i].take(pa.array(rows[run] - int(offsets[i]), pa.int64())))
    return pa.concat_tables(parts).combine_chunks().cast(ARTICLES_SCHEMA)
