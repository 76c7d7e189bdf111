"""Embed step: one chunk file's vectors through the shared (fingerprint, text_hash) cache → embeddings.npy;
in an incremental build the vectors of unchanged articles are copied from the previous dataset instead.

Also the numbers a build reports for its embedding (`sum_embed_stats`, the sum over shards).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import (
    DEFAULT_VECTOR_DTYPE,
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    VECTOR_DTYPE_KEY,
    embedding_cache_dir,
)
from lvm_core.data.build.records import EmbeddedShard
from lvm_core.data.build.reuse import ReusePlan, check_fingerprint, local_reuse, previous_vectors
from lvm_core.data.build.work import (
    Progress,
    done_record,
    finish_shard,
    local_work_file,
    open_shard_file,
    step_key,
    work_dir,
    work_ref,
    work_store,
)
from lvm_core.data.chunking import text_hash
from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.data.embedding.embed import embed_texts
from lvm_core.data.embedding.onnx import encoder_cache_dir
from lvm_core.data.embedding.pinned import PinnedEncoder, load_pinned, pin_encoder
from lvm_core.data.vector_files import validate_embeddings
from lvm_core.io.storage import atomic_path, load_npy, write_json
from lvm_core.io.vectors import release_pages
from lvm_core.runtime.memory import return_freed_memory


def _check_hash_casing(texts: list[str], hashes: list[str], casefold: bool, chunks_path: Path, n: int = 256) -> None:
    """Refuse chunks hashed with another case normalisation than the encoder's (the cache is keyed by hash)."""
    for text, h in zip(texts[:n], hashes[:n]):
        if text_hash(text, casefold) != h:
            raise DataContractError(
                f"{chunks_path}: chunk text hashes were not made with this encoder's normalisation "
                f"({'case-folded' if casefold else 'cased'}); rebuild the chunks for this encoder"
            )


# Rows of a chunk file embedded at a time: ~25 MB of vectors and a few MB of text in memory; a multiple of
# the encoder's flush block (512), so a shard without repeats encodes in the same groups as one pass would.
EMBED_BLOCK_ROWS = 16_384


def embed_shard_work_dir(chunks_file: str, config: BuildConfig, pinned: PinnedEncoder | None = None) -> Path:
    """Keyed by the encoder's fingerprint (weights, backend), not its name: new weights are new work."""
    pinned = pinned or pin_encoder(config.encoder)
    key = step_key("embed", "shard", work_ref(chunks_file), pinned.fingerprint.id)
    return work_dir(config.work_data_dir(), "embed", key)


def embed_shard_step(
    chunks_file: str, config: BuildConfig, out_dir: Path, data_dir: Path, on_progress: Progress | None = None,
    pinned: PinnedEncoder | None = None, reuse: ReusePlan | None = None, previous_rows: str | None = None,
) -> EmbeddedShard:
    """Embed one chunk file through the shared (fingerprint, text_hash) cache → float32 embeddings.npy.

    With a reuse plan, the vectors of chunks copied from the previous dataset (`previous_rows` ≥ 0) are copied
    from its embeddings.npy (`n_copied`); only the others go through the cache and the encoder. A finished shard
    is not redone (unless `cold`): it reports its other chunks as reused. `on_progress` is told of every copied
    vector and every distinct text found in the cache or newly encoded. The encoder is the build's `pinned` one
    (default: `config.encoder` resolved here); a worker that cannot produce it fails before reading anything.
    """
    out_dir, store = Path(out_dir), work_store(config)
    done = None if config.cold else done_record(out_dir, EmbeddedShard, store)
    if done is not None:
        n = done.chunks - int(done.stats.get("n_copied") or 0)
        return replace(done, stats={**done.stats, "n_reused": n, "n_encoded": 0, "n_unique": n})
    chunks_file = str(local_work_file(chunks_file, config.work_data_dir(), store))  # maybe chunked elsewhere
    if previous_rows is not None:
        previous_rows = str(local_work_file(previous_rows, config.work_data_dir(), store))
    reuse = local_reuse(reuse, config, store)
    return_freed_memory()  # a shard's batches come and go: what is freed goes back to the OS, not to a pool
    encoder = load_pinned(pinned or pin_encoder(config.encoder), cache_dir=encoder_cache_dir(data_dir))
    if reuse is not None:
        check_fingerprint(reuse, encoder.fingerprint)
    parquet = open_shard_file(Path(chunks_file))
    n = int(parquet.metadata.num_rows)
    rows = _previous_rows(reuse, previous_rows, n)
    cache = (_ReportingCache(embedding_cache_dir(data_dir), encoder.fingerprint, on_progress)
             if (rows < 0).any() else None)
    try:
        parts = _embed_blocks(parquet, Path(chunks_file), rows, encoder, cache, reuse, config, out_dir, on_progress)
    finally:
        if cache is not None:
            cache.close()
    stats_dict = sum_embed_stats(parts)  # every chunk copied, or no chunk at all: zeros
    stats_dict.update(n_total=n, n_copied=int(np.count_nonzero(rows >= 0)))
    return finish_shard(out_dir, EmbeddedShard(
        file=str(out_dir / EMBEDDINGS_FILE), encoder_file=str(out_dir / ENCODER_FILE), chunks=n,
        bytes=(out_dir / EMBEDDINGS_FILE).stat().st_size, stats=stats_dict,
    ), store)


def _embed_blocks(
    parquet: Any, chunks_path: Path, rows: np.ndarray, encoder: Any, cache: EmbeddingCache | None,
    reuse: ReusePlan | None, config: BuildConfig, out_dir: Path, on_progress: Progress | None,
) -> list[dict[str, Any]]:
    """Vectors of the chunk file, `EMBED_BLOCK_ROWS` rows at a time, into a memory-mapped embeddings.npy.

    A shard holds up to `shard_articles` articles (~10^6 chunks at the default): read whole, its texts and
    vectors would be GBs in the process that runs it. Block by block, memory is one block of texts and
    vectors whatever the shard, and the written pages are released as they go. Returns each block's stats.
    """
    fp = encoder.fingerprint
    parts: list[dict[str, Any]] = []
    with atomic_path(out_dir / EMBEDDINGS_FILE) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows.shape[0], fp.dim))
        start = 0
        for batch in parquet.iter_batches(batch_size=EMBED_BLOCK_ROWS, columns=["text", "text_hash"]):
            texts, hashes = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            if start == 0:
                _check_hash_casing(texts, hashes, fp.casefold, chunks_path)
            end = start + len(texts)
            vectors, stats = _embed_block(texts, hashes, rows[start:end], encoder, cache, reuse, config, on_progress)
            validate_embeddings(vectors, fp, f"embeddings for {out_dir / EMBEDDINGS_FILE}")
            out[start:end] = vectors
            out.flush()
            release_pages(out, start, end)
            parts.append(stats)
            start = end
        del out
    write_json(out_dir / ENCODER_FILE, {**fp.to_dict(), VECTOR_DTYPE_KEY: DEFAULT_VECTOR_DTYPE})
    return parts


def _embed_block(
    texts: list[str], hashes: list[str], rows: np.ndarray, encoder: Any, cache: EmbeddingCache | None,
    reuse: ReusePlan | None, config: BuildConfig, on_progress: Progress | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One block's vectors: rows copied from the previous dataset (`rows` >= 0), the others through the cache
    and the encoder; and the block's stats (zeros when every row was copied)."""
    vectors = np.empty((len(texts), encoder.fingerprint.dim), dtype=np.float32)
    copied = np.flatnonzero(rows >= 0)
    if copied.size:
        assert reuse is not None
        vectors[copied] = previous_vectors(reuse, rows[copied], encoder.fingerprint.dim)
        if on_progress is not None:
            on_progress(int(copied.size))
    new = np.flatnonzero(rows < 0)
    if not new.size:
        return vectors, {}
    vectors[new], stats = embed_texts([texts[i] for i in new], [hashes[i] for i in new], encoder, cache,
                                      batch_size=config.batch_size)
    return vectors, {k: (float(v) if isinstance(v, float) else v) for k, v in vars(stats).items()}


def _previous_rows(reuse: ReusePlan | None, previous_rows: str | None, n: int) -> np.ndarray:
    """Each chunk's row in the previous dataset (-1: to embed here); all -1 without reuse or exact vectors."""
    if reuse is None or previous_rows is None or not reuse.copy_vectors:
        return np.full(n, -1, dtype=np.int64)
    rows = np.asarray(load_npy(Path(previous_rows), mmap=False), dtype=np.int64)
    if rows.shape != (n,):
        raise DataContractError(f"{previous_rows}: {rows.shape[0]} previous rows for {n} chunks")
    return rows


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


def sum_embed_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One build's embedding numbers from its shards' (chunks/s over the encoded chunks only)."""
    keys = ("n_total", "n_unique", "n_reused", "n_encoded", "n_copied")
    out: dict[str, Any] = {k: int(sum(int(p.get(k) or 0) for p in parts)) for k in keys}
    seconds = float(sum(float(p.get("seconds_encoding") or 0.0) for p in parts))
    out["seconds_encoding"] = seconds
    out["chunks_per_second"] = out["n_encoded"] / seconds if seconds > 0 else 0.0
    # a non-reference backend's agreement with fp32 (one check per export, the same in every shard)
    agreement = next((p["agreement"] for p in parts if p.get("agreement")), None)
    if agreement is not None:
        out["agreement"] = agreement
    return out
