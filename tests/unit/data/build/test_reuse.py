"""Per-article reuse on the sample's real articles: copied chunk rows equal chunking again, row for row; the
article index finds unchanged texts only; another chunker or encoder is refused in one line naming --cold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import ARTICLES_SCHEMA, CHUNKS_SCHEMA, DatasetPaths
from lvm_core.data.chunking import ChunkingConfig, chunk_articles
from lvm_core.data.ingest.base import Article
from lvm_core.data.ingest.shards.files import text_sha1
from tests.fixtures.month_articles import edited, sample_articles

CHUNKER = ChunkingConfig(min_words=40, max_words=120)


def _published(root: Path, articles: list[Article], snapshot_id: str = "enwiki-20260101",
               min_words: int = 40, vectors: bool = True) -> Path:
    """A published dataset folder of `articles` (chunk rows in row groups of 7, so reads cross groups)."""
    paths = DatasetPaths(root)
    root.mkdir(parents=True)
    pq.write_table(pa.table({
        "article_id": [a.article_id for a in articles], "title": [a.title for a in articles],
        "text": [a.text for a in articles], "snapshot_id": [snapshot_id] * len(articles),
        "text_sha1": [text_sha1(a.text) for a in articles], "source_sha1": [None] * len(articles)},
        schema=ARTICLES_SCHEMA), paths.articles)
    chunks = chunk_articles(articles, CHUNKER)
    pq.write_table(chunks, paths.chunks, row_group_size=7)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(chunks.num_rows, 8)).astype(np.float32)
    np.save(paths.embeddings, v / np.linalg.norm(v, axis=1, keepdims=True))
    fp = {"model_name": "m", "weights_digest": "w", "dim": 8, "normalized": True}
    from lvm_core.data.embedding.fingerprint import EncoderFingerprint

    paths.encoder.write_text(json.dumps({**EncoderFingerprint.from_dict(fp).to_dict(), "vector_dtype": "float32"}))
    paths.manifest.write_text(json.dumps({
        "dataset_id": snapshot_id, "snapshot_id": snapshot_id, "created_at": "2026-01-02T00:00:00",
        "content_hash": "c" * 64, "build_config": {"min_words": min_words, "max_words": 120}}))
    paths.ready.write_text("now\n")
    return root


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    return sample_articles(6)


def test_copied_rows_equal_chunking_again(tmp_path: Path, articles: list[Article]):
    from lvm_core.data.build.reuse import PreviousChunks, ReusePlan, build_article_index, chunk_batch

    prev = _published(tmp_path / "prev", articles)
    index = build_article_index(prev, tmp_path / "index.parquet")
    assert pq.read_table(index).column("article_id").to_pylist() == sorted(a.article_id for a in articles)
    month2 = [Article(a.article_id, a.title, edited(a.text) if i == 1 else a.text) for i, a in enumerate(articles)
              if i != 3] + [Article(10**9, "New", articles[3].text)]  # an edit, a removal, a new id
    plan = ReusePlan(str(prev), "prev", "c" * 64, str(index), "fp", True)
    previous = PreviousChunks(plan, [a.article_id for a in month2])
    rows = [(a.article_id, a.text, text_sha1(a.text)) for a in month2]
    table, prev_rows, n_copied = chunk_batch(rows, CHUNKER, previous)
    expected = chunk_articles(month2, CHUNKER)
    assert table.cast(CHUNKS_SCHEMA).equals(expected)
    assert n_copied == 4  # not the edited one, not the new id (same text, other article)
    old = pq.read_table(DatasetPaths(prev).chunks)
    copied = prev_rows >= 0
    assert old.take(pa.array(prev_rows[copied])).column("chunk_id").equals(
        table.filter(pa.array(copied)).column("chunk_id"))
    ids = np.asarray(table.column("article_id").to_pylist())
    assert not copied[np.isin(ids, [articles[1].article_id, 10**9])].any()


def test_another_chunker_is_refused_in_one_line(tmp_path: Path, articles: list[Article]):
    from lvm_core.data.build.reuse import ReuseRefusedError, plan_reuse
    from lvm_core.data.build.source import SourceInfo

    data_dir = tmp_path / "data"
    prev = _published(data_dir / "datasets" / "enwiki-20260101", articles, min_words=60)
    source = SourceInfo(path=tmp_path / "x.jsonl", snapshot_id="enwiki-20260201", digest="d", dataset_id="enwiki-20260201")
    config = BuildConfig(data_dir=str(data_dir))
    with pytest.raises(ReuseRefusedError) as refused:
        plan_reuse(config, source)
    message = str(refused.value)
    assert "\n" not in message and "--cold" in message and "min_words 60" in message and str(prev) in message
    assert plan_reuse(config.model_copy(update={"cold": True}), source) is None
    plan = plan_reuse(config.model_copy(update={"min_words": 60}), source)
    assert plan is not None and plan.previous == str(prev) and Path(plan.index).exists()


def test_another_encoder_is_refused_and_vectors_are_read_by_row(tmp_path: Path, articles: list[Article]):
    from lvm_core.data.build.reuse import ReusePlan, ReuseRefusedError, check_fingerprint, previous_vectors
    from lvm_core.data.embedding.fingerprint import EncoderFingerprint

    prev = _published(tmp_path / "prev", articles)
    fp = EncoderFingerprint.from_dict(json.loads(DatasetPaths(prev).encoder.read_text()))
    plan = ReusePlan(str(prev), "prev", "c" * 64, "", fp.id, True)
    check_fingerprint(plan, fp)
    other = EncoderFingerprint("m", "other-weights", 8)
    with pytest.raises(ReuseRefusedError, match="--cold"):
        check_fingerprint(plan, other)
    rows = np.array([5, 0, 3, 3])
    got = previous_vectors(plan, rows, 8)
    assert np.array_equal(got, np.load(DatasetPaths(prev).embeddings)[rows])
