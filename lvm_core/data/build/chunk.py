"""Chunk step: one article file split into chunks (never across paragraphs or articles) → chunks.parquet."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import CHUNKS_FILE, CHUNKS_SCHEMA
from lvm_core.data import chunking
from lvm_core.data.build.records import ChunkedShard
from lvm_core.data.build.source import SourceInfo, wiki_language
from lvm_core.data.build.work import (
    Progress,
    done_record,
    finish_shard,
    open_shard_file,
    step_key,
    work_dir,
)
from lvm_core.data.embedding.encoder import parse_encoder_spec
from lvm_core.data.embedding.model_folder import encoder_casefolds
from lvm_core.data.ingest.base import Article
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.io.storage import atomic_path
from lvm_core.runtime.faults import crash_point


def _casefolds(config: BuildConfig) -> bool:
    """Whether chunk hashes case-fold, from the model of the spec ("<model>[@<backend>]"; the backend has no say)."""
    return encoder_casefolds(parse_encoder_spec(config.encoder)[0])


def chunk_shard_work_dir(articles_file: str, source: SourceInfo, config: BuildConfig) -> Path:
    casefold = _casefolds(config)
    parts = [str(articles_file), config.min_words, config.max_words, wiki_language(source.snapshot_id)]
    key = step_key("chunk", *parts, *([] if casefold else ["cased"]))
    return work_dir(config.resolved_data_dir(), "chunk", key)


def chunk_shard_step(
    articles_file: str, source: SourceInfo, config: BuildConfig, out_dir: Path, on_progress: Progress | None = None
) -> ChunkedShard:
    """Split one article file into chunks (never across paragraphs or articles) → chunks.parquet."""
    out_dir = Path(out_dir)
    done = done_record(out_dir, ChunkedShard)
    if done is not None:
        return done
    t0 = time.perf_counter()
    cfg = chunking.ChunkingConfig(
        min_words=config.min_words, max_words=config.max_words, language=wiki_language(source.snapshot_id),
        casefold=_casefolds(config),
    )
    parquet = open_shard_file(Path(articles_file))
    out = out_dir / CHUNKS_FILE
    n_articles = n_chunks = 0
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, CHUNKS_SCHEMA) as writer:
        try:
            for batch in parquet.iter_batches(batch_size=256, columns=["article_id", "title", "text"]):
                ids, titles, texts = (batch.column(i).to_pylist() for i in range(3))
                table = chunking.chunk_articles(
                    (Article(a, t, x) for a, t, x in zip(ids, titles, texts, strict=True)), cfg
                )
                writer.write_table(table.cast(CHUNKS_SCHEMA))
                n_articles += batch.num_rows
                n_chunks += table.num_rows
                if on_progress is not None:
                    on_progress(batch.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise ShardError(f"{articles_file}: corrupt shard file ({' '.join(str(exc).split())[:200]})") from None
        crash_point("chunk")  # chunks made, the file not yet renamed into place
    return finish_shard(out_dir, ChunkedShard(
        file=str(out), articles=n_articles, chunks=n_chunks, bytes=out.stat().st_size,
        seconds=round(time.perf_counter() - t0, 3),
    ))
