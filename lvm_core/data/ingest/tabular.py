"""Read Parquet and JSONL sources (rows with id, title, text) as articles, streaming, a range at a time.

Readers take a row-group range (Parquet) or a byte range of whole lines (JSONL) so that the shard
planner can read one part of a large file; messages count rows and lines from the file's start.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from lvm_core.data.ingest.base import Article, IngestError, one_line, open_parquet, progress_bar, source_sha1
from lvm_core.data.ingest.wikitext import normalize_paragraphs

__all__ = ["read_jsonl_articles", "read_parquet_articles"]

_REQUIRED_COLUMNS = ("id", "title", "text")


def _tabular_article(path: Path, where: str, raw_id: Any, title: Any, text: Any) -> Article | None:
    try:
        article_id = int(raw_id)
    except (TypeError, ValueError):
        raise IngestError(f"{path.name}: {where}: id {raw_id!r} is not an integer") from None
    raw = str(text or "")
    cleaned = normalize_paragraphs(raw)
    if not cleaned:
        return None
    return Article(article_id, "" if title is None else str(title), cleaned, source_sha1(raw))


def read_parquet_articles(
    path: Path, row_groups: range | None = None, progress: bool = False
) -> Iterator[Article]:
    """Articles of a Parquet file with id,title,text columns; only `row_groups` when given.

    Row numbers in messages count from the file's first row, whichever row groups are read.
    """
    path = Path(path)
    parquet = open_parquet(path, _REQUIRED_COLUMNS, label=path.name, hint="; expected id, title, text")
    groups = range(parquet.num_row_groups) if row_groups is None else row_groups
    if groups.start < 0 or groups.stop > parquet.num_row_groups:
        raise IngestError(
            f"{path.name}: row groups {groups.start}-{groups.stop} out of range "
            f"(the file has {parquet.num_row_groups})"
        )
    row = sum(parquet.metadata.row_group(i).num_rows for i in range(groups.start))
    if not len(groups):
        return
    try:
        with progress_bar(progress, path.name) as bar:
            batches = parquet.iter_batches(
                batch_size=1024, row_groups=list(groups), columns=list(_REQUIRED_COLUMNS)
            )
            for batch in batches:
                ids, titles, texts = (batch.column(i).to_pylist() for i in range(3))
                for raw_id, title, text in zip(ids, titles, texts, strict=True):
                    row += 1
                    article = _tabular_article(path, f"row {row}", raw_id, title, text)
                    if article is not None:
                        yield article
                bar.update(batch.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"{path.name}: corrupt Parquet data ({one_line(exc)})") from None


def read_jsonl_articles(
    path: Path, start: int = 0, stop: int | None = None, first_line: int = 1, progress: bool = False
) -> Iterator[Article]:
    """Articles of a JSONL file (one object with id,title,text per line); lines beginning in [start, stop).

    `start` must be a line start (0 or just after a newline); `first_line` is that line's number, used
    in messages.
    """
    path = Path(path)
    pos = start
    try:
        with open(path, "rb") as fh, progress_bar(progress, path.name) as bar:
            fh.seek(start)
            for line_no, raw in enumerate(fh, start=first_line):
                if stop is not None and pos >= stop:
                    break
                pos += len(raw)
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise IngestError(f"{path.name}: line {line_no}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise IngestError(f"{path.name}: line {line_no}: expected a JSON object")
                missing = [c for c in _REQUIRED_COLUMNS if c not in record]
                if missing:
                    raise IngestError(
                        f"{path.name}: line {line_no}: missing column(s) {', '.join(missing)}; "
                        "expected id, title, text"
                    )
                bar.update(1)
                article = _tabular_article(
                    path, f"line {line_no}", record["id"], record["title"], record["text"]
                )
                if article is not None:
                    yield article
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name}: not UTF-8 text ({one_line(exc)})") from None
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read file ({one_line(exc)})") from None
