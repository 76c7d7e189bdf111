"""Dataset build steps over files: ingest → chunk → embed (shard by shard) → assemble → analyse
(coherence, splits, leakage, sequences, oracle) → manifest → publish; and loading a published dataset.

Each step writes its output into a content-addressed work folder (`<data_dir>/work/<key>/`) and is
idempotent, so an interrupted build resumes from the last finished shard and an unchanged snapshot is
not recomputed. The dataset folder is assembled in a staging folder and renamed into place only when
its gates passed; a failed build is kept aside for inspection and never replaces a good dataset.
"""

from __future__ import annotations

import datetime as _dt
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core import contracts
from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts import DataContractError, DatasetPaths
from lvm_core.contracts.manifest import DatasetManifest, parse_manifest, read_manifest, write_manifest
from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.runtime.faults import crash_point
from lvm_core.runtime.liveness import OWNER_FILE, abandoned_dirs, claim_dir
from lvm_core.data.embedding.onnx import encoder_cache_dir
from lvm_core.io.storage import (
    atomic_path,
    file_digest,
    json_digest,
    link_or_copy,
    load_npy,
    read_json,
    recover_interrupted_swaps,
    replace_dir,
    write_json,
    write_parquet,
)
from lvm_core.data.vector_files import load_embeddings, save_embeddings

# Bump when a step's output for the same inputs changes, so cached work is not reused.
STEP_VERSIONS = {"ingest": 3, "chunk": 2, "embed": 2, "assemble": 1, "analyse": 1}
INGEST_STATS_FILE = "ingest_stats.json"


@dataclass(frozen=True)
class SourceInfo:
    """A resolved input snapshot."""

    path: Path
    snapshot_id: str
    digest: str
    dataset_id: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "digest": self.digest, "snapshot_id": self.snapshot_id}


def resolve_source(config: BuildConfig) -> SourceInfo:
    """Locate the source, digest it and derive the snapshot and dataset ids."""
    from lvm_core.data import ingest
    from lvm_core.data.ingest.download import local_source

    # A watched remote snapshot (https://, s3://, ...) is downloaded once into the data dir.
    path = ingest.resolve_source(local_source(config.source, config.resolved_data_dir()))
    digest = file_digest(path)
    snapshot_id = config.snapshot_id or ingest.snapshot_id_for(path)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", snapshot_id):
        raise ValueError(f"snapshot id {snapshot_id!r} may only contain letters, digits, '.', '_' and '-'")
    dataset_id = snapshot_id if config.limit_articles is None else f"{snapshot_id}-first{config.limit_articles}"
    return SourceInfo(path=path, snapshot_id=snapshot_id, digest=digest, dataset_id=dataset_id)


def work_dir(data_dir: Path, step: str, key: str) -> Path:
    return Path(data_dir) / "work" / f"{step}-{key[:16]}"


def step_key(step: str, *parts: Any) -> str:
    return json_digest([step, STEP_VERSIONS[step], *parts])


# --- steps ----------------------------------------------------------------------------------------


def ingest_step(source: SourceInfo, config: BuildConfig, out_dir: Path, progress: bool = False) -> Path:
    """Parse and clean the source into articles.parquet (skipped when already done).

    Repeated ids are counted into `ingest_stats.json` beside it (read into the manifest). A dump may
    repeat a page: the first revision wins. A Parquet/JSONL row repeating an id with the same text is
    dropped; with a different text the build fails unless `config.on_duplicate` is "first" or "last".
    """
    from lvm_core.data import ingest

    out = Path(out_dir) / contracts.ARTICLES_FILE
    if out.exists():
        return out
    policy = config.on_duplicate if ingest.is_tabular(source.path) else "first"
    articles, dups = ingest.drop_duplicate_ids(
        ingest.read_articles(source.path, limit=config.limit_articles, progress=progress),
        on_duplicate=policy, source_name=Path(source.path).name,
    )
    ids, titles, texts, hashes = [], [], [], []
    for article in articles:
        ids.append(article.article_id)
        titles.append(article.title)
        texts.append(article.text)
        hashes.append(_sha1(article.text))
    crash_point("ingest")
    table = pa.table(
        {
            "article_id": pa.array(ids, pa.int64()),
            "title": pa.array(titles, pa.string()),
            "text": pa.array(texts, pa.string()),
            "snapshot_id": pa.array([source.snapshot_id] * len(ids), pa.string()),
            "text_sha1": pa.array(hashes, pa.string()),
        },
        schema=contracts.ARTICLES_SCHEMA,
    )
    write_json(Path(out_dir) / INGEST_STATS_FILE, dups.to_dict())
    write_parquet(out, table)
    return out


def read_ingest_stats(articles_path: Path) -> dict[str, Any]:
    """What the ingest step counted (repeated ids); empty for work folders of older builds."""
    path = Path(articles_path).parent / INGEST_STATS_FILE
    try:
        stats = read_json(path)
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def wiki_language(snapshot_id: str) -> str:
    """Sentence-splitter language from a dump name: `bgwiki-20240601` → "bg"; English otherwise."""
    m = re.match(r"^([a-z]{2,3})wiki\b", snapshot_id)
    return m.group(1) if m else "en"


def _check_hash_casing(texts: list[str], hashes: list[str], casefold: bool, chunks_path: Path, n: int = 256) -> None:
    """Refuse chunks hashed with another case normalisation than the encoder's (the cache is keyed by hash)."""
    from lvm_core.data.chunking import text_hash

    for text, h in zip(texts[:n], hashes[:n]):
        if text_hash(text, casefold) != h:
            raise DataContractError(
                f"{chunks_path}: chunk text hashes were not made with this encoder's normalisation "
                f"({'case-folded' if casefold else 'cased'}); rebuild the chunks for this encoder"
            )


@dataclass
class EmbedResult:
    embeddings: Path
    encoder_file: Path
    stats: dict[str, Any]


# --- sharded steps ----------------------------------------------------------------------------------
#
# Ingest, chunk and embed work shard by shard, so memory is bounded by a shard and shards can run on
# other processes or machines (`flows/runners.py`). Each shard's output lives in a work folder keyed by
# its inputs and is published atomically with a `done.json` record written last: a rerun redoes only the
# shards without one. Tasks exchange the small records these steps return (paths and counts), never data.

DONE_FILE = "done.json"
Progress = Callable[[int], None]


def _done_record(out_dir: Path) -> dict[str, Any] | None:
    """The record of a finished shard, or None when the shard has to be (re)done."""
    try:
        record = read_json(Path(out_dir) / DONE_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(Path(f).exists() for f in record.get("files", [])):
        return None
    return {**record, "reused": True}


def _finish(out_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    write_json(Path(out_dir) / DONE_FILE, record)
    return {**record, "reused": False}


def plan_shards(source: SourceInfo, config: BuildConfig) -> list[Any]:
    """Independently readable parts of the source, in source order (`lvm_core.data.ingest.shards.SourceShard`)."""
    from lvm_core.data.ingest import shards

    return shards.plan_source_shards(source.path, target_bytes=config.shard_bytes)


def shard_key(shard: Any) -> list[Any]:
    """What identifies a source shard's bytes (the source digest is keyed beside it)."""
    return [shard.kind, shard.index, shard.count, shard.start, shard.stop, shard.header_stop]


def ingest_shard_work_dir(shard: Any, source: SourceInfo, config: BuildConfig) -> Path:
    key = step_key("ingest", "shard", source.digest, shard_key(shard), source.snapshot_id,
                   config.limit_articles, config.shard_articles)
    return work_dir(config.resolved_data_dir(), "ingest", key)


def ingest_shard_step(
    shard: Any, source: SourceInfo, config: BuildConfig, out_dir: Path, on_progress: Progress | None = None
) -> dict[str, Any]:
    """Parse and clean one source shard into bounded article files (ARTICLES_SCHEMA), source order.

    With `limit_articles` a shard reads at most that many articles: the global pass (`dedup_articles`)
    keeps the first N of the whole source. Repeated ids are left to that pass too.
    """
    from lvm_core.data.ingest import shards

    out_dir = Path(out_dir)
    done = _done_record(out_dir)
    if done is not None:
        return done
    t0 = time.perf_counter()
    counted = {"articles": 0}

    def articles() -> Any:
        for article in shards.read_shard(shard):
            counted["articles"] += 1
            if on_progress is not None:
                on_progress(1)
            yield article
            if config.limit_articles is not None and counted["articles"] >= config.limit_articles:
                break
        crash_point("ingest")  # all read, no file renamed into place yet

    files = shards.write_article_shards(
        articles(), out_dir, snapshot_id=source.snapshot_id, max_articles=config.shard_articles,
        prefix=f"articles-{shard.index:05d}",
    )
    return _finish(out_dir, {
        "shard": shard.label, "index": shard.index, "files": [str(f) for f in files],
        "articles": counted["articles"], "bytes": sum(f.stat().st_size for f in files),
        "input_bytes": shard.stop - shard.start, "seconds": round(time.perf_counter() - t0, 3),
    })


def dedup_work_dir(ingested: list[dict[str, Any]], source: SourceInfo, config: BuildConfig) -> Path:
    policy = config.on_duplicate if _is_tabular(source) else "first"
    files = [f for r in ingested for f in r["files"]]
    key = step_key("ingest", "dedup", files, config.limit_articles, policy)
    return work_dir(config.resolved_data_dir(), "ingest", key)


def _is_tabular(source: SourceInfo) -> bool:
    from lvm_core.data import ingest

    return ingest.is_tabular(source.path)


def dedup_articles(
    ingested: list[dict[str, Any]], source: SourceInfo, config: BuildConfig, out_dir: Path
) -> dict[str, Any]:
    """The global pass over the (article_id, text_sha1) columns of all article files, in source order.

    Keeps the first `limit_articles` articles read, then today's rules for repeated ids
    (`ingest.drop_duplicate_ids`: first wins for dumps, `on_duplicate` for tabular sources; the counts
    go to `ingest_stats.json`). Files that lose no row are passed on as they are; the others are
    rewritten into `out_dir`. Returns the final article files and counts.
    """
    from lvm_core.data import ingest

    out_dir = Path(out_dir)
    done = _done_record(out_dir)
    if done is not None:
        return done
    files = [Path(f) for r in ingested for f in r["files"]]
    ids: list[int] = []
    shas: list[str] = []
    file_of: list[int] = []
    for i, f in enumerate(files):
        t = _read_columns(f, ["article_id", "text_sha1"])
        ids += t.column("article_id").to_pylist()
        shas += t.column("text_sha1").to_pylist()
        file_of += [i] * t.num_rows
    n_read = len(ids)
    if config.limit_articles is not None:
        del ids[config.limit_articles:], shas[config.limit_articles:], file_of[config.limit_articles:]
    if not ids:
        raise ingest.IngestError(f"{Path(source.path).name}: no article found (empty dump or every page filtered out)")
    policy = config.on_duplicate if _is_tabular(source) else "first"
    # Same rules as ingest.drop_duplicate_ids, over hashes instead of texts (equal hash <=> equal text).
    keyed = [ingest.Article(a, "", h) for a, h in zip(ids, shas)]
    kept_rows = _kept_rows(keyed, policy, Path(source.path).name)
    report = kept_rows.pop()
    offsets = np.cumsum([0] + [int(pq.ParquetFile(f).metadata.num_rows) for f in files])
    out_files: list[str] = []
    by_file: dict[int, list[int]] = {}
    for row in kept_rows:  # a kept slot belongs to the file of the id's first row
        by_file.setdefault(file_of[row[0]], []).append(row[1])
    for i, f in enumerate(files):
        rows = by_file.get(i)
        if rows is None:
            continue
        if rows == list(range(offsets[i], offsets[i + 1])):
            out_files.append(str(f))
            continue
        out = out_dir / f"{f.stem}-kept.parquet"
        write_parquet(out, _take_rows(files, offsets, rows))
        out_files.append(str(out))
    write_json(out_dir / INGEST_STATS_FILE, report)
    return _finish(out_dir, {
        "files": out_files, "articles": len(kept_rows), "read": n_read, "stats": report,
    })


def _kept_rows(keyed: list[Any], policy: str, source_name: str) -> list[Any]:
    """[(first row, row whose content is kept), ..., duplicate report dict] for `dedup_articles`."""
    from lvm_core.data import ingest

    row_of = {id(a): r for r, a in enumerate(keyed)}
    first_row: dict[int, int] = {}
    for r, a in enumerate(keyed):
        first_row.setdefault(a.article_id, r)
    kept, report = ingest.drop_duplicate_ids(keyed, on_duplicate=policy, source_name=source_name)
    return [(first_row[a.article_id], row_of[id(a)]) for a in kept] + [report.to_dict()]


def _read_columns(path: Path, columns: list[str]) -> pa.Table:
    from lvm_core.data.ingest.shards import ShardError

    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable shard file ({' '.join(str(exc).split())[:200]})") from None


def _take_rows(files: list[Path], offsets: np.ndarray, rows: list[int]) -> pa.Table:
    """The given global rows of the article files, in that order (only files that lose or swap rows)."""
    tables: dict[int, pa.Table] = {}
    runs: list[tuple[int, list[int]]] = []  # (file, local rows), consecutive rows of one file together
    for row in rows:
        i = int(np.searchsorted(offsets, row, side="right") - 1)
        if not runs or runs[-1][0] != i:
            runs.append((i, []))
        runs[-1][1].append(row - int(offsets[i]))
    parts = []
    for i, local in runs:
        if i not in tables:
            tables[i] = _read_columns(files[i], list(contracts.ARTICLES_SCHEMA.names))
        parts.append(tables[i].take(pa.array(local, pa.int64())))
    return pa.concat_tables(parts).combine_chunks().cast(contracts.ARTICLES_SCHEMA)


def chunk_shard_work_dir(articles_file: str, source: SourceInfo, config: BuildConfig) -> Path:
    from lvm_core.data.embedding import encoder_casefolds

    casefold = encoder_casefolds(config.encoder)
    parts = [str(articles_file), config.min_words, config.max_words, wiki_language(source.snapshot_id)]
    key = step_key("chunk", *parts, *([] if casefold else ["cased"]))
    return work_dir(config.resolved_data_dir(), "chunk", key)


def chunk_shard_step(
    articles_file: str, source: SourceInfo, config: BuildConfig, out_dir: Path, on_progress: Progress | None = None
) -> dict[str, Any]:
    """Split one article file into chunks (never across paragraphs or articles) → chunks.parquet."""
    from lvm_core.data import chunking
    from lvm_core.data import embedding
    from lvm_core.data import ingest

    out_dir = Path(out_dir)
    done = _done_record(out_dir)
    if done is not None:
        return done
    t0 = time.perf_counter()
    cfg = chunking.ChunkingConfig(
        min_words=config.min_words, max_words=config.max_words, language=wiki_language(source.snapshot_id),
        casefold=embedding.encoder_casefolds(config.encoder),
    )
    parquet = _open_shard_file(Path(articles_file))
    out = out_dir / contracts.CHUNKS_FILE
    n_articles = n_chunks = 0
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, contracts.CHUNKS_SCHEMA) as writer:
        try:
            for batch in parquet.iter_batches(batch_size=256, columns=["article_id", "title", "text"]):
                ids, titles, texts = (batch.column(i).to_pylist() for i in range(3))
                table = chunking.chunk_articles(
                    (ingest.Article(a, t, x) for a, t, x in zip(ids, titles, texts, strict=True)), cfg
                )
                writer.write_table(table.cast(contracts.CHUNKS_SCHEMA))
                n_articles += batch.num_rows
                n_chunks += table.num_rows
                if on_progress is not None:
                    on_progress(batch.num_rows)
        except (pa.ArrowException, OSError) as exc:
            from lvm_core.data.ingest.shards import ShardError

            raise ShardError(f"{articles_file}: corrupt shard file ({' '.join(str(exc).split())[:200]})") from None
        crash_point("chunk")  # chunks made, the file not yet renamed into place
    return _finish(out_dir, {
        "file": str(out), "files": [str(out)], "articles": n_articles, "chunks": n_chunks,
        "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 3),
    })


def _open_shard_file(path: Path) -> pq.ParquetFile:
    from lvm_core.data.ingest.shards import ShardError

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable shard file ({' '.join(str(exc).split())[:200]})") from None


def embed_shard_work_dir(chunks_file: str, config: BuildConfig) -> Path:
    key = step_key("embed", "shard", str(chunks_file), config.encoder or "default")
    return work_dir(config.resolved_data_dir(), "embed", key)


def embed_shard_step(
    chunks_file: str, config: BuildConfig, out_dir: Path, data_dir: Path, on_progress: Progress | None = None
) -> dict[str, Any]:
    """Embed one chunk file through the shared (fingerprint, text_hash) cache → float32 embeddings.npy.

    A finished shard is not redone: it reports all its chunks as reused. `on_progress` is told of every
    distinct text found in the cache or newly encoded.
    """
    from lvm_core.data import embedding

    out_dir = Path(out_dir)
    done = _done_record(out_dir)
    if done is not None:
        n = done["chunks"]
        return {**done, "stats": {**done["stats"], "n_reused": n, "n_encoded": 0, "n_unique": n}}
    chunks = _read_columns(Path(chunks_file), ["text", "text_hash"])
    texts = chunks.column("text").to_pylist()
    hashes = chunks.column("text_hash").to_pylist()
    encoder = embedding.load_encoder(config.encoder, cache_dir=encoder_cache_dir(data_dir))
    _check_hash_casing(texts, hashes, encoder.fingerprint.casefold, Path(chunks_file))
    if texts:
        cache = _ReportingCache(contracts.embedding_cache_dir(data_dir), encoder.fingerprint, on_progress)
        try:
            vectors, stats = embedding.embed_texts(texts, hashes, encoder, cache, batch_size=config.batch_size)
        finally:
            cache.close()
        stats_dict = {k: (float(v) if isinstance(v, float) else v) for k, v in vars(stats).items()}
    else:  # an article file whose articles gave no chunk
        vectors = np.zeros((0, encoder.fingerprint.dim), dtype=np.float32)
        stats_dict = _sum_embed_stats([])
    save_embeddings(out_dir, vectors, encoder.fingerprint)
    return _finish(out_dir, {
        "file": str(out_dir / contracts.EMBEDDINGS_FILE), "encoder_file": str(out_dir / contracts.ENCODER_FILE),
        "files": [str(out_dir / contracts.EMBEDDINGS_FILE)], "chunks": len(texts),
        "bytes": (out_dir / contracts.EMBEDDINGS_FILE).stat().st_size, "stats": stats_dict,
    })


class _ReportingCache(EmbeddingCache):
    """The embedding cache, telling `on_progress` how many texts each lookup found and each store added."""

    def __init__(self, root: Path, fingerprint: Any, on_progress: Progress | None) -> None:
        super().__init__(root, fingerprint)
        self._on_progress = on_progress

    def get_many(self, hashes: Any) -> Any:
        vectors, found = super().get_many(hashes)
        if self._on_progress is not None:
            self._on_progress(int(np.count_nonzero(found)))
        return vectors, found

    def put_many(self, hashes: Any, vectors: Any) -> Any:
        out = super().put_many(hashes, vectors)
        if self._on_progress is not None:
            self._on_progress(len(hashes))
        return out


def assemble_work_dir(
    articles: dict[str, Any], chunked: list[dict[str, Any]], embedded: list[dict[str, Any]], config: BuildConfig
) -> Path:
    parts = [articles["files"], [c["file"] for c in chunked], [e["file"] for e in embedded], config.vector_dtype]
    return work_dir(config.resolved_data_dir(), "assemble", step_key("assemble", *parts))


def assemble_step(
    articles: dict[str, Any], chunked: list[dict[str, Any]], embedded: list[dict[str, Any]],
    config: BuildConfig, out_dir: Path,
) -> tuple[Path, Path, EmbedResult]:
    """One articles.parquet, chunks.parquet and embeddings.npy from the shards, in shard order.

    Parquet is joined batch by batch; vectors are copied block by block into a memory-mapped
    embeddings.npy, so memory stays bounded whatever the snapshot.
    """
    from lvm_core.data.ingest import shards
    from lvm_core.data.embedding import EncoderFingerprint
    from lvm_core.data.vector_files import (
        VALIDATE_BLOCK_ROWS,
        iter_row_blocks,
        validate_embeddings,
    )

    out_dir = Path(out_dir)
    paths = (out_dir / contracts.ARTICLES_FILE, out_dir / contracts.CHUNKS_FILE)
    emb_path, enc_path = out_dir / contracts.EMBEDDINGS_FILE, out_dir / contracts.ENCODER_FILE
    stats = _sum_embed_stats([e["stats"] for e in embedded])
    done = _done_record(out_dir)
    if done is None:
        n_chunks = sum(int(c["chunks"]) for c in chunked)
        if n_chunks == 0:
            raise DataContractError(f"{source_name(config)}: no chunks produced (all articles empty?)")
        fingerprints = [read_json(Path(e["encoder_file"])) for e in embedded]
        fp_dict = {k: v for k, v in fingerprints[0].items() if k != contracts.VECTOR_DTYPE_KEY}
        for e, other in zip(embedded, fingerprints):
            if {k: v for k, v in other.items() if k != contracts.VECTOR_DTYPE_KEY} != fp_dict:
                raise DataContractError(f"{e['file']}: made by another encoder than {embedded[0]['file']}")
        fp = EncoderFingerprint.from_dict(fp_dict)
        shards.concat_parquet(articles["files"], paths[0], contracts.ARTICLES_SCHEMA)
        shards.concat_parquet([c["file"] for c in chunked], paths[1], contracts.CHUNKS_SCHEMA)
        with atomic_path(emb_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(config.vector_dtype), shape=(n_chunks, fp.dim))
            row = 0
            for e in embedded:
                part = load_npy(Path(e["file"]))
                if part.shape[0] != int(e["chunks"]) or part.shape[1] != fp.dim:
                    raise DataContractError(f"{e['file']}: {part.shape} vectors for {e['chunks']} chunks of dim {fp.dim}")
                for a, b in iter_row_blocks(part.shape[0], VALIDATE_BLOCK_ROWS):
                    out[row + a:row + b] = part[a:b]
                row += part.shape[0]
            out.flush()
            validate_embeddings(out, fp, str(emb_path))
            del out
        write_json(enc_path, {**fp.to_dict(), contracts.VECTOR_DTYPE_KEY: config.vector_dtype})
        _finish(out_dir, {"files": [str(p) for p in (*paths, emb_path, enc_path)], "chunks": n_chunks})
    return paths[0], paths[1], EmbedResult(emb_path, enc_path, stats)


def source_name(config: BuildConfig) -> str:
    return Path(str(config.source)).name


def _sum_embed_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One build's embedding numbers from its shards' (chunks/s over the encoded chunks only)."""
    keys = ("n_total", "n_unique", "n_reused", "n_encoded")
    out: dict[str, Any] = {k: int(sum(int(p.get(k) or 0) for p in parts)) for k in keys}
    seconds = float(sum(float(p.get("seconds_encoding") or 0.0) for p in parts))
    out["seconds_encoding"] = seconds
    out["chunks_per_second"] = out["n_encoded"] / seconds if seconds > 0 else 0.0
    # a non-reference backend's agreement with fp32 (one check per export, the same in every shard)
    agreement = next((p["agreement"] for p in parts if p.get("agreement")), None)
    if agreement is not None:
        out["agreement"] = agreement
    return out


def shard_layout(
    plan: list[Any], ingested: list[dict[str, Any]], articles: dict[str, Any],
    chunked: list[dict[str, Any]], embedded: list[dict[str, Any]],
) -> dict[str, Any]:
    """How the build was cut (manifest `shards`): shards per stage with their counts and bytes."""

    def stage(records: list[dict[str, Any]], count: str) -> dict[str, Any]:
        return {"n": len(records), count: int(sum(int(r.get(count) or 0) for r in records)),
                "bytes": int(sum(int(r.get("bytes") or 0) for r in records)),
                "reused": int(sum(1 for r in records if r.get("reused"))),
                "per_shard": [int(r.get(count) or 0) for r in records]}

    return {
        "n": len(plan),
        "source": {"n": len(plan), "kind": plan[0].kind if plan else None,
                   "bytes": int(sum(s.stop - s.start for s in plan))},
        "ingest": stage(ingested, "articles"),
        "articles": {"n": len(articles["files"]), "articles": int(articles["articles"]), "read": int(articles["read"])},
        "chunk": stage(chunked, "chunks"),
        "embed": stage(embedded, "chunks"),
    }


def analyse_step(
    stage_dir: Path,
    config: BuildConfig,
    source: SourceInfo,
    articles_path: Path,
    chunks_path: Path,
    embed: EmbedResult,
    ingest_stats: dict[str, Any] | None = None,
    shards: dict[str, Any] | None = None,
) -> DatasetManifest:
    """Assemble the staging folder and compute coherence, splits, leakage, sequences and the oracle.

    Returns the manifest (also written to the staging folder), without gate results. `ingest_stats`
    defaults to the file beside `articles_path`; `shards` (the layout of a sharded build) is recorded.
    """
    from lvm_core.data import coherence
    from lvm_core.data import leakage
    from lvm_core.data import windows as sequences
    from lvm_core.data import splits

    paths = DatasetPaths(Path(stage_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    for src, dst in [
        (articles_path, paths.articles),
        (chunks_path, paths.chunks),
        (embed.embeddings, paths.embeddings),
        (embed.encoder_file, paths.encoder),
    ]:
        link_or_copy(Path(src), dst)

    chunks = pq.read_table(paths.chunks, columns=["article_id", "chunk_index", "text_hash"])
    article_ids = chunks.column("article_id").to_numpy()
    chunk_index = chunks.column("chunk_index").to_numpy()
    text_hash = np.asarray(chunks.column("text_hash").to_pylist())
    vectors = load_npy(paths.embeddings)
    encoder = read_json(paths.encoder)
    if vectors.shape[0] != len(article_ids):
        raise DataContractError(
            f"{paths.embeddings}: {vectors.shape[0]} vectors for {len(article_ids)} chunks"
        )

    # coherence
    ctx = config.context_len
    coh = coherence.article_coherence(vectors, article_ids, chunk_index)
    coh_binned, edges = coherence.assign_bins(coh, n_bins=config.n_bins, min_chunks=ctx + 1)
    paths.plots.mkdir(exist_ok=True)
    coherence.plot_coherence_histogram(
        coh_binned, edges, paths.plots / "coherence_histogram.png", title=f"Article coherence — {source.dataset_id}"
    )

    # splits
    articles = pq.read_table(paths.articles, columns=["article_id", "title"])
    title_of = dict(zip(articles.column("article_id").to_pylist(), articles.column("title").to_pylist()))
    import polars as pl

    titles = pl.Series("title", [title_of.get(a, "") for a in coh_binned["article_id"].to_list()])
    split_cfg = splits.SplitConfig(
        mode=config.split_mode,
        fractions=tuple(config.fractions),
        seed=config.seed,
        ood_ranges=config.exclude_articles,
        val_ranges=config.val_articles,
        holdout_titles=config.holdout_titles,
    )
    split_df = splits.split_articles(coh_binned, split_cfg, titles=titles)
    write_parquet(paths.splits, splits.splits_table(split_df))
    split_manifest = splits.split_report(split_df, split_cfg)
    split_manifest["parity"] = _parity(split_manifest)

    split_of_article = dict(zip(split_df["article_id"].to_list(), split_df["split"].to_list()))
    row_split = np.array([split_of_article.get(int(a), "") for a in article_ids], dtype=object)

    # sequences, strictly inside articles
    seqs: dict[str, Any] = {}
    for name in contracts.SPLIT_NAMES:
        members = np.array([a for a, s in split_of_article.items() if s == name], dtype=np.int64)
        seqs[name] = sequences.build_windows(article_ids, chunk_index, context_len=ctx, articles=members)

    # leakage: raw over val/ood articles, then purge leaking val/ood windows and measure again
    scan = leakage.scan_leakage(
        article_ids, text_hash, vectors, row_split.astype(str), near_dup_threshold=config.near_dup_threshold
    )
    leakage_raw, leaking = scan.report(), scan.leaking_rows
    purged: dict[str, int] = {}
    windows_before = {name: len(seqs[name]) for name in _eval_split_names()}
    for name in contracts.EVAL_SPLITS:
        seqs[name], purged[name] = leakage.purge_leaking_windows(seqs[name], leaking)
    used_split = np.where(np.isin(row_split.astype(str), list(contracts.EVAL_SPLITS)), "", row_split.astype(str))
    for name in contracts.EVAL_SPLITS:
        rows = np.unique(np.concatenate([seqs[name].context_rows.ravel(), seqs[name].target_rows]))
        used_split[rows] = name
    # Train rows are unchanged, so each row's leak flags stand; only the val/ood rows still in use count.
    leakage_post = replace(scan, row_split=used_split.astype(str)).report()
    purged_fraction = {n: purged[n] / windows_before[n] if windows_before.get(n) else 0.0 for n in purged}
    # parity is gated on the articles that still have windows after the purge; the pre-purge one is kept beside it
    split_manifest["parity_before_purge"] = split_manifest["parity"]
    split_manifest["parity"] = _parity(splits.split_report(_articles_after_purge(split_df, seqs), split_cfg))
    write_json(paths.splits_manifest, split_manifest)

    crossing = int(sum(sequences.count_crossing_windows(s, article_ids, chunk_index) for s in seqs.values()))
    sequences.save_sequences(paths.sequences, seqs)
    crash_point("analyse")
    direction = sequences.data_direction(vectors, seqs["train"]) if len(seqs["train"]) else []

    # oracle recall: re-encode a seeded sample of eval target texts, search the stored bank with them
    eval_targets = np.concatenate([seqs[n].target_rows for n in _eval_split_names()])
    oracle = measure_oracle(paths.root, eval_targets, encoder_name=config.encoder, batch_size=config.batch_size)

    coh_values = coh["coherence"].drop_nulls().to_numpy()
    if ingest_stats is None:
        ingest_stats = read_ingest_stats(articles_path)
    record: dict[str, Any] = {
        "dataset_id": source.dataset_id,
        "snapshot_id": source.snapshot_id,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": source.to_dict(),
        "encoder": {
            "name": encoder["model_name"],
            "dim": int(encoder["dim"]),
            "fingerprint": _fingerprint_id(encoder),
            "weights_digest": encoder["weights_digest"],
            "normalized": encoder.get("normalized", True),
        },
        "build_config": config.model_dump(mode="json"),
        "counts": {
            "articles": int(articles.num_rows),
            "chunks": len(article_ids),
            "sequences": {k: len(v) for k, v in seqs.items()},
            "duplicate_ids": ingest_stats.get("duplicate_ids"),
            "duplicate_rows_dropped": ingest_stats.get("duplicate_rows_dropped"),
            "duplicate_ids_conflicting": ingest_stats.get("duplicate_ids_conflicting"),
        },
        "ingest": ingest_stats,
        "sequences": {k: len(v) for k, v in seqs.items()},
        "context_len": ctx,
        "coherence": {
            "mean": float(coh_values.mean()) if coh_values.size else None,
            "std": float(coh_values.std()) if coh_values.size else None,
            "n_articles": int(coh_values.size),
            "bin_edges": [float(e) for e in edges],
            "n_bins": max(len(edges) - 1, 0),
        },
        "splits": split_manifest,
        "leakage": leakage_post,
        "leakage_raw": leakage_raw,
        "purged_windows": purged,
        "windows_before_purge": windows_before,
        "purged_fraction": purged_fraction,
        "crossing_windows": crossing,
        "oracle_recall_at_5": oracle["recall"],
        "oracle": oracle,
        "data_direction": [float(x) for x in direction],
        "embedding": embed.stats,
    }
    if shards is not None:
        record["shards"] = shards
    manifest = parse_manifest(record, paths.manifest)
    write_manifest(paths.manifest, manifest)
    return manifest


def _parity(split_manifest: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """KS statistic and mean difference of article coherence, each evaluation split against train (gated)."""
    out = {}
    for name in contracts.EVAL_SPLITS:
        s = split_manifest.get("splits", {}).get(name, {})
        out[name] = {"ks": s.get("ks_statistic_vs_train"), "mean_diff": s.get("mean_diff_vs_train"),
                     "ks_pvalue": s.get("ks_pvalue_vs_train")}
    return out


def _eval_split_names() -> tuple[str, ...]:
    """The evaluation splits (every split but train) in contract order."""
    return tuple(s for s in contracts.SPLIT_NAMES if s != "train")


def _articles_after_purge(split_df: Any, seqs: dict[str, Any]) -> Any:
    """The split table without the evaluation articles that have no window left after the purge."""
    import polars as pl

    kept = {int(a) for name, s in seqs.items() if name != "train" for a in np.unique(s.article_ids)}
    return split_df.filter((pl.col("split") == "train") | pl.col("article_id").is_in(sorted(kept)))


def measure_oracle(
    root: Path,
    target_rows: np.ndarray,
    encoder_name: str | None = None,
    *,
    k: int | None = None,
    sample_size: int | None = None,
    seed: int | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Oracle Recall@K of a dataset folder (DESIGN "Oracle Recall@K").

    A seeded sample (`retrieval.oracle_sample`, >= 500 or all) of the distinct `target_rows` is re-encoded
    from its chunk *texts* with the dataset's own encoder (`encoder_name`, default the model named by
    ``encoder.json``; one whose fingerprint differs is refused) and searched in the bank of the stored
    vectors; a hit is the target row or a row with the same text hash in the top k. Vectors permuted
    against ``chunks.parquet`` score near 0. Only reads the folder.
    """
    from lvm_core.data import embedding
    from lvm_core.data import retrieval

    paths = DatasetPaths(Path(root))
    k = retrieval.ORACLE_K if k is None else int(k)
    sample_size = retrieval.ORACLE_SAMPLE_SIZE if sample_size is None else int(sample_size)
    seed = retrieval.ORACLE_SEED if seed is None else int(seed)
    try:
        stored = embedding.EncoderFingerprint.from_dict(read_json(paths.encoder))
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{paths.encoder}: {exc}") from exc
    encoder = embedding.load_encoder(encoder_name or stored)  # the stored fingerprint names its backend
    if encoder.fingerprint != stored:
        raise embedding.FingerprintMismatchError(
            f"{paths.root}: vectors were made by encoder {stored.model_name!r} (fingerprint {stored.id}), "
            f"but {encoder_name or stored.model_name!r} loads fingerprint {encoder.fingerprint.id}; "
            "the oracle needs the dataset's own encoder"
        )
    rows = retrieval.oracle_sample(target_rows, sample_size, seed)
    out: dict[str, Any] = {
        "k": k, "sample_size": int(rows.size), "seed": seed, "n_targets": int(np.unique(target_rows).size),
        "query": "re-encoded target texts", "encoder": stored.id, "hits": 0, "recall": 0.0,
    }
    if rows.size == 0:
        return out
    chunks = pq.read_table(paths.chunks, columns=["article_id", "text_hash", "text"])
    texts = chunks.column("text").take(pa.array(rows)).to_pylist()
    vectors = np.load(paths.embeddings, mmap_mode="r", allow_pickle=False)
    bank = retrieval.ChunkBank(
        vectors, chunks.column("article_id").to_numpy(), np.asarray(chunks.column("text_hash").to_pylist())
    )
    fresh = encoder.encode(texts, batch_size=batch_size)
    hits = retrieval.oracle_hits(bank, rows, k, target_vectors=fresh)
    out.update(hits=int(hits.sum()), recall=float(hits.mean()))
    return out


def _fingerprint_id(encoder: dict[str, Any]) -> str:
    from lvm_core.data.embedding import EncoderFingerprint

    return EncoderFingerprint.from_dict(encoder).id


def _sha1(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# --- publication ------------------------------------------------------------------------------------


STAGING_PREFIX = ".staging-"
# A staging folder's owner record is written once; from another host only its age can tell it is dead.
STAGING_STALE_AFTER_S = 24 * 3600


def new_staging_dir(data_dir: Path, dataset_id: str) -> Path:
    """A fresh staging folder owned by this process (so a later build can tell when it was abandoned)."""
    root = contracts.datasets_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage = root / f"{STAGING_PREFIX}{dataset_id}-{uuid.uuid4().hex[:8]}"
    claim_dir(stage, label=f"build of {dataset_id}")
    return stage


def clean_abandoned_builds(data_dir: Path) -> list[str]:
    """Remove staging folders of builds whose process is gone; finish or undo an interrupted publish.

    Returns what was done, one line each, for the build's log.
    """
    root = contracts.datasets_root(data_dir)
    if not root.is_dir():
        return []
    done = [f"restored {p}" for p in recover_interrupted_swaps(root)]
    stages = sorted(p for p in root.glob(f"{STAGING_PREFIX}*") if p.is_dir())
    for stage, why in abandoned_dirs(stages, stale_after=STAGING_STALE_AFTER_S):
        shutil.rmtree(stage, ignore_errors=True)
        done.append(f"removed abandoned staging folder {stage.name}: {why}")
    return done


def discard_staging(stage_dir: Path) -> None:
    """Remove this build's own staging folder after an error or a stop (never a published folder)."""
    stage_dir = Path(stage_dir)
    if stage_dir.name.startswith(STAGING_PREFIX):
        shutil.rmtree(stage_dir, ignore_errors=True)


def finalize_manifest(
    stage_dir: Path, manifest: DatasetManifest, gates: dict[str, Any], passed: bool, docs_path: str | None = None
) -> DatasetManifest:
    """Add gate results; the Data Docs link is stored relative to the dataset folder (it gets renamed)."""
    added: dict[str, Any] = {"gates": gates, "gates_passed": passed}
    if docs_path:
        try:
            added["gate_docs"] = str(Path(docs_path).relative_to(Path(stage_dir)))
        except ValueError:
            added["gate_docs"] = str(docs_path)
    manifest = manifest.with_fields(**added)
    manifest = manifest.with_fields(content_hash=content_hash(manifest, Path(stage_dir)))
    write_manifest(DatasetPaths(stage_dir).manifest, manifest)
    return manifest


# Manifest fields that say when, where or how fast a build ran, not what the dataset holds.
_RUN_ONLY_FIELDS = ("created_at", "embedding", "gate_docs", "content_hash", "shards")
# Build options that say how the work was cut into tasks; the data files hold what came of it.
_RUN_ONLY_OPTIONS = ("data_dir", "shard_bytes", "shard_articles")


def content_hash(manifest: DatasetManifest, root: Path) -> str:
    """Identity of a dataset: its data files and the manifest without run-only fields.

    Two builds of one snapshot with the same options have the same hash, whatever the data folder, the
    machine, the task runner, the shard sizes or how many crashes and resumes it took (vectors of
    differently cut shards agree bitwise when they come from one embedding cache).
    """
    paths = DatasetPaths(Path(root))
    body = {k: v for k, v in manifest.to_dict().items() if k not in _RUN_ONLY_FIELDS}
    body["source"] = {k: v for k, v in dict(body.get("source") or {}).items() if k != "path"}
    body["build_config"] = {k: v for k, v in dict(body.get("build_config") or {}).items() if k not in _RUN_ONLY_OPTIONS}
    files = [paths.articles, paths.chunks, paths.embeddings, paths.encoder, paths.splits, paths.sequences]
    return json_digest([body, {f.name: _data_digest(f) for f in files}])


def _data_digest(path: Path) -> str:
    """Digest of a data file's content; an .npz is hashed array by array (its zip entries carry timestamps)."""
    if path.suffix != ".npz":
        return file_digest(path)
    import hashlib

    with np.load(path, allow_pickle=False) as z:
        return json_digest({k: [str(z[k].dtype), list(z[k].shape), hashlib.sha256(z[k].tobytes()).hexdigest()]
                            for k in sorted(z.files)})


def publish(stage_dir: Path, data_dir: Path, dataset_id: str) -> Path:
    """Mark the staging folder READY and rename it onto the dataset folder."""
    stage = DatasetPaths(Path(stage_dir))
    stage.ready.write_text(_dt.datetime.now(_dt.UTC).isoformat() + "\n")
    crash_point("publish")
    target = contracts.dataset_dir(data_dir, dataset_id)
    replace_dir(stage.root, target)
    (target / OWNER_FILE).unlink(missing_ok=True)  # kept until here, so a dead publish's staging is cleaned
    return target


def set_aside_failed(stage_dir: Path, data_dir: Path, dataset_id: str) -> Path:
    """Keep a failed build (with its gate results) under datasets/_failed/ for inspection."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    target = contracts.datasets_root(data_dir) / "_failed" / f"{dataset_id}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    (Path(stage_dir) / OWNER_FILE).unlink(missing_ok=True)
    shutil.move(str(stage_dir), target)
    return target


# --- loading ---------------------------------------------------------------------------------------


class DatasetNotReadyError(RuntimeError):
    """The dataset folder is missing, incomplete or did not pass its gates."""


@dataclass
class Dataset:
    """A published dataset: chunk metadata, vectors (memory-mapped), sequences per split, manifest."""

    root: Path
    manifest: DatasetManifest
    vectors: np.ndarray
    fingerprint: Any  # lvm_core.data.embedding.EncoderFingerprint
    article_ids: np.ndarray
    chunk_index: np.ndarray
    text_hash: np.ndarray
    sequences: dict[str, Any]
    _texts: list[str] | None = field(default=None, repr=False)

    @property
    def paths(self) -> DatasetPaths:
        return DatasetPaths(self.root)

    @property
    def context_len(self) -> int:
        ctx = self.manifest.context_len
        return int(ctx if ctx is not None else self.sequences["train"].context_rows.shape[1])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = pq.read_table(self.paths.chunks, columns=["text"]).column("text").to_pylist()
        return self._texts

    def article_bins(self) -> dict[int, int]:
        split_df = pq.read_table(self.paths.splits, columns=["article_id", "coherence_bin"]).to_pylist()
        return {r["article_id"]: r["coherence_bin"] for r in split_df if r["coherence_bin"] is not None}


def load_dataset(root: Path, require_ready: bool = True) -> Dataset:
    """Open a dataset folder; refuses one that did not pass its gates unless `require_ready=False`."""
    from lvm_core.data import windows as sequences

    paths = DatasetPaths(Path(root))
    if not paths.root.is_dir():
        raise DatasetNotReadyError(f"{paths.root}: no such dataset folder")
    if not paths.manifest.exists():
        raise DatasetNotReadyError(f"{paths.root}: no manifest.json (not a built dataset)")
    if require_ready and not paths.ready.exists():
        raise DatasetNotReadyError(
            f"{paths.root}: dataset did not pass its gates (no READY marker); use --force to train anyway"
        )
    manifest = read_manifest(paths.manifest)  # DataContractError naming the file and field
    vectors, fingerprint = load_embeddings(paths.root)
    chunks = pq.read_table(paths.chunks, columns=["article_id", "chunk_index", "text_hash"])
    seqs = sequences.load_sequences(paths.sequences)
    return Dataset(
        root=paths.root,
        manifest=manifest,
        vectors=vectors,
        fingerprint=fingerprint,
        article_ids=chunks.column("article_id").to_numpy(),
        chunk_index=chunks.column("chunk_index").to_numpy(),
        text_hash=np.asarray(chunks.column("text_hash").to_pylist()),
        sequences=seqs,
    )


def list_datasets(data_dir: Path) -> list[dict[str, Any]]:
    """Published datasets with their headline numbers (for `lvm datasets`)."""
    rows = []
    root = contracts.datasets_root(data_dir)
    if not root.exists():
        return rows
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        paths = DatasetPaths(d)
        try:
            m = read_manifest(paths.manifest)
        except (OSError, ValueError):
            continue
        rows.append(
            {
                "dataset": d.name,
                "ready": paths.ready.exists(),
                "articles": m.counts.articles,
                "chunks": m.counts.chunks,
                "sequences": m.sequences,
                "created_at": m.created_at,
                "path": str(d),
            }
        )
    return rows
