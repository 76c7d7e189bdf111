"""What every ingest reader shares: the `Article` record, `IngestError`, one-line error text, the progress bar.

Kept apart so that the readers (MediaWiki, tabular) and the shard planner depend on it, not on each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lvm_core.contracts.errors import UserError
from lvm_core.runtime.progress import progress_enabled

__all__ = [
    "Article",
    "IngestError",
    "KnownPage",
    "KnownRow",
    "one_line",
    "open_parquet",
    "progress_bar",
    "source_sha1",
]


class IngestError(UserError):
    """A source cannot be read as articles; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Article:
    """One article: page id, title and cleaned plain text (paragraphs separated by a blank line).

    `source_sha1` is the digest of the raw text it was cleaned from (`source_sha1()`), None where the
    article was not read from a source (tests, hand-made articles). Provenance, not content: left out of
    equality, so articles compare by id, title and text as before.
    """

    article_id: int
    title: str
    text: str
    source_sha1: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KnownPage:
    """A page whose raw text the previous dataset holds already cleaned (row `row` of its articles file):
    kept by the same filters, its text is taken from there instead of being cleaned again."""

    article_id: int
    title: str
    source_sha1: str
    row: int


# Where a known page's cleaned text is: (page id, digest of its raw text) -> row of the previous
# dataset's articles file, or None for a page to clean.
KnownRow = Callable[[int, str], "int | None"]


def source_sha1(raw: str) -> str:
    """`source_sha1` column of ARTICLES_SCHEMA: sha1 hex of the raw source text's UTF-8 bytes (a dump's
    wikitext, a tabular row's text), computed here rather than taken from the dump's <sha1> element."""
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, cut to `limit` characters (error messages stay one line)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def progress_bar(enabled: bool, desc: str) -> tqdm[Any]:
    """tqdm bar on stderr, only when asked for and on an interactive terminal outside CI."""
    return tqdm(desc=desc, unit=" pages", disable=not (enabled and progress_enabled()))


def open_parquet(
    path: Path, columns: Sequence[str], error: type[Exception] = IngestError, label: str | None = None, hint: str = "",
    **read_options: Any,
) -> pq.ParquetFile:
    """A Parquet file that opens and has `columns`; else `error` naming it (`label`, default the path) in one line.

    `read_options` go to `pq.ParquetFile` (e.g. `pre_buffer=False` for a pass that must stay a few MB).
    """
    label = str(path) if label is None else label
    try:
        parquet = pq.ParquetFile(path, **read_options)
    except (pa.ArrowException, OSError) as exc:
        raise error(f"{label}: not a readable Parquet file ({one_line(exc)})") from None
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise error(f"{label}: missing column(s) {', '.join(missing)}{hint}")
    return parquet
