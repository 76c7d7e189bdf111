"""The records the build's steps hand each other: what a finished shard or pass holds (paths and counts).

Each record is also the `done.json` of its work folder: `to_dict()` gives that JSON (keys in the order
they have always been written) and `from_dict()` reads it back, so resumed work folders and the dataset's
content hash do not change. `reused` says whether the step found its work already done; it is not
written. Plain frozen dataclasses: they travel to and from Dask workers as they are. Their paths are where
the files were written; `relocated()` maps them onto another machine's data folder (`work.local_record`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

from lvm_core.data.ingest.duplicates import DuplicateReport

Where = Callable[[str], str]  # a path written on some machine -> the same file on this one


class StepRecord(Protocol):
    """A record written as a work folder's `done.json` and read back when the step is done already."""

    @property
    def files(self) -> tuple[str, ...]: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> Self: ...

    def relocated(self, where: Where) -> Self: ...


@dataclass(frozen=True)
class IngestedShard:
    """One source shard parsed and cleaned into bounded article files (source order)."""

    shard: str  # the shard's label
    index: int
    files: tuple[str, ...]
    articles: int
    bytes: int
    input_bytes: int
    seconds: float
    reused: bool = False
    # of `articles`: pages cleaned, and pages whose text came from the previous dataset (raw text unchanged)
    cleaned: int | None = None
    reused_articles: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "index": self.index, "files": list(self.files), "articles": self.articles,
                "bytes": self.bytes, "input_bytes": self.input_bytes, "seconds": self.seconds,
                "cleaned": self.cleaned, "reused_articles": self.reused_articles}

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> Self:
        return cls(shard=data["shard"], index=data["index"], files=tuple(data["files"]), articles=data["articles"],
                   bytes=data["bytes"], input_bytes=data["input_bytes"], seconds=data["seconds"], reused=reused,
                   cleaned=data.get("cleaned"), reused_articles=data.get("reused_articles"))

    def relocated(self, where: Where) -> Self:
        return replace(self, files=tuple(where(f) for f in self.files))


@dataclass(frozen=True)
class KeptArticles:
    """The global pass's result: the article files to chunk, how many articles they keep of those read,
    and the repeated ids met (the manifest's `ingest` block)."""

    files: tuple[str, ...]
    articles: int
    read: int
    stats: DuplicateReport
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"files": list(self.files), "articles": self.articles, "read": self.read, "stats": self.stats.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> Self:
        return cls(files=tuple(data["files"]), articles=data["articles"], read=data["read"],
                   stats=DuplicateReport.from_dict(data["stats"]), reused=reused)

    def relocated(self, where: Where) -> Self:
        return replace(self, files=tuple(where(f) for f in self.files))


@dataclass(frozen=True)
class ChunkedShard:
    """One article file split into chunks: its chunks.parquet and counts. In an incremental build,
    `previous_rows` (an .npy beside it) gives each chunk's row in the previous dataset (-1: chunked now), and
    `articles_reused` / `chunks_reused` count the unchanged articles whose rows were copied from there."""

    file: str
    articles: int
    chunks: int
    bytes: int
    seconds: float
    reused: bool = False
    previous_rows: str | None = None
    articles_reused: int = 0
    chunks_reused: int = 0

    @property
    def files(self) -> tuple[str, ...]:
        return (self.file,) if self.previous_rows is None else (self.file, self.previous_rows)

    def to_dict(self) -> dict[str, Any]:
        out = {"file": self.file, "files": list(self.files), "articles": self.articles, "chunks": self.chunks,
               "bytes": self.bytes, "seconds": self.seconds}
        if self.previous_rows is not None:
            out.update(previous_rows=self.previous_rows, articles_reused=self.articles_reused,
                       chunks_reused=self.chunks_reused)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> Self:
        return cls(file=data["file"], articles=data["articles"], chunks=data["chunks"], bytes=data["bytes"],
                   seconds=data["seconds"], reused=reused, previous_rows=data.get("previous_rows"),
                   articles_reused=int(data.get("articles_reused") or 0),
                   chunks_reused=int(data.get("chunks_reused") or 0))

    def relocated(self, where: Where) -> Self:
        rows = None if self.previous_rows is None else where(self.previous_rows)
        return replace(self, file=where(self.file), previous_rows=rows)


@dataclass(frozen=True)
class EmbeddedShard:
    """One chunk file's vectors (embeddings.npy), their encoder record and the encoding numbers
    (`lvm_core.data.embedding.embed.EmbedStats` as a dict, plus `n_copied`: vectors copied from the previous
    dataset; a reused shard reports all its other chunks reused from the cache)."""

    file: str
    encoder_file: str
    chunks: int
    bytes: int
    stats: dict[str, Any]
    reused: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        return (self.file,)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "encoder_file": self.encoder_file, "files": list(self.files),
                "chunks": self.chunks, "bytes": self.bytes, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> Self:
        return cls(file=data["file"], encoder_file=data["encoder_file"], chunks=data["chunks"], bytes=data["bytes"],
                   stats=dict(data["stats"]), reused=reused)

    def relocated(self, where: Where) -> Self:
        return replace(self, file=where(self.file), encoder_file=where(self.encoder_file))


@dataclass(frozen=True)
class AssembledFiles:
    """The joined articles, chunks, vectors and encoder files of a build, and its chunk count."""

    files: tuple[str, ...]
    chunks: int
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"files": list(self.files), "chunks": self.chunks}

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool = False) -> Self:
        return cls(files=tuple(data["files"]), chunks=data["chunks"], reused=reused)

    def relocated(self, where: Where) -> Self:
        return replace(self, files=tuple(where(f) for f in self.files))


@dataclass(frozen=True)
class EmbedResult:
    """The assembled vectors, their encoder record and the build's embedding numbers."""

    embeddings: Path
    encoder_file: Path
    stats: dict[str, Any]
