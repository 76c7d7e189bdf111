"""The global pass over all ingested article files: the first `limit_articles` articles, then one row per id.

Shards are read independently, so the source-wide rules (a limit counted from the start, the first or
last of repeated ids) can only be applied once every shard is in; this pass reads only the
(article_id, text_sha1) columns and rewrites just the files that lose rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    read_columns,
    step_key,
    work_dir,
)
from lvm_core.data.ingest.base import Article, IngestError
from lvm_core.data.ingest.duplicates import DuplicateReport, drop_duplicate_ids
from lvm_core.data.ingest.sources import is_tabular
from lvm_core.io.storage import write_json, write_parquet


def dedup_work_dir(ingested: list[IngestedShard], source: SourceInfo, config: BuildConfig) -> Path:
    policy = config.on_duplicate if _is_tabular(source) else "first"
    files = [f for r in ingested for f in r.files]
    key = step_key("ingest", "dedup", files, config.limit_articles, policy)
    return work_dir(config.resolved_data_dir(), "ingest", key)


def _is_tabular(source: SourceInfo) -> bool:
    return is_tabular(source.path)


def dedup_articles(
    ingested: list[IngestedShard], source: SourceInfo, config: BuildConfig, out_dir: Path
) -> KeptArticles:
    """The global pass over the (article_id, text_sha1) columns of all article files, in source order.

    Keeps the first `limit_articles` articles read, then today's rules for repeated ids
    (`ingest.drop_duplicate_ids`: first wins for dumps, `on_duplicate` for tabular sources; the counts
    go to `ingest_stats.json`). Files that lose no row are passed on as they are; the others are
    rewritten into `out_dir`. Returns the final article files and counts.
    """
    out_dir = Path(out_dir)
    done = None if config.cold else done_record(out_dir, KeptArticles)  # cold: nothing reused from work/
    if done is not None:
        return done
    files = [Path(f) for r in ingested for f in r.files]
    ids: list[int] = []
    shas: list[str] = []
    file_of: list[int] = []
    for i, f in enumerate(files):
        t = read_columns(f, ["article_id", "text_sha1"])
        ids += t.column("article_id").to_pylist()
        shas += t.column("text_sha1").to_pylist()
        file_of += [i] * t.num_rows
    n_read = len(ids)
    if config.limit_articles is not None:
        del ids[config.limit_articles:], shas[config.limit_articles:], file_of[config.limit_articles:]
    if not ids:
        raise IngestError(f"{Path(source.path).name}: no article found (empty dump or every page filtered out)")
    policy = config.on_duplicate if _is_tabular(source) else "first"
    # Same rules as ingest.drop_duplicate_ids, over hashes instead of texts (equal hash <=> equal text).
    keyed = [Article(a, "", h) for a, h in zip(ids, shas)]
    kept_rows, report = _kept_rows(keyed, policy, Path(source.path).name)
    offsets = np.cumsum([0] + [int(pq.ParquetFile(f).metadata.num_rows) for f in files])
    out_files: list[str] = []
    by_file: dict[int, list[int]] = {}
    for row in kept_rows:  # a kept slot belongs to the file of the id's first row
        by_file.setdefault(file_of[row[0]], []).append(row[1])
    for i, f in enumerate(files):
        rows = by_file.get(i)
        if rows is None:
            continue
        if rows == list(range(offsets[i], offsets[i + 1])):
            out_files.append(str(f))
            continue
        out = out_dir / f"{f.stem}-kept.parquet"
        write_parquet(out, _take_rows(files, offsets, rows))
        out_files.append(str(out))
    write_json(out_dir / INGEST_STATS_FILE, report.to_dict())
    return finish_shard(out_dir, KeptArticles(
        files=tuple(out_files), articles=len(kept_rows), read=n_read, stats=report,
    ))


def _kept_rows(keyed: list[Article], policy: str, source_name: str) -> tuple[list[tuple[int, int]], DuplicateReport]:
    """[(first row, row whose content is kept), ...] and the duplicate report, for `dedup_articles`."""
    row_of = {id(a): r for r, a in enumerate(keyed)}
    first_row: dict[int, int] = {}
    for r, a in enumerate(keyed):
        first_row.setdefault(a.article_id, r)
    kept, report = drop_duplicate_ids(keyed, on_duplicate=policy, source_name=source_name)
    return [(first_row[a.article_id], row_of[id(a)]) for a in kept], report


def _take_rows(files: list[Path], offsets: np.ndarray, rows: list[int]) -> pa.Table:
    """The given global rows of the article files, in that order (only files that lose or swap rows)."""
    tables: dict[int, pa.Table] = {}
    runs: list[tuple[int, list[int]]] = []  # (file, local rows), consecutive rows of one file together
    for row in rows:
        i = int(np.searchsorted(offsets, row, side="right") - 1)
        if not runs or runs[-1][0] != i:
            runs.append((i, []))
        runs[-1][1].append(row - int(offsets[i]))
    parts = []
    for i, local in runs:
        if i not in tables:
            tables[i] = read_columns(files[i], list(ARTICLES_SCHEMA.names))
        parts.append(tables[i].take(pa.array(local, pa.int64())))
    return pa.concat_tables(parts).combine_chunks().cast(ARTICLES_SCHEMA)
