"""Repeated article ids: the build's ingest and global duplicate pass drop identical repeats, refuse conflicting
ones unless a row is chosen, keep a dump's first revision, and keep the one-pass reader's rules across shards."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lvm_core.data.ingest.sources import read_articles
from tests.fixtures.messages import assert_one_line_error
from tests.fixtures.paths import TEST_DATA

TINY = TEST_DATA / "tiny_dump.xml"


@pytest.mark.slow
@pytest.mark.parametrize("policy,limit", [("first", None), ("last", None), ("last", 4), ("error", None)])
def test_global_pass_keeps_todays_duplicate_rules_across_shards(policy, limit, tmp_path):
    """Repeated ids in different shards of a JSONL source: the same articles and counts as the one-pass reader."""
    from lvm_core.contracts.build_options import BuildConfig
    from lvm_core.data.build.dedup import dedup_articles, dedup_work_dir
    from lvm_core.data.build.ingest import ingest_shard_step, ingest_shard_work_dir, plan_shards
    from lvm_core.data.build.source import resolve_source
    from lvm_core.data.ingest import sources
    from lvm_core.data.ingest.duplicates import DuplicateIdError, drop_duplicate_ids

    rows = [(1, "one"), (2, "two"), (1, "one"), (3, "three"), (2, "two again"), (4, "four"), (3, "three")]
    src = tmp_path / "articles.jsonl"
    src.write_text("".join(json.dumps({"id": i, "title": f"T{i}", "text": f"Text {t}."}) + "\n" for i, t in rows))
    config = BuildConfig(source=str(src), data_dir=str(tmp_path / "data"), limit_articles=limit, on_duplicate=policy,
                         shard_bytes=60, shard_articles=2)
    source = resolve_source(config)
    plan = plan_shards(source, config)
    assert len(plan) >= 3
    ingested = [ingest_shard_step(s, source, config, ingest_shard_work_dir(s, source, config)) for s in plan]
    try:
        expected, report = drop_duplicate_ids(sources.read_articles(src, limit=limit), on_duplicate=policy,
                                                     source_name=src.name)
    except DuplicateIdError as exc:
        with pytest.raises(DuplicateIdError, match="--on-duplicate"):
            dedup_articles(ingested, source, config, dedup_work_dir(ingested, source, config))
        assert "1 id(s)" in str(exc)
        return
    kept = dedup_articles(ingested, source, config, dedup_work_dir(ingested, source, config))
    got = [r for f in kept.files for r in pq.read_table(f, columns=["article_id", "text"]).to_pylist()]
    assert got == [{"article_id": a.article_id, "text": a.text} for a in expected]
    assert kept.stats.to_dict() == report.to_dict()


def _duplicated_jsonl(path: Path, n_conflicting: int) -> Path:
    """40 rows: ids 0..19 once, then ids 0..19 again; the first `n_conflicting` repeats carry another text."""
    rows = [{"id": i, "title": f"T{i}", "text": f"Article {i} is about topic {i}."} for i in range(20)]
    rows += [
        {"id": i, "title": f"T{i} (rev)", "text": f"Article {i} was rewritten." if i < n_conflicting else r["text"]}
        for i, r in enumerate(rows[:20])
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ingest(path: Path, data_dir: Path, **options) -> tuple[list[dict], dict]:
    """The build's ingest of a whole source (every shard, then the global pass): kept rows and duplicate counts."""
    from lvm_core.contracts.build_options import BuildConfig
    from lvm_core.data.build import source as build_source
    from lvm_core.data.build.dedup import dedup_articles
    from lvm_core.data.build.ingest import ingest_shard_step, plan_shards

    config = BuildConfig(source=str(path), data_dir=str(data_dir), **options)
    source = build_source.resolve_source(config)
    work = data_dir / "work" / uuid.uuid4().hex
    ingested = [ingest_shard_step(s, source, config, work / f"ingest-{s.index}") for s in plan_shards(source, config)]
    kept = dedup_articles(ingested, source, config, work / "dedup")
    return [r for f in kept.files for r in pq.read_table(f).to_pylist()], kept.stats.to_dict()


def test_identical_repeated_ids_are_dropped_and_counted(tmp_path):
    rows, stats = _ingest(_duplicated_jsonl(tmp_path / "same.jsonl", 0), tmp_path)
    assert [r["article_id"] for r in rows] == list(range(20))
    assert [r["title"] for r in rows[:2]] == ["T0", "T1"]
    assert stats["duplicate_ids"] == 20 and stats["duplicate_rows_dropped"] == 20
    assert stats["duplicate_ids_conflicting"] == 0 and stats["on_duplicate"] == "error"


def test_repeated_ids_with_other_text_fail_unless_a_row_is_chosen(tmp_path):
    from lvm_core.data.ingest.duplicates import DuplicateIdError

    path = _duplicated_jsonl(tmp_path / "dups.jsonl", 3)
    with pytest.raises(DuplicateIdError) as exc:
        _ingest(path, tmp_path)
    msg = assert_one_line_error(exc, "dups.jsonl")
    assert "3 id(s)" in msg and "id 0, 1, 2" in msg and "--on-duplicate" in msg

    first, stats = _ingest(path, tmp_path, on_duplicate="first")
    assert len(first) == 20 and first[1]["text"] == "Article 1 is about topic 1." and first[1]["title"] == "T1"
    assert (stats["duplicate_ids"], stats["duplicate_rows_dropped"], stats["duplicate_ids_conflicting"]) == (20, 20, 3)
    last, stats = _ingest(path, tmp_path, on_duplicate="last")
    assert [r["article_id"] for r in last] == list(range(20))  # the id keeps its first position
    assert last[1]["text"] == "Article 1 was rewritten." and last[1]["title"] == "T1 (rev)"
    assert last[5]["title"] == "T5 (rev)" and last[5]["text"] == "Article 5 is about topic 5."
    assert stats["on_duplicate"] == "last" and stats["duplicate_ids_conflicting"] == 3


def test_repeated_page_in_a_dump_keeps_its_first_revision_and_is_counted(tmp_path):
    text = TINY.read_text(encoding="utf-8")
    first_page = re.search(r"<page>.*?</page>", text, re.S).group(0)
    changed = re.sub(r"(<text[^>]*>)", r"\1Rewritten lead of the page.\n\n", first_page, count=1)
    dump = tmp_path / "repeat-pages-articles.xml"
    dump.write_text(text.replace("</mediawiki>", changed + "\n</mediawiki>"), encoding="utf-8")
    once = [a for a in read_articles(TINY)]
    rows, stats = _ingest(dump, tmp_path)  # on_duplicate="error" does not apply to dumps
    assert [r["article_id"] for r in rows] == [a.article_id for a in once]
    assert [r["text"] for r in rows] == [a.text for a in once]
    assert stats["duplicate_rows_dropped"] == 1 and stats["on_duplicate"] == "first"


def test_on_duplicate_option_is_validated():
    from pydantic import ValidationError

    from lvm_core.contracts.build_options import BuildOptions

    assert BuildOptions().on_duplicate == "error"
    with pytest.raises(ValidationError):
        BuildOptions(on_duplicate="newest")
