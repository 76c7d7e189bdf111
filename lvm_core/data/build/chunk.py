"""Chunk step: one article file split into chunks (never across paragraphs or articles) → chunks.parquet."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import CHUNKS_FILE, CHUNKS_SCHEMA
from lvm_core.data import chunking
from lvm_core.data.build.records import ChunkedShard
from lvm_core.data.build.reuse import PreviousChunks, ReusePlan, chunk_batch, local_reuse
from lvm_core.data.build.source import SourceInfo, wiki_language
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
from lvm_core.data.embedding.encoder import parse_encoder_spec
from lvm_core.data.embedding.model_folder import encoder_casefolds
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.io.storage import atomic_path, write_npy
from lvm_core.runtime.faults import crash_point
from lvm_core.runtime.memory import return_freed_memory

PREVIOUS_ROWS_FILE = "previous_rows.npy"  # int64 per chunk row: its row in the previous dataset, -1 if chunked now


def _casefolds(config: BuildConfig) -> bool:
    """Whether chunk hashes case-fold, from the model of the spec ("<model>[@<backend>]"; the backend has no say)."""
    return encoder_casefolds(parse_encoder_spec(config.encoder)[0])


def chunk_shard_work_dir(
    articles_file: str, source: SourceInfo, config: BuildConfig, reuse: ReusePlan | None = None
) -> Path:
    casefold = _casefolds(config)
    parts = [work_ref(articles_file), config.min_words, config.max_words, wiki_language(source.snapshot_id)]
    # its rows are copied into the output; the embed key chains from this folder, so whether its vectors are too
    previous = [] if reuse is None else ["previous", reuse.content_hash, reuse.copy_vectors]
    key = step_key("chunk", *parts, *([] if casefold else ["cased"]), *previous)
    return work_dir(config.work_data_dir(), "chunk", key)


def chunk_shard_step(
    articles_file: str, source: SourceInfo, config: BuildConfig, out_dir: Path, on_progress: Progress | None = None,
    reuse: ReusePlan | None = None,
) -> ChunkedShard:
    """Split one article file into chunks (never across paragraphs or articles) → chunks.parquet.

    With a reuse plan, unchanged articles' rows are copied from the previous dataset (`reuse.chunk_batch`) and
    each row's previous row goes to previous_rows.npy, for the embed step. `cold` redoes a finished shard.
    """
    out_dir, store = Path(out_dir), work_store(config)
    done = None if config.cold else done_record(out_dir, ChunkedShard, store)
    if done is not None:
        return done
    articles_file = str(local_work_file(articles_file, config.work_data_dir(), store))  # maybe made elsewhere
    reuse = local_reuse(reuse, config, store)
    return_freed_memory()  # a shard's batches come and go: what is freed goes back to the OS, not to a pool
    t0 = time.perf_counter()
    cfg = chunking.ChunkingConfig(
        min_words=config.min_words, max_words=config.max_words, language=wiki_language(source.snapshot_id),
        casefold=_casefolds(config),
    )
    parquet = open_shard_file(Path(articles_file))
    previous = None if reuse is None else PreviousChunks(reuse, _article_ids(parquet, articles_file))
    out = out_dir / CHUNKS_FILE
    counts, rows = Counter[str](), []
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, CHUNKS_SCHEMA) as writer:
        try:
            for batch in parquet.iter_batches(batch_size=256, columns=["article_id", "text", *_digest(previous)]):
                digests = batch.column(2).to_pylist() if previous is not None else [""] * batch.num_rows
                articles = list(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), digests, strict=True))
                table, previous_rows, n_copied = chunk_batch(articles, cfg, previous)
                writer.write_table(table.cast(CHUNKS_SCHEMA))
                rows.append(previous_rows)
                counts.update(articles=batch.num_rows, chunks=table.num_rows, articles_reused=n_copied,
                              chunks_reused=int(np.count_nonzero(previous_rows >= 0)))
                if on_progress is not None:
                    on_progress(batch.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{articles_file}: corrupt shard file ({' '.join(str(exc).split())[:200]})") from None
        crash_point("chunk")  # chunks made, the file not yet renamed into place
    rows_file = None if reuse is None else out_dir / PREVIOUS_ROWS_FILE
    if rows_file is not None:
        write_npy(rows_file, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64))
    return finish_shard(out_dir, ChunkedShard(
        file=str(out), articles=counts["articles"], chunks=counts["chunks"], bytes=out.stat().st_size,
        seconds=round(time.perf_counter() - t0, 3), previous_rows=None if rows_file is None else str(rows_file),
        articles_reused=counts["articles_reused"], chunks_reused=counts["chunks_reused"],
    ), store)


def _digest(previous: PreviousChunks | None) -> list[str]:
    """The text digest column, read only to compare with the previous dataset's."""
    return [] if previous is None else ["text_sha1"]


def _article_ids(parquet: pq.ParquetFile, articles_file: str) -> list[int]:
    """The ids of a shard's articles (one column: bounded by the shard)."""
    try:
        return [int(a) for a in parquet.read(columns=["article_id"]).column("article_id").to_pylist()]
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{articles_file}: corrupt shard file ({' '.join(str(exc).split())[:200]})") from None
