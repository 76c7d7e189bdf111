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
from lvm_core.contracts.layout import EMBEDDINGS_FILE, ENCODER_FILE, embedding_cache_dir
from lvm_core.data.build.records import EmbeddedShard
from lvm_core.data.build.reuse import ReusePlan, check_fingerprint, previous_vectors
from lvm_core.data.build.work import (
    Progress,
    done_record,
    finish_shard,
    read_columns,
    step_key,
    work_dir,
)
from lvm_core.data.chunking import text_hash
from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.data.embedding.embed import embed_texts
from lvm_core.data.embedding.onnx import encoder_cache_dir
from lvm_core.data.embedding.pinned import PinnedEncoder, load_pinned, pin_encoder
from lvm_core.data.vector_files import save_embeddings
from lvm_core.io.storage import load_npy


def _check_hash_casing(texts: list[str], hashes: list[str], casefold: bool, chunks_path: Path, n: int = 256) -> None:
    """Refuse chunks hashed with another case normalisation than the encoder's (the cache is keyed by hash)."""
    for text, h in zip(texts[:n], hashes[:n]):
        if text_hash(text, casefold) != h:
            raise DataContractError(
                f"{chunks_path}: chunk text hashes were not made with this encoder's normalisation "
                f"({'case-folded' if casefold else 'cased'}); rebuild the chunks for this encoder"
            )


def embed_shard_work_dir(chunks_file: str, config: BuildConfig, pinned: PinnedEncoder | None = None) -> Path:
    """Keyed by the encoder's fingerprint (weights, backend), not its name: new weights are new work."""
    pinned = pinned or pin_encoder(config.encoder)
    key = step_key("embed", "shard", str(chunks_file), pinned.fingerprint.id)
    return work_dir(config.resolved_data_dir(), "embed", key)


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
    out_dir = Path(out_dir)
    done = None if config.cold else done_record(out_dir, EmbeddedShard)
    if done is not None:
        n = done.chunks - int(done.stats.get("n_copied") or 0)
        return replace(done, stats={**done.stats, "n_reused": n, "n_encoded": 0, "n_unique": n})
    encoder = load_pinned(pinned or pin_encoder(config.encoder), cache_dir=encoder_cache_dir(data_dir))
    chunks = read_columns(Path(chunks_file), ["text", "text_hash"])
    texts = chunks.column("text").to_pylist()
    hashes = chunks.column("text_hash").to_pylist()
    _check_hash_casing(texts, hashes, encoder.fingerprint.casefold, Path(chunks_file))
    if reuse is not None:
        check_fingerprint(reuse, encoder.fingerprint)
    rows = _previous_rows(reuse, previous_rows, len(texts))
    vectors = np.empty((len(texts), encoder.fingerprint.dim), dtype=np.float32)
    copied = np.flatnonzero(rows >= 0)
    if copied.size:
        assert reuse is not None
        vectors[copied] = previous_vectors(reuse, rows[copied], encoder.fingerprint.dim)
        if on_progress is not None:
            on_progress(int(copied.size))
    new = np.flatnonzero(rows < 0)
    if new.size:
        cache = _ReportingCache(embedding_cache_dir(data_dir), encoder.fingerprint, on_progress)
        try:
            vectors[new], stats = embed_texts([texts[i] for i in new], [hashes[i] for i in new], encoder, cache,
                                              batch_size=config.batch_size)
        finally:
            cache.close()
        stats_dict = {k: (float(v) if isinstance(v, float) else v) for k, v in vars(stats).items()}
    else:  # every chunk copied, or an article file whose articles gave no chunk
        stats_dict = sum_embed_stats([])
    stats_dict.update(n_total=len(texts), n_copied=int(copied.size))
    save_embeddings(out_dir, vectors, encoder.fingerprint)
    return finish_shard(out_dir, EmbeddedShard(
        file=str(out_dir / EMBEDDINGS_FILE), encoder_file=str(out_dir / ENCODER_FILE), chunks=len(texts),
        bytes=(out_dir / EMBEDDINGS_FILE).stat().st_size, stats=stats_dict,
    ))


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
