"""Article and chunk files of a sharded build: bounded Parquet files written atomically, chunked, joined.

`write_article_shards` streams articles into files of bounded size, `chunk_article_file` chunks one of
them, `concat_parquet` joins files row group by row group. Every file is published atomically (temp
file, then rename); errors name the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.layout import ARTICLES_SCHEMA, CHUNKS_SCHEMA
from lvm_core.data.chunking import ChunkingConfig, iter_chunks
from lvm_core.data.ingest.base import Article, one_line, open_parquet
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.io.storage import atomic_path

__all__ = [
    "DEFAULT_MAX_ARTICLES",
    "DEFAULT_MAX_ARTICLE_BYTES",
    "chunk_article_file",
    "concat_parquet",
    "text_sha1",
    "write_article_shards",
]

DEFAULT_MAX_ARTICLES = 50_000
DEFAULT_MAX_ARTICLE_BYTES = 256 * 2**20  # UTF-8 bytes of title + text per article file

_ROW_GROUP_ROWS = 1024  # rows buffered before a Parquet row group is written
_ROW_GROUP_BYTES = 8 * 2**20  # ... or this many bytes of text, whichever comes first
_CONCAT_BATCH_BYTES = 8 * 2**20  # bytes per batch when copying files into one


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer with dictionary encoding only where values repeat (snapshot_id): on unique texts and
    hashes a dictionary is built and thrown away per page, which costs memory and time for nothing."""
    repeated = [name for name in ("snapshot_id",) if name in schema.names]
    return pq.ParquetWriter(path, schema, use_dictionary=repeated or False)


def text_sha1(text: str) -> str:
    """`text_sha1` column of ARTICLES_SCHEMA: sha1 hex of the UTF-8 text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class _BoundedWriter:
    """Rows buffered into row groups of bounded size, written to one Parquet file."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.writer = _parquet_writer(path, schema)
        self.columns: dict[str, list[object]] = {f.name: [] for f in schema}
        self.buffered_rows = 0
        self.buffered_bytes = 0

    def add(self, row: dict[str, object], nbytes: int) -> None:
        for name, values in self.columns.items():
            values.append(row[name])
        self.buffered_rows += 1
        self.buffered_bytes += nbytes
        if self.buffered_rows >= _ROW_GROUP_ROWS or self.buffered_bytes >= _ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buffered_rows:
            self.writer.write_table(pa.Table.from_pydict(self.columns, schema=self.schema))
            for values in self.columns.values():
                values.clear()
            self.buffered_rows = self.buffered_bytes = 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_article_shards(
    articles: Iterable[Article],
    out_dir: str | os.PathLike[str],
    *,
    snapshot_id: str,
    max_articles: int = DEFAULT_MAX_ARTICLES,
    max_bytes: int = DEFAULT_MAX_ARTICLE_BYTES,
    prefix: str = "articles",
) -> list[Path]:
    """Stream articles into Parquet files `<prefix>-000000.parquet`, … (ARTICLES_SCHEMA, source order).

    A file holds at most `max_articles` articles and `max_bytes` UTF-8 bytes of title + text (an
    article larger than that alone gets a file of its own). Files are written under temp names and
    renamed only once all articles are written, so a failure publishes none of them; files of an
    earlier attempt with the same prefix that this one does not produce are removed. No article, no
    file: the result is then empty. Callers sharding a source pass a prefix per source shard, e.g.
    `articles-00042`, so that all files sort in source order.
    """
    if max_articles < 1 or max_bytes < 1:
        raise ValueError(f"max_articles={max_articles}, max_bytes={max_bytes}: both must be >= 1")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise ValueError(f"prefix {prefix!r}: only letters, digits, '.', '_' and '-'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series = _ArticleFileSeries(out_dir, prefix, snapshot_id, max_articles, max_bytes)
    try:
        for article in articles:
            series.add(article)
        series.close()
    except BaseException:
        series.discard()
        raise
    series.publish()
    return series.finals


class _ArticleFileSeries:
    """Numbered article files `<prefix>-NNNNNN.parquet` under temp names, a new one at each bound."""

    def __init__(self, out_dir: Path, prefix: str, snapshot_id: str, max_articles: int, max_bytes: int) -> None:
        self.out_dir, self.prefix, self.snapshot_id = out_dir, prefix, snapshot_id
        self.max_articles, self.max_bytes = max_articles, max_bytes
        self.finals: list[Path] = []
        self.temps: list[Path] = []
        self.writer: _BoundedWriter | None = None
        self.rows = self.nbytes = 0

    def add(self, article: Article) -> None:
        """Append an article, starting the next file when this one would exceed a bound."""
        size = len(article.title.encode("utf-8")) + len(article.text.encode("utf-8"))
        if self.writer is not None and (self.rows >= self.max_articles or self.nbytes + size > self.max_bytes):
            self.writer.close()
            self.writer = None
        if self.writer is None:
            self.writer = self._next_file()
        self.writer.add(
            {
                "article_id": int(article.article_id),
                "title": article.title,
                "text": article.text,
                "snapshot_id": self.snapshot_id,
                "text_sha1": text_sha1(article.text),
                "source_sha1": article.source_sha1,
            },
            size,
        )
        self.rows += 1
        self.nbytes += size

    def _next_file(self) -> _BoundedWriter:
        final = self.out_dir / f"{self.prefix}-{len(self.finals):06d}.parquet"
        temp = self.out_dir / f".{final.name}.{os.getpid()}.tmp"
        self.finals.append(final)
        self.temps.append(temp)
        writer = _BoundedWriter(temp, ARTICLES_SCHEMA)
        self.rows = self.nbytes = 0
        return writer

    def close(self) -> None:
        """Finish the file being written (all temp files are then complete)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def discard(self) -> None:
        """After a failure: close what is open and remove every temp file; nothing is published."""
        if self.writer is not None:
            with contextlib.suppress(Exception):  # the original error matters, not the cleanup's
                self.writer.writer.close()
        for temp in self.temps:
            temp.unlink(missing_ok=True)

    def publish(self) -> None:
        """Remove files of an earlier attempt that this one does not produce, then rename temps to finals."""
        wanted = {p.name for p in self.finals}
        pattern = rf"{re.escape(self.prefix)}-\d{{6}}\.parquet"
        for stale in self.out_dir.glob(f"{self.prefix}-*.parquet"):
            if stale.name not in wanted and re.fullmatch(pattern, stale.name):
                stale.unlink()
        for temp, final in zip(self.temps, self.finals, strict=True):
            os.replace(temp, final)


def chunk_article_file(
    articles_file: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    config: ChunkingConfig | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Chunk one article file into a chunks file (CHUNKS_SCHEMA), streaming; atomic.

    The rows equal `chunking.chunk_articles` on the same articles. An article file whose articles
    give no chunk yields a file with no rows (the schema still there), so files can be concatenated.
    `on_progress(n)` is called with the number of articles of each batch once it is chunked.
    """
    articles_file, out_file = Path(articles_file), Path(out_file)
    config = config or ChunkingConfig()
    columns = ["article_id", "title", "text"]
    parquet = open_parquet(articles_file, columns, error=ShardError)
    with atomic_path(out_file) as tmp:
        writer = _BoundedWriter(tmp, CHUNKS_SCHEMA)
        try:
            for batch in parquet.iter_batches(batch_size=256, columns=columns, use_threads=False):
                ids, titles, texts = (batch.column(i).to_pylist() for i in range(3))
                articles = (Article(i, t, x) for i, t, x in zip(ids, titles, texts, strict=True))
                for row in iter_chunks(articles, config):
                    writer.add(row, len(row["text"]))  # type: ignore[arg-type]
                if on_progress is not None:
                    on_progress(batch.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{articles_file}: corrupt Parquet data ({one_line(exc)})") from None
        finally:
            writer.close()
    return out_file


def _row_group_tables(parquet: pq.ParquetFile, columns: list[str]) -> Iterator[pa.Table]:
    """A file's rows a row group at a time (a large row group in batches of ~_CONCAT_BATCH_BYTES).

    Single-threaded on purpose: pyarrow's reader threads each keep their own allocator arenas, which
    raised the peak memory of a concatenation by ~50 MiB on 17 chunk files; shards run in parallel
    processes anyway.
    """
    meta = parquet.metadata
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.total_byte_size <= 2 * _CONCAT_BATCH_BYTES or group.num_rows <= 1:
            yield parquet.read_row_group(i, columns=columns, use_threads=False)
            continue
        batch_size = max(1, int(group.num_rows * _CONCAT_BATCH_BYTES / group.total_byte_size))
        for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[i], columns=columns, use_threads=False):
            yield pa.Table.from_batches([batch])


def concat_parquet(
    files: Iterable[str | os.PathLike[str]], out_file: str | os.PathLike[str], schema: pa.Schema
) -> Path:
    """Join Parquet files into one with `schema`, in the given order, a bounded batch at a time; atomic.

    Each file must have the schema's column names and types (nullability and metadata may differ);
    a file that does not, or cannot be read, raises `ShardError` naming it.
    """
    out_file = Path(out_file)
    names = [f.name for f in schema]
    with atomic_path(out_file) as tmp, _parquet_writer(tmp, schema) as writer:
        for file in files:
            file = Path(file)
            parquet = open_parquet(file, names, error=ShardError)
            have = parquet.schema_arrow
            wrong = [
                f"{n} is {have.field(n).type}, expected {schema.field(n).type}"
                for n in names
                if have.field(n).type != schema.field(n).type
            ]
            if wrong:
                raise ShardError(f"{file}: column types differ ({'; '.join(wrong)})")
            try:
                for table in _row_group_tables(parquet, names):
                    writer.write_table(table.cast(schema))
            except (pa.ArrowException, OSError) as exc:
                raise ShardError(f"{file}: corrupt Parquet data ({one_line(exc)})") from None
    return out_file
