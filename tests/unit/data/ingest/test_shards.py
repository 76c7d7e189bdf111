"""Sharded streaming ingest: shard plans, shard reads equal to whole reads, bounded files, chunking, errors.

The multistream dump is written here from the embedded sample (bench/make_scaled_dump.py): 2 copies of
its first 80 pages, 10 pages per bz2 stream.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import pickle
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.layout import ARTICLES_SCHEMA, CHUNKS_SCHEMA
from lvm_core.data import chunking
from lvm_core.data.ingest.base import Article
from lvm_core.data.ingest.shards import files as shards_files
from lvm_core.data.ingest.shards.files import chunk_article_file, concat_parquet, text_sha1, write_article_shards
from lvm_core.data.ingest.shards.plan import ShardError, SourceShard, multistream_index_path, plan_source_shards
from lvm_core.data.ingest.shards.read import read_shard
from lvm_core.data.ingest.sources import read_articles, sample_dump_path
from tests.fixtures.paths import REPO as ROOT


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_scaled_dump", ROOT / "bench" / "make_scaled_dump.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_scaled_dump", module)
    spec.loader.exec_module(module)
    return module


make_scaled_dump = _load_generator()

PAGES = 80


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("multistream")
    return make_scaled_dump.make_scaled_dump(out, 2, pages_per_stream=10, max_pages=PAGES)


@pytest.fixture(scope="module")
def whole(dump) -> list[Article]:
    return list(read_articles(dump[0]))


@pytest.fixture(scope="module")
def plan(dump) -> list[SourceShard]:
    return plan_source_shards(dump[0], target_bytes=60_000)


def _key(articles):
    return [(a.article_id, a.title, a.text) for a in articles]


# --- multistream -------------------------------------------------------------------------------------


def test_plan_cuts_a_multistream_dump_on_stream_offsets(dump, plan):
    path, index = dump
    assert multistream_index_path(path) == index
    offsets = sorted({int(line.split(":", 1)[0]) for line in _index_lines(index)})
    assert len(plan) >= 3
    assert {s.kind for s in plan} == {"xml-multistream"}
    assert [s.index for s in plan] == list(range(len(plan))) and {s.count for s in plan} == {len(plan)}
    assert plan[0].start == plan[0].header_stop == offsets[0]
    assert plan[-1].stop == path.stat().st_size
    assert all(a.stop == b.start for a, b in itertools.pairwise(plan))
    assert all(s.start in offsets for s in plan)
    data = path.read_bytes()
    assert all(data[s.start : s.start + 3] == b"BZh" for s in plan)
    assert pickle.loads(pickle.dumps(plan)) == plan


def _index_lines(index: Path) -> list[str]:
    import bz2

    return bz2.open(index, "rt", encoding="utf-8").read().splitlines()


def test_sharded_read_equals_whole_read(dump, whole, plan):
    sharded = [a for shard in plan for a in read_shard(shard)]
    assert _key(sharded) == _key(whole)
    assert len(whole) > 20


def test_scaled_copies_are_new_articles_with_other_chunk_texts(dump, whole):
    # Copy 0 is the sample as it is; copy 1 has new ids and titles and recombined sentences.
    index = [line.split(":", 2) for line in _index_lines(dump[1])]
    assert len(index) == 2 * PAGES
    stride = int(index[PAGES][1]) - int(index[0][1])
    assert stride >= 10 and all(int(b[1]) - int(a[1]) == stride for a, b in zip(index[:PAGES], index[PAGES:]))
    copy0_ids = {int(line[1]) for line in index[:PAGES]}
    copy0 = [a for a in whole if a.article_id in copy0_ids]
    copy1 = [a for a in whole if a.article_id not in copy0_ids]
    assert _key(copy0) == _key(read_articles("sample", limit=len(copy0)))
    assert [a.article_id - stride for a in copy1] == [a.article_id for a in copy0]
    assert [a.title for a in copy1] == [make_scaled_dump._copy_title(a.title, 1) for a in copy0]
    assert make_scaled_dump._copy_title("Animalia (book)", 3) == "Animalia 3 (book)"
    hashes0 = set(chunking.chunk_articles(copy0).column("text_hash").to_pylist())
    hashes1 = chunking.chunk_articles(copy1).column("text_hash").to_pylist()
    changed = sum(h not in hashes0 for h in hashes1) / len(hashes1)
    print(f"chunks of copy 1 not in copy 0: {changed:.0%}")
    assert changed > 0.5


def test_header_sharing_its_stream_with_pages(tmp_path):
    # Some multistream files put the first pages in the <siteinfo> stream (index offset 0).
    import bz2

    header, pages, footer = make_scaled_dump._sample_parts(None)
    pages = [p for p in pages if len(p) < 30_000][60:90]  # small pages, 14 articles among them
    streams = [header + "".join(pages[:10]), "".join(pages[10:20]), "".join(pages[20:]) + footer]
    dump = tmp_path / "enwiki-20260101-pages-articles-multistream.xml.bz2"
    lines, offset, blobs = [], 0, []
    for i, text in enumerate(streams):
        blob = bz2.compress(text.encode())
        lines += [f"{offset}:{i * 10 + k}:T" for k in range(10)]
        blobs.append(blob)
        offset += len(blob)
    dump.write_bytes(b"".join(blobs))
    (tmp_path / "enwiki-20260101-pages-articles-multistream-index.txt").write_text("\n".join(lines) + "\n")
    plan = plan_source_shards(dump, target_bytes=1)
    assert len(plan) == 3 and plan[0].start == plan[0].header_stop == 0
    sharded = [a for s in plan for a in read_shard(s)]
    assert _key(sharded) == _key(read_articles(dump)) and len(sharded) > 5


def test_dump_without_index_and_sample_are_one_streamed_shard(dump, tmp_path):
    lone = tmp_path / dump[0].name
    shutil.copy(dump[0], lone)
    (shard,) = plan_source_shards(lone)
    assert shard.kind == "xml" and shard.stop == lone.stat().st_size
    (sample,) = plan_source_shards("sample")
    assert Path(sample.path) == sample_dump_path() and sample.kind == "xml"


def test_truncated_or_corrupt_multistream_shard_names_the_shard(dump, plan, tmp_path):
    data = bytearray(dump[0].read_bytes())
    victim = plan[1]
    broken = tmp_path / dump[0].name
    # The last 64 bytes of the range (the end of its last stream) are lost.
    data[victim.stop - 64 : victim.stop] = bytes(64)
    broken.write_bytes(bytes(data))
    bad = dataclasses.replace(victim, path=str(broken))
    with pytest.raises(ShardError, match=rf"shard 2/{len(plan)} \(bytes {victim.start}-{victim.stop}\).*bz2"):
        list(read_shard(bad))
    # Its neighbours still read.
    assert list(read_shard(dataclasses.replace(plan[0], path=str(broken))))
    # A dump cut short of the planned range.
    short = tmp_path / "short" / dump[0].name
    short.parent.mkdir()
    short.write_bytes(bytes(data[: plan[-1].start + 100]))
    with pytest.raises(ShardError, match=rf"shard {len(plan)}/{len(plan)} .*truncated"):
        list(read_shard(dataclasses.replace(plan[-1], path=str(short))))


def test_index_that_does_not_match_the_dump_is_refused(dump, tmp_path):
    import bz2

    path = tmp_path / dump[0].name
    shutil.copy(dump[0], path)
    index = multistream_index_path(dump[0]).name
    lines = _index_lines(dump[1])
    shifted = [f"{int(line.split(':', 1)[0]) + 7}:{line.split(':', 1)[1]}" for line in lines]
    (tmp_path / index).write_bytes(bz2.compress(("\n".join(shifted) + "\n").encode()))
    with pytest.raises(ShardError, match=rf"{path.name}: byte \d+ \(from {index}\) is not the start"):
        plan_source_shards(path, target_bytes=60_000)
    (tmp_path / index).write_bytes(bz2.compress(b"12:x\nnot an index line\n"))
    with pytest.raises(ShardError, match=rf"{index}: line 2: expected offset:page_id:title"):
        plan_source_shards(path)


# --- tabular sources ---------------------------------------------------------------------------------


def test_jsonl_ranges_align_to_lines_and_read_like_the_whole_file(whole, tmp_path):
    path = tmp_path / "articles.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, a in enumerate(whole):
            fh.write(json.dumps({"id": a.article_id, "title": a.title, "text": a.text}) + "\n")
            if i % 7 == 0:
                fh.write("\n")
    plan = plan_source_shards(path, target_bytes=40_000)
    assert len(plan) >= 4 and {s.kind for s in plan} == {"jsonl"}
    data = path.read_bytes()
    assert all(data[s.start - 1 : s.start] == b"\n" for s in plan[1:])
    assert all(s.first_line == data[: s.start].count(b"\n") + 1 for s in plan)
    sharded = [a for s in plan for a in read_shard(s)]
    assert _key(sharded) == _key(read_articles(path))
    # A bad line is reported with its line number in the file and the shard that holds it.
    lines = data.split(b"\n")
    bad_line = plan[2].first_line + 1
    lines[bad_line - 1] = b'{"id": "x", "title": "t", "text": "y"}'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ShardError, match=rf"shard 3/{len(plan)} .*line {bad_line}: id 'x' is not an integer"):
        list(read_shard(plan[2]))


def test_parquet_row_group_shards_read_like_the_whole_file(whole, tmp_path):
    path = tmp_path / "articles.parquet"
    table = pa.table(
        {
            "id": [a.article_id for a in whole],
            "title": [a.title for a in whole],
            "text": [a.text for a in whole],
        }
    )
    pq.write_table(table, path, row_group_size=5)
    plan = plan_source_shards(path, target_bytes=50_000)
    assert len(plan) >= 3 and plan[-1].stop == pq.ParquetFile(path).num_row_groups
    assert all(a.stop == b.start for a, b in itertools.pairwise(plan))
    sharded = [a for s in plan for a in read_shard(s)]
    assert _key(sharded) == _key(read_articles(path))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ShardError, match=r"broken\.parquet: not a readable Parquet file"):
        plan_source_shards(broken)


# --- article files, chunk files, concatenation -------------------------------------------------------


def test_write_article_shards_bounds_files_and_keeps_source_order(whole, tmp_path, monkeypatch):
    files = write_article_shards(whole, tmp_path, snapshot_id="snap", max_articles=7, max_bytes=10**9)
    assert [f.name for f in files] == sorted(f.name for f in files) == sorted(p.name for p in tmp_path.iterdir())
    assert all(pq.ParquetFile(f).metadata.num_rows <= 7 for f in files)
    table = pq.read_table(concat_parquet(files, tmp_path / "all" / "articles.parquet", ARTICLES_SCHEMA))
    assert table.schema.equals(ARTICLES_SCHEMA)
    assert table.column("article_id").to_pylist() == [a.article_id for a in whole]
    assert table.column("text").to_pylist() == [a.text for a in whole]
    assert set(table.column("snapshot_id").to_pylist()) == {"snap"}
    assert table.column("text_sha1").to_pylist() == [text_sha1(a.text) for a in whole]
    sources = table.column("source_sha1").to_pylist()  # of the raw wikitext, not the cleaned text
    assert sources == [a.source_sha1 for a in whole] and all(sources) and set(sources).isdisjoint(
        table.column("text_sha1").to_pylist())
    monkeypatch.setattr(shards_files, "_CONCAT_BATCH_BYTES", 20_000)  # row groups copied in several batches
    assert pq.read_table(concat_parquet(files, tmp_path / "all" / "small.parquet", ARTICLES_SCHEMA)).equals(table)

    by_bytes = tmp_path / "bytes"
    limit = 60_000
    files = write_article_shards(whole, by_bytes, snapshot_id="snap", max_articles=10**6, max_bytes=limit)
    assert len(files) > 3
    for f in files:
        t = pq.read_table(f)
        size = sum(len(x.encode()) + len(y.encode()) for x, y in zip(t["title"].to_pylist(), t["text"].to_pylist()))
        assert size <= limit or t.num_rows == 1

    # A failing source publishes nothing and leaves no temp file; a later, shorter run removes stale files.
    def failing():
        yield from whole[:10]
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_article_shards(failing(), by_bytes, snapshot_id="snap", max_articles=3, max_bytes=limit)
    assert sorted(p.name for p in by_bytes.iterdir()) == [f.name for f in files]
    again = write_article_shards(whole[:2], by_bytes, snapshot_id="snap", max_articles=10, max_bytes=10**9)
    assert sorted(p.name for p in by_bytes.iterdir()) == [f.name for f in again] == ["articles-000000.parquet"]
    assert write_article_shards([], tmp_path / "none", snapshot_id="snap") == []


def test_chunk_article_file_equals_chunk_articles(whole, tmp_path):
    config = chunking.ChunkingConfig(min_words=30, max_words=90)
    files = write_article_shards(whole, tmp_path / "a", snapshot_id="s", max_articles=9)
    seen: list[int] = []
    chunk_files = [
        chunk_article_file(f, tmp_path / "c" / f"chunks-{i:03d}.parquet", config, on_progress=seen.append)
        for i, f in enumerate(files)
    ]
    assert sum(seen) == len(whole)
    for f, c in zip(files, chunk_files):
        ids = pq.read_table(f, columns=["article_id"]).column("article_id").to_pylist()
        expected = chunking.chunk_articles([a for a in whole if a.article_id in set(ids)], config)
        assert pq.read_table(c).equals(expected)
    joined = pq.read_table(concat_parquet(chunk_files, tmp_path / "chunks.parquet", CHUNKS_SCHEMA))
    assert joined.equals(chunking.chunk_articles(whole, config))
    assert not list((tmp_path / "c").glob(".*"))


def test_unreadable_or_mismatched_files_are_named(whole, tmp_path):
    broken = tmp_path / "articles-000000.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ShardError, match=rf"{broken}: not a readable Parquet file"):
        chunk_article_file(broken, tmp_path / "chunks.parquet")
    assert not (tmp_path / "chunks.parquet").exists()
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"chunk_id": [1], "article_id": [1], "chunk_index": [0], "text": ["x"],
                             "text_hash": ["h"], "n_words": [1]}), other)
    with pytest.raises(ShardError, match=rf"{other}: column types differ \(chunk_id is int64, expected string"):
        concat_parquet([other], tmp_path / "joined.parquet", CHUNKS_SCHEMA)
    assert not (tmp_path / "joined.parquet").exists()
