"""Read one planned shard as articles, filtered and cleaned exactly as a whole-source read.

A multistream shard is decompressed stream by stream behind the dump's <siteinfo> header, so it parses
like a small dump of its own; reader errors are re-raised as `ShardError` naming the shard.
"""

from __future__ import annotations

import bz2
import io
import os
from collections.abc import Generator, Iterator
from pathlib import Path

from lvm_core.data.ingest.base import Article, IngestError, KnownPage, KnownRow, one_line
from lvm_core.data.ingest.mediawiki import open_xml, read_xml_pages
from lvm_core.data.ingest.shards.plan import READ_BYTES, ShardError, SourceShard
from lvm_core.data.ingest.tabular import read_jsonl_articles, read_parquet_articles

__all__ = ["read_shard", "read_shard_pages"]


def read_shard(shard: SourceShard, progress: bool = False) -> Iterator[Article]:
    """Stream exactly this shard's articles, filtered and cleaned as by `ingest.read_articles`.

    A shard whose pages are all redirects or otherwise filtered yields nothing (no error): whether a
    whole source has any article is for the caller to judge over all its shards.
    """
    for item in read_shard_pages(shard, progress=progress):
        assert isinstance(item, Article)  # no `known`: every page is cleaned
        yield item


def read_shard_pages(
    shard: SourceShard, progress: bool = False, known: KnownRow | None = None
) -> Iterator[Article | KnownPage]:
    """As `read_shard`; a dump page that `known` finds in the previous dataset comes as a `KnownPage`
    instead of being cleaned (tabular rows are only normalised, which costs less than a lookup)."""
    path = Path(shard.path)
    if not path.is_file():
        raise ShardError(f"{shard.label}: {path} no longer exists")
    if shard.kind == "parquet":
        yield from _relabel(read_parquet_articles(path, range(shard.start, shard.stop), progress), shard)
    elif shard.kind == "jsonl":
        yield from _relabel(
            read_jsonl_articles(path, shard.start, shard.stop, shard.first_line, progress), shard
        )
    elif shard.kind == "xml":
        try:
            fh = open_xml(path)
        except OSError as exc:
            raise ShardError(f"{path.name}: cannot read file ({one_line(exc)})") from None
        with fh:
            yield from read_xml_pages(
                fh, path.name, progress=progress, compressed=path.suffix.lower() == ".bz2", known=known
            )
    elif shard.kind == "xml-multistream":
        raw = _MultistreamRange(shard)
        with io.BufferedReader(raw, buffer_size=READ_BYTES) as fh:
            yield from read_xml_pages(fh, shard.label, progress=progress, compressed=True, known=known)
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

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._parts))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _generate(self) -> Generator[bytes, None, None]:
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
                want = READ_BYTES if stop is None else min(READ_BYTES, stop - position)
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
            raise ShardError(f"{label}: truncated or corrupt bz2 stream ({one_line(exc)})") from None
        if started and not decompressor.eof:
            raise ShardError(f"{label}: truncated or corrupt bz2 stream (the range ends inside a stream)")
