"""Assemble step: the shards' articles, chunks and vectors joined into one file each, in shard order.

Also the shard layout a sharded build records in its manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import (
    ARTICLES_FILE,
    ARTICLES_SCHEMA,
    CHUNKS_FILE,
    CHUNKS_SCHEMA,
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    VECTOR_DTYPE_KEY,
)
from lvm_core.contracts.manifest import ShardLayout, ShardStage
from lvm_core.data.build.embed import sum_embed_stats
from lvm_core.data.build.records import (
    AssembledFiles,
    ChunkedShard,
    EmbeddedShard,
    EmbedResult,
    IngestedShard,
    KeptArticles,
)
from lvm_core.data.build.source import source_name
from lvm_core.data.build.work import done_record, finish_shard, local_record, step_key, work_dir, work_ref, work_store
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.ingest.shards.files import concat_parquet
from lvm_core.data.vector_files import iter_row_blocks, validate_embeddings
from lvm_core.io.storage import atomic_path, load_npy, read_json, write_json
from lvm_core.io.vectors import release_pages
from lvm_core.runtime.memory import return_freed_memory

#: Vector rows copied and checked at a time (16,384 x 384 float32 = 24 MiB): a 64k-row block held ~340 MiB
#: at once (its float32 copy, the checks' temporaries and the mapped pages of both files).
_COPY_BLOCK_ROWS = 16_384


def assemble_work_dir(
    articles: KeptArticles, chunked: list[ChunkedShard], embedded: list[EmbeddedShard], config: BuildConfig
) -> Path:
    parts = [[work_ref(f) for f in articles.files], [work_ref(c.file) for c in chunked],
             [work_ref(e.file) for e in embedded], config.vector_dtype]
    return work_dir(config.work_data_dir(), "assemble", step_key("assemble", *parts))


def assemble_step(
    articles: KeptArticles, chunked: list[ChunkedShard], embedded: list[EmbeddedShard],
    config: BuildConfig, out_dir: Path,
) -> tuple[Path, Path, EmbedResult]:
    """One articles.parquet, chunks.parquet and embeddings.npy from the shards, in shard order.

    Parquet is joined batch by batch; vectors are copied block by block into a memory-mapped
    embeddings.npy, so memory stays bounded whatever the snapshot.
    """
    return_freed_memory()  # the coordinator's steps from here on free what they read as they go
    out_dir = Path(out_dir)
    paths = (out_dir / ARTICLES_FILE, out_dir / CHUNKS_FILE)
    emb_path, enc_path = out_dir / EMBEDDINGS_FILE, out_dir / ENCODER_FILE
    stats = sum_embed_stats([e.stats for e in embedded])
    done = None if config.cold else done_record(out_dir, AssembledFiles)  # cold: nothing reused from work/
    if done is None:
        # the shards' files as this machine's, fetched from the work store where another machine made them
        store, here = work_store(config), config.work_data_dir()
        articles = local_record(articles, here, store)
        chunked = [local_record(c, here, store) for c in chunked]
        embedded = [local_record(e, here, store) for e in embedded]
        n_chunks = sum(int(c.chunks) for c in chunked)
        if n_chunks == 0:
            raise DataContractError(f"{source_name(config)}: no chunks produced (all articles empty?)")
        fingerprints = [read_json(Path(e.encoder_file)) for e in embedded]
        fp_dict = {k: v for k, v in fingerprints[0].items() if k != VECTOR_DTYPE_KEY}
        for e, other in zip(embedded, fingerprints):
            if {k: v for k, v in other.items() if k != VECTOR_DTYPE_KEY} != fp_dict:
                raise DataContractError(f"{e.file}: made by another encoder than {embedded[0].file}")
        fp = EncoderFingerprint.from_dict(fp_dict)
        concat_parquet(list(articles.files), paths[0], ARTICLES_SCHEMA)
        concat_parquet([c.file for c in chunked], paths[1], CHUNKS_SCHEMA)
        with atomic_path(emb_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(config.vector_dtype), shape=(n_chunks, fp.dim))
            row = 0
            for e in embedded:
                part = load_npy(Path(e.file))
                if part.shape[0] != int(e.chunks) or part.shape[1] != fp.dim:
                    raise DataContractError(f"{e.file}: {part.shape} vectors for {e.chunks} chunks of dim {fp.dim}")
                for a, b in iter_row_blocks(part.shape[0], _COPY_BLOCK_ROWS):
                    out[row + a:row + b] = part[a:b]
                    out.flush()  # the pages of both maps stay in the page cache, not in this process's RSS
                    release_pages(out, row + a, row + b)
                    release_pages(part, a, b)
                row += part.shape[0]
            out.flush()
            validate_embeddings(out, fp, str(emb_path), block=_COPY_BLOCK_ROWS)
            del out
        write_json(enc_path, {**fp.to_dict(), VECTOR_DTYPE_KEY: config.vector_dtype})
        finish_shard(out_dir, AssembledFiles(files=tuple(str(p) for p in (*paths, emb_path, enc_path)), chunks=n_chunks))
    return paths[0], paths[1], EmbedResult(emb_path, enc_path, stats)


def shard_layout(
    plan: list[Any], ingested: list[IngestedShard], articles: KeptArticles,
    chunked: list[ChunkedShard], embedded: list[EmbeddedShard],
) -> ShardLayout:
    """How the build was cut (manifest `shards`): shards per stage with their counts and bytes."""
    return ShardLayout(
        n=len(plan),
        source=ShardStage(n=len(plan), kind=plan[0].kind if plan else None,
                          bytes=int(sum(s.stop - s.start for s in plan))),
        ingest=_stage(ingested, "articles"),
        articles=ShardStage(n=len(articles.files), articles=int(articles.articles), read=int(articles.read)),
        chunk=_stage(chunked, "chunks"),
        embed=_stage(embedded, "chunks"),
    )


def _stage(records: Sequence[IngestedShard | ChunkedShard | EmbeddedShard], count: str) -> ShardStage:
    """One stage's parts: how many, what they hold in all (`count`: articles or chunks), bytes, reused parts."""
    per_shard = [int(getattr(r, count) or 0) for r in records]
    return ShardStage.model_validate({
        "n": len(records), count: int(sum(per_shard)), "bytes": int(sum(int(r.bytes or 0) for r in records)),
        "reused": int(sum(1 for r in records if r.reused)), "per_shard": per_shard,
    })
