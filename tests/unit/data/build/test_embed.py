"""The embed step's statistics summed over shards."""

from __future__ import annotations

import pytest


def test_embed_stats_of_shards_sum_and_keep_the_encoders_agreement():
    from lvm_core.data.build.embed import sum_embed_stats

    agreement = {"mean": 0.9945, "median": 0.9947, "min": 0.9896, "n": 256}
    parts = [
        {"n_total": 10, "n_unique": 9, "n_reused": 4, "n_encoded": 5, "seconds_encoding": 1.0, "agreement": agreement},
        {"n_total": 6, "n_unique": 6, "n_reused": 1, "n_encoded": 5, "seconds_encoding": 1.5, "agreement": agreement},
    ]
    out = sum_embed_stats(parts)
    assert (out["n_total"], out["n_unique"], out["n_reused"], out["n_encoded"]) == (16, 15, 5, 10)
    assert out["chunks_per_second"] == pytest.approx(4.0) and out["agreement"] == agreement
    assert "agreement" not in sum_embed_stats([{k: v for k, v in parts[0].items() if k != "agreement"}])


def test_a_shard_embedded_block_by_block_equals_one_pass_and_counts_every_chunk(tmp_path, monkeypatch):
    """A shard is read, embedded and written a block at a time (memory bounded by a block, not by the shard):
    the vectors, their order and the counts are those of embedding it in one block."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lvm_core.contracts.build_options import BuildConfig
    from lvm_core.contracts.layout import CHUNKS_SCHEMA
    from lvm_core.data.build import embed
    from lvm_core.data.chunking import text_hash

    texts = [f"chunk {i % 37} of a shard" for i in range(100)]  # repeats inside and across blocks
    chunks = tmp_path / "chunks.parquet"
    pq.write_table(pa.Table.from_pydict({
        "chunk_id": [str(i) for i in range(100)], "article_id": [i // 10 for i in range(100)],
        "chunk_index": [i % 10 for i in range(100)], "text": texts, "text_hash": [text_hash(t, True) for t in texts],
        "n_words": [4] * 100}, schema=CHUNKS_SCHEMA), chunks)
    config = BuildConfig(encoder="hash-test", data_dir=str(tmp_path / "data"))

    def run(block: int, name: str):
        monkeypatch.setattr(embed, "EMBED_BLOCK_ROWS", block)
        record = embed.embed_shard_step(str(chunks), config, tmp_path / name, tmp_path / name / "data")
        return np.load(record.file), record

    whole, one = run(1024, "one")
    blocks, many = run(16, "blocks")
    assert blocks.shape == (100, 384) and np.array_equal(blocks, whole)
    assert many.chunks == one.chunks == 100 and many.stats["n_total"] == 100
    assert many.stats["n_encoded"] + many.stats["n_reused"] == many.stats["n_unique"]  # distinct per block
