"""Incremental months: the chunks and vectors of unchanged articles taken over from the previous dataset.

An article's chunks depend only on its text and the chunker settings (min/max words, sentence language,
case folding of the hashes), and a chunk's vector only on its text and the encoder fingerprint. So an article
whose text digest (`text_sha1`, recorded for every article of a published dataset) is the one the previous
dataset of the family holds, under the same chunker and encoder, has exactly the previous dataset's chunk rows
and vectors: the chunk step copies its rows, the embed step copies its vectors, and only changed and new
articles are chunked and go through the embedding cache and the encoder.

Memory stays bounded by a shard: the previous dataset is indexed once per build (`build_article_index`: one
row per article, sorted by id, written as Parquet in row groups), a shard reads only the index rows of its own
articles (row-group statistics skip the rest), its chunk rows by row group and its vectors by rows of the
memory-mapped embeddings.npy. Coherence (a per-article pass over the vectors) is recomputed for every article
in the analysis; it is a cheap streaming pass over vectors that are the same either way.

A build is exact: the dataset equals a `--cold` build of the same snapshot (same content hash), as long as both
read one embedding cache (the vectors of the previous dataset came from it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import CHUNKS_FILE, CHUNKS_SCHEMA, DatasetPaths
from lvm_core.contracts.manifest import DatasetManifest
from lvm_core.data import chunking
from lvm_core.data.build.family import PublishedDataset, ensure_stored, local_dataset, previous_dataset_for
from lvm_core.data.build.records import ChunkedShard, EmbeddedShard
from lvm_core.data.build.source import SourceInfo, wiki_language
from lvm_core.data.build.store import WorkStore
from lvm_core.data.build.work import (
    STEP_VERSIONS,
    local_work_file,
    step_key,
    upload_work_dir,
    work_dir,
    work_store,
)
from lvm_core.data.embedding.encoder import parse_encoder_spec
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.embedding.model_folder import encoder_casefolds
from lvm_core.data.ingest.base import Article
from lvm_core.io.storage import atomic_path, load_npy, read_json

INDEX_FILE = "article_index.parquet"
_INDEX_ROW_GROUP = 65_536  # index rows per row group: a shard's lookup reads only the groups of its ids
_VECTOR_BLOCK = 65_536  # previous vectors copied this many rows at a time
_SCATTERED = -2  # index start of an article whose chunk rows are not contiguous (never copied)


class ReuseRefusedError(UserError, ValueError):
    """The previous dataset was made with another chunker or encoder: its chunks or vectors are not this build's."""


@dataclass(frozen=True)
class ReusePlan:
    """What a build takes over from the previous dataset: its folder, identity, article index and encoder."""

    previous: str  # the previous dataset's folder
    dataset_id: str
    content_hash: str
    index: str  # INDEX_FILE: article_id, text_sha1, start (first chunk row), n (chunks)
    fingerprint: str  # the previous vectors' encoder fingerprint id
    copy_vectors: bool  # False when its vectors were stored at a lower precision than this build's


def chunker_settings(config: BuildConfig, snapshot_id: str) -> dict[str, Any]:
    """What an article's chunk rows depend on besides its text (recorded in the lineage, compared next month)."""
    model, _ = parse_encoder_spec(config.encoder)
    return {"min_words": config.min_words, "max_words": config.max_words, "language": wiki_language(snapshot_id),
            "casefold": encoder_casefolds(model), "version": STEP_VERSIONS["chunk"]}


def plan_reuse(
    config: BuildConfig, source: SourceInfo, fingerprint: EncoderFingerprint | None = None
) -> ReusePlan | None:
    """The reuse plan of a build: None when cold or the family has no previous dataset; refuses (one line) a
    previous dataset with another chunker, or another encoder than the build's pinned `fingerprint` (each embed
    shard checks its own again). Its article index is built once into a work folder."""
    if config.cold:
        return None
    previous = previous_dataset_for(config, source.snapshot_id, source.dataset_id)
    if previous is None:
        return None
    paths = DatasetPaths(previous.root)
    manifest, encoder = read_json(paths.manifest), read_json(paths.encoder)
    _check_chunker(previous, manifest, encoder, chunker_settings(config, source.snapshot_id))
    content_hash = str(manifest.get("content_hash") or "")
    out = work_dir(config.work_data_dir(), "reuse", step_key("reuse", content_hash, str(previous.root)))
    index = out / INDEX_FILE
    if not index.exists():
        build_article_index(previous.root, index)
    store = work_store(config)  # workers with their own data folders take the index and the dataset from there
    upload_work_dir(out, store)
    ensure_stored(previous.root, previous.dataset_id, content_hash, store)
    stored = str(encoder.get("vector_dtype") or "float32")
    plan = ReusePlan(
        previous=str(previous.root), dataset_id=previous.dataset_id, content_hash=content_hash, index=str(index),
        fingerprint=EncoderFingerprint.from_dict({k: v for k, v in encoder.items() if k != "vector_dtype"}).id,
        copy_vectors=stored in ("float32", config.vector_dtype),
    )
    if fingerprint is not None:
        check_fingerprint(plan, fingerprint)
    return plan


def _check_chunker(
    previous: PublishedDataset, manifest: dict[str, Any], encoder: dict[str, Any], wanted: dict[str, Any]
) -> None:
    """Refuse a previous dataset chunked otherwise (its lineage says how; older ones: build config and encoder)."""
    recorded = ((manifest.get("lineage") or {}).get("reuse") or {}).get("chunker")
    if not isinstance(recorded, dict):
        config = manifest.get("build_config") or {}
        recorded = {"min_words": config.get("min_words"), "max_words": config.get("max_words"),
                    "language": wiki_language(previous.snapshot_id), "casefold": encoder.get("casefold", True)}
    differ = [f"{k} {recorded.get(k)!r} here {v!r}" for k, v in wanted.items() if k in recorded and recorded[k] != v]
    if differ:
        raise ReuseRefusedError(
            f"previous dataset {previous.root} was chunked with other settings ({'; '.join(differ)}): pass --cold "
            "to build without it, or --previous-dataset to name another"
        )


def local_reuse(plan: ReusePlan | None, config: BuildConfig, store: WorkStore | None) -> ReusePlan | None:
    """The plan as files of this machine (a worker with its own data folder fetches them from the work store)."""
    if plan is None or store is None:
        return plan
    here = config.work_data_dir()
    root = local_dataset(plan.previous, plan.dataset_id, plan.content_hash, here, store)
    return replace(plan, index=str(local_work_file(plan.index, here, store)), previous=str(root))


def check_fingerprint(plan: ReusePlan, fingerprint: EncoderFingerprint) -> None:
    """Refuse to mix this build's encoder with the previous dataset's vectors of another one."""
    if fingerprint.id != plan.fingerprint:
        raise ReuseRefusedError(
            f"previous dataset {plan.previous} was embedded with encoder {plan.fingerprint}, this build uses "
            f"{fingerprint.describe()}: pass --cold to build without it, or --previous-dataset to name another"
        )


def build_article_index(dataset_root: Path, out: Path) -> Path:
    """One row per article of a published dataset (article_id, text_sha1, start, n: its chunk rows), sorted by
    id. Polars streams both files. An article without chunks has start -1; one whose chunk rows are not
    contiguous gets `_SCATTERED` and is chunked again."""
    import polars as pl

    paths = DatasetPaths(Path(dataset_root))
    runs = (
        pl.scan_parquet(paths.chunks).select("article_id").with_row_index("row")
        .group_by("article_id")
        .agg(pl.col("row").min().cast(pl.Int64).alias("start"), pl.col("row").max().cast(pl.Int64).alias("last"),
             pl.len().cast(pl.Int64).alias("n"))
        .with_columns(pl.when(pl.col("last") - pl.col("start") + 1 == pl.col("n")).then(pl.col("start"))
                      .otherwise(_SCATTERED).alias("start"))
        .drop("last")
    )
    index = (
        pl.scan_parquet(paths.articles).select("article_id", "text_sha1")
        .join(runs, on="article_id", how="left")
        .with_columns(pl.col("start").fill_null(-1), pl.col("n").fill_null(0))
        .sort("article_id")
    )
    with atomic_path(Path(out)) as tmp:
        index.sink_parquet(tmp, row_group_size=_INDEX_ROW_GROUP)
    return Path(out)


class PreviousChunks:
    """The previous dataset's index rows of one shard's articles, and its chunk rows read by row group."""

    def __init__(self, plan: ReusePlan, article_ids: Sequence[int]) -> None:
        self._entry: dict[int, tuple[str, int, int]] = {}
        if article_ids:  # only the index rows of these ids (row-group statistics skip the others)
            index = pq.read_table(plan.index, filters=[("article_id", "in", list(article_ids))])
            self._entry = {a: (s, start, n) for a, s, start, n in zip(
                *(index.column(c).to_pylist() for c in ("article_id", "text_sha1", "start", "n")), strict=True)}
        self._file = pq.ParquetFile(Path(plan.previous) / CHUNKS_FILE)
        meta = self._file.metadata
        self._starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        self._group: tuple[int, pa.Table] | None = None

    def unchanged(self, article_id: int, text_sha1: str) -> tuple[int, int] | None:
        """(first chunk row, chunks) in the previous dataset when the article's text is unchanged, else None."""
        entry = self._entry.get(article_id)
        if entry is None or entry[0] != text_sha1 or entry[1] == _SCATTERED:
            return None
        return int(entry[1]), int(entry[2])

    def rows(self, start: int, n: int) -> pa.Table:
        """Chunk rows [start, start + n) of the previous dataset (CHUNKS_SCHEMA)."""
        parts, row, stop = [], start, start + n
        while row < stop:
            g = int(np.searchsorted(self._starts, row, side="right") - 1)
            if self._group is None or self._group[0] != g:
                self._group = (g, self._file.read_row_group(g, columns=CHUNKS_SCHEMA.names).cast(CHUNKS_SCHEMA))
            end = min(stop, int(self._starts[g + 1]))
            parts.append(self._group[1].slice(row - int(self._starts[g]), end - row))
            row = end
        return pa.concat_tables(parts) if parts else CHUNKS_SCHEMA.empty_table()


def chunk_batch(
    articles: Sequence[tuple[int, str, str]], config: chunking.ChunkingConfig, previous: PreviousChunks | None
) -> tuple[pa.Table, np.ndarray, int]:
    """Chunk rows of (article_id, text, text_sha1) articles in their order: unchanged ones copied from the previous
    dataset, the others chunked. Returns the rows, each row's previous-dataset row (-1: chunked now) and how many
    articles were copied."""
    kept = [previous.unchanged(a, s) if previous is not None else None for a, _, s in articles]
    new = chunking.chunk_articles((Article(a, "", x) for (a, x, _), k in zip(articles, kept) if k is None), config)
    if all(k is None for k in kept):
        return new, np.full(new.num_rows, -1, dtype=np.int64), 0
    assert previous is not None
    counts = Counter(new.column("article_id").to_pylist())
    segments: list[list[Any]] = []  # [kind, start, n]: runs of copied (previous rows) or chunked (new rows)
    at = 0
    for (a, _, _), k in zip(articles, kept):
        kind, start, n = ("prev", *k) if k is not None else ("new", at, counts.get(a, 0))
        at += n if kind == "new" else 0
        if segments and segments[-1][0] == kind and segments[-1][1] + segments[-1][2] == start:
            segments[-1][2] += n
        else:
            segments.append([kind, start, n])
    tables, rows = [], []
    for kind, start, n in segments:
        tables.append(previous.rows(start, n) if kind == "prev" else new.slice(start, n))
        rows.append(np.arange(start, start + n, dtype=np.int64) if kind == "prev" else np.full(n, -1, np.int64))
    return pa.concat_tables(tables).combine_chunks(), np.concatenate(rows), sum(1 for k in kept if k is not None)


def previous_vectors(plan: ReusePlan, rows: np.ndarray, dim: int) -> np.ndarray:
    """float32 vectors of the given rows of the previous dataset's embeddings.npy, read block by block."""
    stored = load_npy(DatasetPaths(Path(plan.previous)).embeddings)
    if stored.ndim != 2 or stored.shape[1] != dim:
        raise ReuseRefusedError(f"{plan.previous}: vectors of shape {stored.shape}, this encoder's have dim {dim}: "
                                "pass --cold")
    out = np.empty((len(rows), dim), dtype=np.float32)
    for a in range(0, len(rows), _VECTOR_BLOCK):
        out[a:a + _VECTOR_BLOCK] = stored[rows[a:a + _VECTOR_BLOCK]]
    return out


def reuse_lineage(
    plan: ReusePlan | None, config: BuildConfig, snapshot_id: str,
    chunked: Sequence[ChunkedShard], embedded: Sequence[EmbeddedShard],
) -> dict[str, Any]:
    """The manifest's lineage["reuse"] (run-only): what came from the previous dataset, what was made anew."""
    n_articles, n_chunks = sum(int(c.articles) for c in chunked), sum(int(c.chunks) for c in chunked)
    a_reused, c_reused = sum(c.articles_reused for c in chunked), sum(c.chunks_reused for c in chunked)

    def stat(key: str) -> int:
        return int(sum(int(e.stats.get(key) or 0) for e in embedded))

    return {
        "previous_dataset": plan.dataset_id if plan else None,
        "previous_content_hash": plan.content_hash if plan else None,
        "cold": config.cold,
        "chunker": chunker_settings(config, snapshot_id),
        "articles_reused": a_reused, "articles_chunked": n_articles - a_reused,
        "chunks_reused": c_reused, "chunks_chunked": n_chunks - c_reused,
        "vectors_copied": stat("n_copied"), "vectors_from_cache": stat("n_reused"),
        "vectors_encoded": stat("n_encoded"),
        "coherence": "recomputed",
    }


def with_reuse_lineage(manifest: DatasetManifest, reuse: dict[str, Any]) -> DatasetManifest:
    """The manifest with the chunk/embed reuse in lineage["reuse"] (and the previous dataset and `cold` where no
    one set them yet)."""
    lineage = dict(manifest.lineage or {})
    lineage.setdefault("previous_dataset", reuse["previous_dataset"])
    lineage.setdefault("previous_content_hash", reuse["previous_content_hash"])
    lineage.setdefault("cold", reuse["cold"])
    lineage["reuse"] = {**dict(lineage.get("reuse") or {}), **reuse}  # beside what ingest recorded (`ingest`)
    return manifest.with_fields(lineage=lineage)
