"""Sharded, streaming ingest and chunking: memory bounded by a shard, never by the snapshot.

A source is cut into `SourceShard`s that can be read independently (in parallel, on other machines):

- a multistream MediaWiki dump (`…-multistream.xml.bz2`, many concatenated bz2 streams of ~100 pages)
  with its index beside it (`…-multistream-index.txt.bz2`, lines `offset:page_id:title`) → byte ranges
  aligned on stream offsets; each range is decompressed stream by stream behind the dump's <siteinfo>
  header, so a shard parses like a small dump of its own;
- a single-stream .xml.bz2 or a plain .xml → one shard, read as a stream;
- .parquet → runs of row groups; .jsonl → byte ranges aligned to line starts.

`read_shard` yields exactly a shard's articles with the filtering and cleaning of
`lvm_core.data.ingest.read_articles`; reading all shards in order gives the same articles in the same order as
reading the source whole. `write_article_shards` streams articles into bounded Parquet files,
`chunk_article_file` chunks one of them, `concat_parquet` joins files row group by row group. Every file
is published atomically (temp file, then rename). Errors name the shard or file.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.data import ingest
from lvm_core.data.chunking import ChunkingConfig, iter_chunks
from lvm_core.contracts import ARTICLES_SCHEMA, CHUNKS_SCHEMA
from lvm_core.data.ingest import Article, IngestError
from lvm_core.io.storage import atomic_path

__all__ = [
    "DEFAULT_MAX_ARTICLES",
    "DEFAULT_MAX_ARTICLE_BYTES",
    "DEFAULT_TARGET_BYTES",
    "ShardError",
    "SourceShard",
    "chunk_article_file",
    "concat_parquet",
    "multistream_index_path",
    "plan_source_shards",
    "read_shard",
    "text_sha1",
    "write_article_shards",
]

# ~64 MiB of compressed dump per shard: ~350 shards for a full enwiki, each a few minutes of one core.
DEFAULT_TARGET_BYTES = 64 * 2**20
DEFAULT_MAX_ARTICLES = 50_000
DEFAULT_MAX_ARTICLE_BYTES = 256 * 2**20  # UTF-8 bytes of title + text per article file

_READ_BYTES = 1 << 20  # compressed bytes read at a time from a multistream range
_ROW_GROUP_ROWS = 1024  # rows buffered before a Parquet row group is written
_ROW_GROUP_BYTES = 8 * 2**20  # ... or this many bytes of text, whichever comes first
_CONCAT_BATCH_BYTES = 8 * 2**20  # bytes per batch when copying files into one


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer with dictionary encoding only where values repeat (snapshot_id): on unique texts and
    hashes a dictionary is built and thrown away per page, which costs memory and time for nothing."""
    repeated = [name for name in ("snapshot_id",) if name in schema.names]
    return pq.ParquetWriter(path, schema, use_dictionary=repeated or False)


class ShardError(IngestError):
    """A shard or shard file cannot be read or written; the message names it."""


@dataclass(frozen=True)
class SourceShard:
    """One independently readable part of a source (small and picklable: tasks pass these around).

    `kind` is "xml" (a whole dump read as a stream), "xml-multistream" (bytes [start, stop) of a
    multistream dump, whole bz2 streams; the <siteinfo> header is bytes [0, header_stop)),
    "parquet" (row groups [start, stop)) or "jsonl" (bytes [start, stop), line-aligned; line
    `first_line` begins at start).
    """

    path: str
    kind: str
    index: int
    count: int
    start: int
    stop: int
    header_stop: int = 0
    first_line: int = 1

    @property
    def label(self) -> str:
        """How messages name this shard: file, position among the shards and range."""
        unit = "row groups" if self.kind == "parquet" else "bytes"
        return f"{Path(self.path).name} shard {self.index + 1}/{self.count} ({unit} {self.start}-{self.stop})"


# --- planning ----------------------------------------------------------------------------------------


def multistream_index_path(dump: str | os.PathLike[str]) -> Path | None:
    """The index beside a multistream dump (`X.xml.bz2` → `X-index.txt.bz2` or `X-index.txt`), if any."""
    dump = Path(dump)
    name = dump.name
    if not name.lower().endswith(".xml.bz2"):
        return None
    base = name[: -len(".xml.bz2")]
    for candidate in (f"{base}-index.txt.bz2", f"{base}-index.txt"):
        path = dump.with_name(candidate)
        if path.is_file():
            return path
    return None


def plan_source_shards(
    path: str | os.PathLike[str], *, target_bytes: int = DEFAULT_TARGET_BYTES
) -> list[SourceShard]:
    """Shards of a source in source order, each ~`target_bytes` of (compressed) input.

    "sample" resolves to the embedded dump. A multistream dump needs its index beside it (see
    `multistream_index_path`); without one it is a single shard read as a stream.
    """
    if target_bytes < 1:
        raise ValueError(f"target_bytes={target_bytes}: must be >= 1")
    source = ingest.resolve_source(path)
    kind = ingest.source_kind(source)
    if kind == "parquet":
        return _plan_parquet(source, target_bytes)
    if kind == "jsonl":
        return _plan_jsonl(source, target_bytes)
    index = multistream_index_path(source)
    if index is None:
        return [SourceShard(str(source), "xml", 0, 1, 0, source.stat().st_size)]
    return _plan_multistream(source, index, target_bytes)


def _stream_offsets(index: Path) -> list[int]:
    """Distinct stream offsets of a multistream index, in file order (one per ~100 pages)."""
    opener = bz2.open if index.suffix.lower() == ".bz2" else open
    offsets: list[int] = []
    last = -1
    try:
        with opener(index, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                head, sep, _ = line.partition(b":")
                if not sep or not head.strip().isdigit():
                    if not line.strip():
                        continue
                    raise ShardError(f"{index.name}: line {line_no}: expected offset:page_id:title")
                offset = int(head)
                if offset != last:
                    if offset < last:
                        raise ShardError(
                            f"{index.name}: line {line_no}: offset {offset} goes backwards (after {last})"
                        )
                    offsets.append(offset)
                    last = offset
    except (EOFError, OSError) as exc:
        raise ShardError(f"{index.name}: truncated or corrupt index ({ingest._one_line(exc)})") from None
    if not offsets:
        raise ShardError(f"{index.name}: empty multistream index")
    return offsets


def _plan_multistream(dump: Path, index: Path, target_bytes: int) -> list[SourceShard]:
    offsets = _stream_offsets(index)
    size = dump.stat().st_size
    if offsets[-1] >= size:
        raise ShardError(
            f"{dump.name}: index {index.name} points at byte {offsets[-1]} but the dump has {size} bytes "
            "(index and dump do not match)"
        )
    header_stop = offsets[0]
    ranges: list[tuple[int, int]] = []
    begin = offsets[0]
    for offset in offsets[1:]:
        if offset - begin >= target_bytes:
            ranges.append((begin, offset))
            begin = offset
    ranges.append((begin, size))
    with open(dump, "rb") as fh:
        for start in {0, *(r[0] for r in ranges)}:
            fh.seek(start)
            if fh.read(3) != b"BZh":
                raise ShardError(
                    f"{dump.name}: byte {start} (from {index.name}) is not the start of a bz2 stream "
                    "(index and dump do not match)"
                )
    return [
        SourceShard(str(dump), "xml-multistream", i, len(ranges), start, stop, header_stop=header_stop)
        for i, (start, stop) in enumerate(ranges)
    ]


def _plan_parquet(path: Path, target_bytes: int) -> list[SourceShard]:
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable Parquet file ({ingest._one_line(exc)})") from None
    ranges: list[tuple[int, int]] = []
    begin, size = 0, 0
    for i in range(meta.num_row_groups):
        size += meta.row_group(i).total_byte_size
        if size >= target_bytes:
            ranges.append((begin, i + 1))
            begin, size = i + 1, 0
    if begin < meta.num_row_groups or not ranges:
        ranges.append((begin, meta.num_row_groups))
    return [SourceShard(str(path), "parquet", i, len(ranges), a, b) for i, (a, b) in enumerate(ranges)]


def _plan_jsonl(path: Path, target_bytes: int) -> list[SourceShard]:
    size = path.stat().st_size
    starts = [0]
    with open(path, "rb") as fh:
        while starts[-1] + target_bytes < size:
            fh.seek(starts[-1] + target_bytes - 1)  # from the byte before: a line may start right there
            fh.readline()
            position = fh.tell()
            if position >= size:
                break
            starts.append(position)
        # Line numbers of the shard starts, for messages: count newlines once, streaming.
        first_lines, line, pos = [1], 1, 0
        fh.seek(0)
        for nxt in starts[1:]:
            while pos < nxt:
                block = fh.read(min(_READ_BYTES, nxt - pos))
                line += block.count(b"\n")
                pos += len(block)
            first_lines.append(line)
    bounds = [*starts, size]
    return [
        SourceShard(str(path), "jsonl", i, len(starts), bounds[i], bounds[i + 1], first_line=first_lines[i])
        for i in range(len(starts))
    ]


# --- reading -----------------------------------------------------------------------------------------


def read_shard(shard: SourceShard, progress: bool = False) -> Iterator[Article]:
    """Stream exactly this shard's articles, filtered and cleaned as by `ingest.read_articles`.

    A shard whose pages are all redirects or otherwise filtered yields nothing (no error): whether a
    whole source has any article is for the caller to judge over all its shards.
    """
    path = Path(shard.path)
    if not path.is_file():
        raise ShardError(f"{shard.label}: {path} no longer exists")
    if shard.kind == "parquet":
        yield from _relabel(ingest.read_parquet_articles(path, range(shard.start, shard.stop), progress), shard)
    elif shard.kind == "jsonl":
        yield from _relabel(
            ingest.read_jsonl_articles(path, shard.start, shard.stop, shard.first_line, progress), shard
        )
    elif shard.kind == "xml":
        try:
            fh = ingest._open_xml(path)
        except OSError as exc:
            raise ShardError(f"{path.name}: cannot read file ({ingest._one_line(exc)})") from None
        with fh:
            yield from ingest.read_xml_stream(
                fh, path.name, progress=progress, compressed=path.suffix.lower() == ".bz2"
            )
    elif shard.kind == "xml-multistream":
        raw = _MultistreamRange(shard)
        with io.BufferedReader(raw, buffer_size=_READ_BYTES) as fh:
            yield from ingest.read_xml_stream(fh, shard.label, progress=progress, compressed=True)
    else:
        raise ShardError(f"{shard.label}: unknown shard kind {shard.kind!r}")


def _relabel(articles: Iterator[Article], shard: SourceShard) -> Iterator[Article]:
    """Re-raise a reader's error with the shard named (the reader names the file and row/line)."""
    try:
        yield from articles
    except ShardError:
        raise
    except IngestError as exc:
        raise ShardError(f"{shard.label}: {exc}") from None


class _MultistreamRange(io.RawIOBase):
    """The XML of one multistream shard: <siteinfo> header, the range's pages, closing tag.

    Streams are decompressed one at a time as the parser asks for bytes; a range that ends inside a
    stream, or bytes that are not bz2, raise `ShardError` naming the shard.
    """

    def __init__(self, shard: SourceShard) -> None:
        super().__init__()
        self._shard = shard
        self._parts = self._generate()
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._parts.close()  # closes the dump file
        super().close()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._parts))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _generate(self) -> Iterator[bytes]:
        shard = self._shard
        with open(shard.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if shard.start > 0:
                yield self._header(fh)
            yield from self._decompress(fh, shard.start, shard.stop)
            if shard.stop < size:
                yield b"</mediawiki>\n"

    def _header(self, fh: io.BufferedReader) -> bytes:
        """The dump's opening <mediawiki> tag and <siteinfo>: its first stream, cut before any page."""
        shard = self._shard
        stop = shard.header_stop if shard.header_stop > 0 else None
        header = b"".join(self._decompress(fh, 0, stop, first_stream_only=stop is None))
        cut = header.find(b"<page>")
        if cut >= 0:
            header = header[:cut]
        if b"<mediawiki" not in header:
            raise ShardError(f"{shard.label}: the dump's first bz2 stream holds no <mediawiki> header")
        return header

    def _decompress(
        self, fh: io.BufferedReader, start: int, stop: int | None, first_stream_only: bool = False
    ) -> Iterator[bytes]:
        label = self._shard.label
        fh.seek(start)
        position = start
        decompressor = bz2.BZ2Decompressor()
        started = False
        try:
            while stop is None or position < stop:
                want = _READ_BYTES if stop is None else min(_READ_BYTES, stop - position)
                data = fh.read(want)
                if not data:
                    if stop is not None:
                        raise ShardError(f"{label}: the dump ends at byte {position} (truncated file)")
                    break
                position += len(data)
                while data:
                    out = decompressor.decompress(data)
                    started = True
                    if out:
                        yield out
                    if decompressor.eof:
                        if first_stream_only:
                            return
                        data = decompressor.unused_data
                        decompressor = bz2.BZ2Decompressor()
                        started = False
                    else:
                        data = b""
        except (OSError, EOFError) as exc:
            raise ShardError(f"{label}: truncated or corrupt bz2 stream ({ingest._one_line(exc)})") from None
        if started and not decompressor.eof:
            raise ShardError(f"{label}: truncated or corrupt bz2 stream (the range ends inside a stream)")


# --- writing -----------------------------------------------------------------------------------------


def text_sha1(text: str) -> str:
    """`text_sha1` column of ARTICLES_SCHEMA: sha1 hex of the UTF-8 text."""
    import hashlib

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
    finals: list[Path] = []
    temps: list[Path] = []
    writer: _BoundedWriter | None = None
    rows = nbytes = 0
    try:
        for article in articles:
            size = len(article.title.encode("utf-8")) + len(article.text.encode("utf-8"))
            if writer is not None and (rows >= max_articles or nbytes + size > max_bytes):
                writer.close()
                writer = None
            if writer is None:
                final = out_dir / f"{prefix}-{len(finals):06d}.parquet"
                temp = out_dir / f".{final.name}.{os.getpid()}.tmp"
                finals.append(final)
                temps.append(temp)
                writer = _BoundedWriter(temp, ARTICLES_SCHEMA)
                rows = nbytes = 0
            writer.add(
                {
                    "article_id": int(article.article_id),
                    "title": article.title,
                    "text": article.text,
                    "snapshot_id": snapshot_id,
                    "text_sha1": text_sha1(article.text),
                },
                size,
            )
            rows += 1
            nbytes += size
        if writer is not None:
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):  # the original error matters, not the cleanup's
                writer.writer.close()
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    wanted = {p.name for p in finals}
    for stale in out_dir.glob(f"{prefix}-*.parquet"):
        if stale.name not in wanted and re.fullmatch(rf"{re.escape(prefix)}-\d{{6}}\.parquet", stale.name):
            stale.unlink()
    for temp, final in zip(temps, finals, strict=True):
        os.replace(temp, final)
    return finals


def _open_parquet(path: Path, columns: Sequence[str]) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable Parquet file ({ingest._one_line(exc)})") from None
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise ShardError(f"{path}: missing column(s) {', '.join(missing)}")
    return parquet


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
    parquet = _open_parquet(articles_file, columns)
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
            raise ShardError(f"{articles_file}: corrupt Parquet data ({ingest._one_line(exc)})") from None
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
            parquet = _open_parquet(file, names)
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
                raise ShardError(f"{file}: corrupt Parquet data ({ingest._one_line(exc)})") from None
    return out_file
