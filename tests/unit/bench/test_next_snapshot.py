"""bench/make_scaled_dump.py --next-of: the next month of a multistream dump, with seeded edits, additions
and removals recorded by article id, read back by the build's own reader and shard planner."""

from __future__ import annotations

import json

import pytest

from bench import make_scaled_dump as gen
from lvm_core.data.ingest.shards.plan import plan_source_shards
from lvm_core.data.ingest.shards.read import read_shard
from lvm_core.data.ingest.sources import read_articles, snapshot_id_for
from lvm_core.io.storage import file_digest

FRACTIONS = {"edit": 0.25, "add": 0.2, "remove": 0.15}


@pytest.fixture(scope="module")
def months(tmp_path_factory):
    out = tmp_path_factory.mktemp("months")
    first, _ = gen.make_scaled_dump(out, 1, pages_per_stream=10, max_pages=70)
    second, index, changes = gen.make_next_snapshot(first, out, seed=3, pages_per_stream=10, **FRACTIONS)
    return first, second, index, changes


def test_dated_names_give_consecutive_snapshot_ids(months) -> None:
    first, second, index, changes = months
    assert snapshot_id_for(first) == "enwiki-20260101"
    assert snapshot_id_for(second) == "enwiki-20260201"
    assert index.name == "enwiki-20260201-pages-articles-multistream-index.txt.bz2"
    assert json.loads((second.parent / "enwiki-20260201-pages-articles-multistream-changes.json").read_text()) == changes
    assert gen.next_month_name("enwiki-20261201-pages-articles-multistream") == "enwiki-20270101-pages-articles-multistream"
    with pytest.raises(ValueError, match="no -YYYYMMDD- date"):
        gen.next_month_name("enwiki-latest-pages-articles")


def test_recorded_changes_are_what_the_build_reads(months) -> None:
    first, second, _, changes = months
    old = {a.article_id: a for a in read_articles(first)}
    new = {a.article_id: a for a in read_articles(second)}
    edited, added, removed = (set(changes[k]) for k in ("edited", "added", "removed"))
    assert edited and added and removed and not (edited & removed)
    assert set(new) == (set(old) - removed) | added
    assert added.isdisjoint(old) and min(added) > max(old)
    for article_id in set(old) & set(new):
        same = old[article_id].text == new[article_id].text
        assert same == (article_id not in edited), article_id
        assert old[article_id].title == new[article_id].title
    for article_id in edited & set(new):
        assert f"added to article {article_id} in enwiki-20260201" in new[article_id].text


def test_index_plans_shards_that_read_the_whole_month(months) -> None:
    _, second, _, _ = months
    plan = plan_source_shards(second, target_bytes=40_000)
    assert len(plan) > 1
    sharded = [a.article_id for shard in plan for a in read_shard(shard)]
    assert sharded == [a.article_id for a in read_articles(second)]


def test_same_seed_same_month_other_seed_other_choices(months, tmp_path) -> None:
    first, second, _, changes = months
    again, _, same = gen.make_next_snapshot(first, tmp_path / "a", seed=3, pages_per_stream=10, **FRACTIONS)
    other = gen.make_next_snapshot(first, tmp_path / "b", seed=4, pages_per_stream=10, **FRACTIONS)[2]
    assert file_digest(again) == file_digest(second) and same == changes
    assert other["edited"] != changes["edited"]
    with pytest.raises(ValueError, match="--edit 1.5"):
        gen.make_next_snapshot(first, tmp_path / "c", edit=1.5)


def test_distinct_copies_share_no_chunk_text(tmp_path) -> None:
    from lvm_core.data.chunking import chunk_articles

    dump, _ = gen.make_scaled_dump(tmp_path, 2, pages_per_stream=10, max_pages=40, distinct=True)
    articles = list(read_articles(dump))
    originals = {a.article_id for a in read_articles(dump, limit=len(articles) // 2)}
    hashes = chunk_articles(articles).to_pydict()
    copy0 = {h for a, h in zip(hashes["article_id"], hashes["text_hash"]) if a in originals}
    copy1 = [h for a, h in zip(hashes["article_id"], hashes["text_hash"]) if a not in originals]
    assert copy1 and sum(h in copy0 for h in copy1) <= 0.01 * len(copy1)
    assert gen.mark_lines("* [[A]]\n{{t}} one two three four five six seven\n{| x\n== H ==\n* {{Commons}}", "m1") == (
        "* m1 [[A]]\n{{t}} one two three four five m1 six seven\n{| x\n== H ==\n* {{Commons}}"
    )
