"""Which source to read and how: "sample" and paths, the reader per file type, snapshot ids.

`read_articles` is the one entry every caller uses for a whole source; it dispatches on the file type
to the MediaWiki or tabular readers. Snapshot ids name a source by its dated dump name or its digest.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from lvm_core.data.ingest.base import Article, IngestError
from lvm_core.data.ingest.mediawiki import read_xml_file
from lvm_core.data.ingest.tabular import read_jsonl_articles, read_parquet_articles
from lvm_core.data.ingest.wikitext import CLEANER_VERSION
from lvm_core.io.storage import file_digest

__all__ = [
    "SAMPLE_FILES",
    "cleaner_id",
    "dated_snapshot_id",
    "is_tabular",
    "read_articles",
    "resolve_source",
    "sample_dump_path",
    "snapshot_id_for",
    "snapshot_id_prefix",
    "source_kind",
]

# --- embedded sample ---------------------------------------------------------------------------------

# Real Wikipedia export excerpts shipped inside the gensim wheel (located, never imported).
SAMPLE_FILES: dict[str, str] = {
    "en": "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    "bg": "gensim/test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2",
    "en-tables": "gensim/test/test_data/enwiki-table-markup.xml.bz2",
}


def sample_dump_path(lang: str = "en") -> Path:
    """Path of an embedded dump excerpt: "en" (106 articles), "bg" (Bulgarian), "en-tables" (tables).

    The files come with the gensim distribution; they are found through its installed-file list, so
    gensim (and its heavy imports) is never loaded.
    """
    if lang not in SAMPLE_FILES:
        raise IngestError(f"sample {lang!r}: unknown sample, expected one of {sorted(SAMPLE_FILES)}")
    wanted = SAMPLE_FILES[lang]
    try:
        dist = importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError:
        raise IngestError(
            f"sample {lang!r}: the gensim distribution that ships the sample dump is not installed "
            "(pip install gensim==4.4.0)"
        ) from None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") == wanted:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
            break
    raise IngestError(f"sample {lang!r}: {wanted} not found in the installed gensim distribution")


def resolve_source(source: str | os.PathLike[str]) -> Path:
    """Map "sample" to the embedded dump; otherwise return the existing path (IngestError if missing)."""
    if isinstance(source, str) and source == "sample":
        return sample_dump_path("en")
    path = Path(source).expanduser()
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if not path.is_file():
        raise IngestError(f"{path}: not a regular file")
    return path


_DATED_NAME = re.compile(r"^(?P<prefix>[A-Za-z0-9_]+)-(?P<date>(?:19|20)\d{6})(?=$|[-_.])")
_PREFIX = re.compile(r"^[A-Za-z0-9_]+")


def dated_snapshot_id(name: str) -> str | None:
    """`<wiki>-<YYYYMMDD>` from a dated dump file name alone (`enwiki-20240601-pages-…`), else None."""
    match = _DATED_NAME.match(name)
    return f"{match['prefix']}-{match['date']}" if match else None


def snapshot_id_prefix(name: str) -> str:
    """The leading `[A-Za-z0-9_]+` of a file name (the wiki of a dump name), or "snapshot" when it has none."""
    match = _PREFIX.match(name)
    return match.group(0) if match else "snapshot"


def snapshot_id_for(path: str | os.PathLike[str]) -> str:
    """Stable snapshot id: `<wiki>-<YYYYMMDD>` from a dated dump name, else `<prefix>-<sha256[:12]>`.

    A "latest" dump name says nothing about its content, so undated files are identified by digest.
    """
    path = Path(path)
    dated = dated_snapshot_id(path.name)
    if dated is not None:
        return dated
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    return f"{snapshot_id_prefix(path.name)}-{file_digest(path)[:12]}"


# --- reading -----------------------------------------------------------------------------------------


def read_articles(
    source: str | os.PathLike[str], limit: int | None = None, progress: bool = False
) -> Iterator[Article]:
    """Stream the articles of `source` ("sample", .xml, .xml.bz2/.bz2, .parquet or .jsonl).

    Errors about the file's content may surface while iterating; a source that yields no article at
    all raises `IngestError` at its end.
    """
    if limit is not None and limit < 0:
        raise IngestError(f"limit={limit}: must be >= 0")
    path = resolve_source(source)
    reader = _reader_for(path)
    count = 0
    if limit == 0:
        return
    for article in reader(path, progress):
        yield article
        count += 1
        if limit is not None and count >= limit:
            return
    if count == 0:
        raise IngestError(f"{path.name}: no article found (empty dump or every page filtered out)")


def source_kind(path: str | os.PathLike[str]) -> str:
    """Which reader a source file needs: "xml" (MediaWiki dump, plain or bz2), "parquet" or "jsonl"."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    last = suffixes[-1] if suffixes else ""
    if last == ".bz2":
        inner = suffixes[-2] if len(suffixes) > 1 else ""
        if inner in (".parquet", ".jsonl", ".json"):
            raise IngestError(f"{path.name}: unsupported compressed {inner} file (decompress it first)")
        return "xml"
    if last == ".xml":
        return "xml"
    if last == ".parquet":
        return "parquet"
    if last == ".jsonl":
        return "jsonl"
    raise IngestError(
        f"{path.name}: unsupported file type {last or '(no extension)'!r}; "
        "expected .xml, .xml.bz2, .parquet or .jsonl"
    )


def _reader_for(path: Path) -> Callable[[Path, bool], Iterator[Article]]:
    kind = source_kind(path)
    if kind == "xml":
        return read_xml_file
    if kind == "parquet":
        return lambda p, progress: read_parquet_articles(p, progress=progress)
    return lambda p, progress: read_jsonl_articles(p, progress=progress)


def cleaner_id(path: str | os.PathLike[str]) -> str:
    """Which cleaner makes a source's article text, and its version (`wikitext-1`, `tabular-1`): a dataset
    records it in its manifest (`cleaner`), and only a previous dataset with the same one is reused."""
    return f"{'tabular' if is_tabular(path) else 'wikitext'}-{CLEANER_VERSION}"


def is_tabular(path: str | os.PathLike[str]) -> bool:
    """Whether a source file is Parquet/JSONL (rows with id,title,text) rather than a MediaWiki dump."""
    return source_kind(path) in ("parquet", "jsonl")
