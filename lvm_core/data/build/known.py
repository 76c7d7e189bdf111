"""Pages the previous dataset already cleaned: an index of its articles by (page id, digest of the raw text),
so that an ingest shard does not clean again a page whose wikitext did not change since the family's
previous published dataset, and takes its text from there instead.

The rule: a previous dataset is reused only when it was cleaned by the same cleaner (`cleaner_id`: kind
and `CLEANER_VERSION`, recorded as the manifest's `cleaner`) and records `source_sha1`; never by a
`--cold` build. Otherwise every page is cleaned, and `known_articles_for` says why.

The index is built once per build (`known_articles_for`) into a work folder keyed by the previous
dataset's content hash and the cleaner: three .npy arrays sorted by (article_id, code), 20 bytes per
previous article — article_id (int64), a 64-bit code of source_sha1 (its first 16 hex digits, uint64),
the row in the previous articles.parquet (uint32). Shard tasks open them memory-mapped (`KnownLookup`)
and look up with `np.searchsorted`, so only the pages touched are read; `with_known_texts` then reads
the texts found from the previous articles.parquet one row group at a time, a bounded window of pages
at once (both files are in dump order, so one window's rows are mostly one or two row groups).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.build.family import dataset_family, ensure_stored, local_dataset, previous_dataset_for
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.build.store import WorkStore
from lvm_core.data.build.work import local_work_file, step_key, upload_work_dir, work_dir, work_store
from lvm_core.data.ingest.base import Article, KnownPage, one_line
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.data.ingest.sources import cleaner_id
from lvm_core.io.storage import atomic_dir, read_json, write_json

INDEX_FORMAT = 1  # bump when the index files change
_FILES = ("ids.npy", "codes.npy", "rows.npy")
_DONE = "index.json"
_WINDOW_PAGES = 1024  # pages held while their known texts are read (~the writer's row group)
_TEXT_COLUMNS = ["article_id", "text", "source_sha1"]

_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


@dataclass(frozen=True)
class KnownArticles:
    """The index of a previous dataset's articles (paths and identity; the arrays stay on disk)."""

    folder: str
    articles: str  # the previous dataset's articles.parquet
    dataset_id: str
    content_hash: str
    cleaner: str
    n: int

    @property
    def identity(self) -> list[str]:
        """What an ingest work key holds of the index: which previous dataset, cleaned by which cleaner."""
        return [self.content_hash, self.cleaner]


def sha1_code(digest: str) -> int:
    """64-bit code of a sha1 hex digest: its first 16 hex digits (a sha1 is uniform already)."""
    return int(digest[:16], 16)


def sha1_codes(digests: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """`sha1_code` of a string column, vectorised: (codes uint64, valid bool); nulls and non-hex are not valid."""
    values = [d[:16] if d and len(d) >= 16 else "" for d in digests.to_pylist()]
    raw = np.array(values, dtype="S16").view(np.uint8).reshape(len(values), 16)
    nibbles = _HEX[raw]
    valid = (nibbles != 255).all(axis=1)
    codes = (nibbles.astype(np.uint64) << _SHIFTS).sum(axis=1, dtype=np.uint64)
    return np.where(valid, codes, np.uint64(0)), valid


def known_articles_for(config: BuildConfig, source: SourceInfo) -> tuple[KnownArticles | None, str]:
    """The index of the previous dataset's articles for this build, or None; and a line saying why."""
    if config.cold:
        return None, "cold build: every page is cleaned"
    previous = previous_dataset_for(config, source.snapshot_id, source.dataset_id)
    if previous is None:
        return None, f"no previous dataset of family {dataset_family(source.snapshot_id)!r}: every page is cleaned"
    name, paths, cleaner = previous.dataset_id, DatasetPaths(previous.root), cleaner_id(source.path)
    manifest = read_json(paths.manifest)  # read_published has read it already
    if manifest.get("cleaner") != cleaner:
        was = manifest.get("cleaner") or "a cleaner it does not record"
        return None, f"previous dataset {name} was cleaned by {was}, this build by {cleaner}: every page is cleaned"
    content_hash = manifest.get("content_hash")
    if not content_hash:
        return None, f"previous dataset {name} records no content hash: every page is cleaned"
    try:
        names = pq.ParquetFile(paths.articles).schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        return None, f"previous dataset {name}: {paths.articles} unreadable ({one_line(exc)}): every page is cleaned"
    if "source_sha1" not in names:
        return None, (f"previous dataset {name} has no source_sha1 column (built before raw digests were "
                      "recorded): every page is cleaned")
    key = step_key("ingest", "known", content_hash, cleaner, INDEX_FORMAT)
    folder = work_dir(config.work_data_dir(), "ingest", key)
    n = ensure_index(paths.articles, folder)
    store = work_store(config)  # workers with their own data folders take the index and the dataset from there
    upload_work_dir(folder, store)
    ensure_stored(previous.root, name, str(content_hash), store)
    known = KnownArticles(folder=str(folder), articles=str(paths.articles), dataset_id=name,
                          content_hash=str(content_hash), cleaner=cleaner, n=n)
    return known, f"{n} articles of previous dataset {name} indexed: pages with unchanged wikitext are not cleaned"


def local_known(known: KnownArticles | None, config: BuildConfig, store: WorkStore | None) -> KnownArticles | None:
    """The index as files of this machine (a worker with its own data folder fetches them from the work store)."""
    if known is None or store is None:
        return known
    here = config.work_data_dir()
    root = local_dataset(Path(known.articles).parent, known.dataset_id, known.content_hash, here, store)
    return replace(known, folder=str(local_work_file(known.folder, here, store)),
                   articles=str(DatasetPaths(root).articles))


def ensure_index(articles: Path, folder: Path) -> int:
    """The index of `articles` in `folder` (built unless done already, published atomically); its size."""
    try:
        return int(read_json(Path(folder) / _DONE)["n"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with atomic_dir(Path(folder)) as staging:
        n = build_index(Path(articles), staging)
        write_json(staging / _DONE, {"articles": str(articles), "n": n, "format": INDEX_FORMAT})
    return n


def build_index(articles: Path, out: Path) -> int:
    """Write the sorted (article_id, code, row) arrays of an articles file's rows with a valid source_sha1.

    Read a row group at a time (two columns); the arrays (20 bytes a row) are what is held at the end.
    """
    parquet = pq.ParquetFile(articles)
    ids, codes, valid = [], [], []
    for i in range(parquet.num_row_groups):
        table = parquet.read_row_group(i, columns=["article_id", "source_sha1"], use_threads=False)
        ids.append(table.column(0).to_numpy().astype(np.int64))
        group_codes, group_valid = sha1_codes(table.column(1))
        codes.append(group_codes)
        valid.append(group_valid)
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if all_ids.shape[0] >= 2**32:
        raise ShardError(f"{articles}: {all_ids.shape[0]} rows, more than the index's uint32 rows hold")
    rows = np.flatnonzero(np.concatenate(valid) if valid else np.zeros(0, bool)).astype(np.uint32)
    all_ids = all_ids[rows]
    all_codes = (np.concatenate(codes) if codes else np.zeros(0, np.uint64))[rows]
    if not np.all(all_ids[1:] > all_ids[:-1]):  # dump order is id order: sorting is rarely needed
        order = np.lexsort((all_codes, all_ids))
        all_ids, all_codes, rows = all_ids[order], all_codes[order], rows[order]
    out.mkdir(parents=True, exist_ok=True)
    for name, array in zip(_FILES, (all_ids, all_codes, rows), strict=True):
        np.save(out / name, array, allow_pickle=False)
    return int(rows.shape[0])


class KnownLookup:
    """(page id, source_sha1) -> row of the previous articles file, on the memory-mapped index."""

    def __init__(self, known: KnownArticles) -> None:
        folder = Path(known.folder)
        try:
            self.ids, self.codes, self.rows = (np.load(folder / f, mmap_mode="r", allow_pickle=False) for f in _FILES)
        except (OSError, ValueError) as exc:
            raise ShardError(f"{folder}: index of previous dataset {known.dataset_id} unreadable "
                             f"({one_line(exc)}); is the work folder shared with this worker?") from None
        self.n = int(self.ids.shape[0])

    def __call__(self, article_id: int, digest: str) -> int | None:
        i = int(np.searchsorted(self.ids, article_id))
        if i >= self.n or int(self.ids[i]) != article_id:
            return None
        code = sha1_code(digest)
        while i < self.n and int(self.ids[i]) == article_id:
            if int(self.codes[i]) == code:
                return int(self.rows[i])
            i += 1
        return None


def with_known_texts(items: Iterable[Article | KnownPage], known: KnownArticles | None) -> Iterator[Article]:
    """Articles in the given order, each known page with its text from the previous articles file.

    Pages are held a window at a time; the rows a window needs are read a row group at a time.
    """
    if known is None:
        for item in items:
            assert isinstance(item, Article)  # nothing is known without an index
            yield item
        return
    rows = _PreviousRows(Path(known.articles))
    window: list[Article | KnownPage] = []
    for item in items:
        window.append(item)
        if len(window) >= _WINDOW_PAGES:
            yield from rows.resolve(window)
            window = []
    yield from rows.resolve(window)


class _PreviousRows:
    """Rows of the previous articles file, read by row group for the known pages of a window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{path}: previous articles unreadable ({one_line(exc)})") from None
        meta = self.parquet.metadata
        self.starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])

    def resolve(self, window: list[Article | KnownPage]) -> Iterator[Article]:
        wanted = np.array([p.row for p in window if isinstance(p, KnownPage)], dtype=np.int64)
        texts = self._texts(np.unique(wanted)) if wanted.size else {}
        for item in window:
            if isinstance(item, Article):
                yield item
                continue
            article_id, text, digest = texts[item.row]
            if article_id != item.article_id or digest != item.source_sha1:
                raise ShardError(f"{self.path}: row {item.row} holds article {article_id}, not {item.article_id} "
                                 "with this raw text: the previous dataset changed during this build; run it again")
            yield Article(item.article_id, item.title, text, item.source_sha1)

    def _texts(self, rows: np.ndarray) -> dict[int, tuple[int, str, str]]:
        """Sorted global rows -> (article_id, text, source_sha1), one row group read at a time."""
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        found: dict[int, tuple[int, str, str]] = {}
        try:
            for group in np.unique(groups):
                local = rows[groups == group]
                table = self.parquet.read_row_groups([int(group)], columns=_TEXT_COLUMNS, use_threads=False)
                taken = table.take(pa.array(local - self.starts[group], pa.int64()))
                ids, texts, digests = (taken.column(c).to_pylist() for c in _TEXT_COLUMNS)
                found.update(zip(local.tolist(), zip(ids, texts, digests, strict=True), strict=True))
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{self.path}: corrupt previous articles ({one_line(exc)})") from None
        return found
