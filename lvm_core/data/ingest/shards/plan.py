"""Plan the shards of a source: independently readable parts, each ~`target_bytes` of (compressed) input.

A multistream dump with its index → byte ranges aligned on bz2 stream offsets; a single-stream or plain
XML dump → one shard; Parquet → runs of row groups; JSONL → byte ranges aligned to line starts.
Planning reads only an index, file metadata or a few bytes, never the articles.
"""

from __future__ import annotations

import bz2
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.data.ingest.base import IngestError, one_line
from lvm_core.data.ingest.sources import resolve_source, source_kind

__all__ = [
    "DEFAULT_TARGET_BYTES",
    "READ_BYTES",
    "ShardError",
    "SourceShard",
    "multistream_index_path",
    "plan_source_shards",
]

# ~64 MiB of compressed dump per shard: ~350 shards for a full enwiki, each a few minutes of one core.
DEFAULT_TARGET_BYTES = 64 * 2**20
READ_BYTES = 1 << 20  # bytes read at a time from a multistream range (and when counting JSONL lines)


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
    source = resolve_source(path)
    kind = source_kind(source)
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
        raise ShardError(f"{index.name}: truncated or corrupt index ({one_line(exc)})") from None
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
        raise ShardError(f"{path}: not a readable Parquet file ({one_line(exc)})") from None
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
                block = fh.read(min(READ_BYTES, nxt - pos))
                line += block.count(b"\n")
                pos += len(block)
            first_lines.append(line)
    bounds = [*starts, size]
    return [
        SourceShard(str(path), "jsonl", i, len(starts), bounds[i], bounds[i + 1], first_line=first_lines[i])
        for i in range(len(starts))
    ]
