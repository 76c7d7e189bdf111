"""Pages unchanged since the previous dataset are not cleaned again: the index of the previous dataset's
articles by (page id, raw text digest), when it is (not) used, and an ingest with it that writes the same
article files as one that cleans every page."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import ARTICLES_SCHEMA, MANIFEST_FILE, READY_MARKER, DatasetPaths, dataset_dir
from lvm_core.data.build.ingest import ingest_reuse, ingest_shard_step, ingest_shard_work_dir, plan_shards
from lvm_core.data.build.known import KnownArticles, KnownLookup, known_articles_for, sha1_code, sha1_codes
from lvm_core.data.build.source import resolve_source
from lvm_core.data.ingest import mediawiki
from lvm_core.data.ingest.shards.files import concat_parquet
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.data.ingest.sources import cleaner_id
from tests.fixtures.months import Months, write_months

M1, M2 = "enwiki-20260101", "enwiki-20260201"


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> Months:
    return write_months(tmp_path_factory.mktemp("dumps"), pages=30)


def _config(source: Path, data_dir: Path, snapshot_id: str, **options: object) -> BuildConfig:
    return BuildConfig(source=str(source), data_dir=str(data_dir), snapshot_id=snapshot_id, **options)


def _ingest(config: BuildConfig, known: KnownArticles | None = None) -> tuple[pa.Table, dict]:
    """Every shard of the source through the ingest step; the joined article rows and the counts."""
    source = resolve_source(config)
    records = [
        ingest_shard_step(s, source, config, ingest_shard_work_dir(s, source, config, known), known=known)
        for s in plan_shards(source, config)
    ]
    files = [f for r in records for f in r.files]
    joined = concat_parquet(files, Path(config.resolved_data_dir()) / f"joined-{len(files)}-{id(records)}.parquet",
                            ARTICLES_SCHEMA)
    return pq.read_table(joined), ingest_reuse(records, known)


def _publish(data_dir: Path, snapshot_id: str, articles: pa.Table, source: Path, **manifest: object) -> Path:
    """A published dataset folder holding `articles` (what the index reads of a dataset)."""
    root = dataset_dir(data_dir, snapshot_id)
    root.mkdir(parents=True)
    pq.write_table(articles, DatasetPaths(root).articles, row_group_size=2)
    body = {"dataset_id": snapshot_id, "snapshot_id": snapshot_id, "created_at": "2026-01-02T00:00:00",
            "cleaner": cleaner_id(source), "content_hash": hashlib.sha256(snapshot_id.encode()).hexdigest(), **manifest}
    (root / MANIFEST_FILE).write_text(json.dumps({k: v for k, v in body.items() if v is not None}))
    (root / READY_MARKER).write_text("ready\n")
    return root


@pytest.fixture
def previous(months: Months, tmp_path: Path) -> tuple[Path, pa.Table]:
    """Month 1 ingested (every page cleaned) and published as the family's previous dataset."""
    data = tmp_path / "data"
    table, counts = _ingest(_config(months.first, data, M1))
    assert counts["articles_reused"] == 0 and counts["articles_cleaned"] == table.num_rows
    _publish(data, M1, table, months.first)
    return data, table


def test_source_sha1_is_the_raw_wikitext_digest(previous: tuple[Path, pa.Table], months: Months):
    _, table = previous
    raw = months.first.read_text(encoding="utf-8")
    row = table.slice(0, 1).to_pylist()[0]
    start = raw.index(f"<id>{row['article_id']}</id>")
    text_start = raw.index(">", raw.index("<text", start)) + 1
    wikitext = raw[text_start:raw.index("</text>", text_start)]
    import html

    assert row["source_sha1"] == hashlib.sha1(html.unescape(wikitext).encode("utf-8")).hexdigest()
    assert row["source_sha1"] != row["text_sha1"]


def test_sha1_codes_match_the_scalar_code_and_flag_nulls():
    digests = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(50)]
    codes, valid = sha1_codes(pa.array([*digests, None, "not hex at all!!"], pa.string()))
    assert valid.tolist() == [True] * 50 + [False, False]
    assert codes[:50].tolist() == [sha1_code(d) for d in digests]
    assert codes.dtype == np.uint64


def test_index_is_sorted_memory_mapped_and_finds_rows(previous: tuple[Path, pa.Table], months: Months):
    data, table = previous
    known, why = known_articles_for(_config(months.second, data, M2), resolve_source(_config(months.second, data, M2)))
    assert known is not None and known.n == table.num_rows and M1 in why
    folder = Path(known.folder)
    on_disk = sum(f.stat().st_size - 128 for f in folder.glob("*.npy"))  # less the .npy headers
    assert on_disk == 20 * table.num_rows
    lookup = KnownLookup(known)
    assert isinstance(lookup.ids, np.memmap) and isinstance(lookup.codes, np.memmap)
    assert np.all(np.diff(lookup.ids) > 0)
    for row, (article_id, digest) in enumerate(zip(table["article_id"].to_pylist(), table["source_sha1"].to_pylist(),
                                                   strict=True)):
        assert lookup(article_id, digest) == row
        assert lookup(article_id, hashlib.sha1(b"edited").hexdigest()) is None
    assert lookup(123_456_789, table["source_sha1"][0].as_py()) is None
    # built once per previous dataset: a second build finds the index done
    again, _ = known_articles_for(_config(months.second, data, M2), resolve_source(_config(months.second, data, M2)))
    assert again == known


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"cold": True}, "cold build"),
        ({"cleaner": "wikitext-0"}, "cleaned by wikitext-0"),
        ({"cleaner": None}, "does not record"),
        ({"drop": "source_sha1"}, "no source_sha1 column"),
        ({"family": "dewiki-20260101"}, "no previous dataset"),
    ],
)
def test_no_index_when_the_previous_dataset_cannot_be_reused(change, reason, months: Months, tmp_path: Path):
    """Cold builds, another (or an unrecorded) cleaner, a dataset from before source_sha1: every page cleaned."""
    data = tmp_path / "data"
    table = pq.read_table(_ingest_once(months, tmp_path))
    if "drop" in change:
        table = table.drop_columns([change["drop"]])
    manifest = {"cleaner": change["cleaner"]} if "cleaner" in change else {}
    _publish(data, change.get("family", M1), table, months.first, **manifest)
    config = _config(months.second, data, M2, cold=change.get("cold", False))
    known, why = known_articles_for(config, resolve_source(config))
    assert known is None
    assert reason in why and "every page is cleaned" in why


def _ingest_once(months: Months, tmp_path: Path) -> Path:
    out = tmp_path / "m1.parquet"
    table, _ = _ingest(_config(months.first, tmp_path / "scratch", M1))
    pq.write_table(table, out)
    return out


def test_ingest_with_the_index_skips_cleaning_and_writes_the_same_rows(
    previous: tuple[Path, pa.Table], months: Months, monkeypatch: pytest.MonkeyPatch
):
    """Month 2 with the index: only the edited and the added page are parsed and cleaned; the rows are
    those of an ingest that cleans every page (a cold one), byte for byte."""
    data, month1 = previous
    calls: list[int] = []
    real_parse = mediawiki.mwparserfromhell.parse

    def counting_parse(text: str, **kw: object) -> object:
        calls.append(1)
        return real_parse(text, **kw)

    monkeypatch.setattr(mediawiki.mwparserfromhell, "parse", counting_parse)
    config = _config(months.second, data, M2)
    known, _ = known_articles_for(config, resolve_source(config))
    assert known is not None
    incremental, counts = _ingest(config, known)
    parsed_incremental = len(calls)
    calls.clear()
    cold, cold_counts = _ingest(_config(months.second, data, M2, cold=True))
    assert incremental.equals(cold) and incremental.schema.equals(cold.schema)
    assert incremental.to_pylist() == cold.to_pylist()
    assert counts["articles_cleaned"] == 2 and counts["articles_reused"] == month1.num_rows - 1
    assert cold_counts["articles_cleaned"] == cold.num_rows and cold_counts["articles_reused"] == 0
    assert counts["previous_dataset"] == M1 and counts["cleaner"] == "wikitext-1"
    # disambiguation/empty pages are parsed in both; known pages only in the cold ingest
    assert len(calls) - parsed_incremental == counts["articles_reused"]
    ids = incremental["article_id"].to_pylist()
    assert months.edited_id in ids and months.added_id in ids


def test_work_folders_differ_with_and_without_the_index(previous: tuple[Path, pa.Table], months: Months):
    data, _ = previous
    config = _config(months.second, data, M2)
    source = resolve_source(config)
    known, _ = known_articles_for(config, source)
    shard = plan_shards(source, config)[0]
    assert ingest_shard_work_dir(shard, source, config, known) != ingest_shard_work_dir(shard, source, config)


def test_a_previous_file_that_changed_under_the_index_fails_in_one_line(
    previous: tuple[Path, pa.Table], months: Months
):
    data, month1 = previous
    config = _config(months.second, data, M2)
    known, _ = known_articles_for(config, resolve_source(config))
    assert known is not None
    shuffled = month1.take(pa.array(list(reversed(range(month1.num_rows)))))
    pq.write_table(shuffled, known.articles)
    with pytest.raises(ShardError, match="changed during this build") as err:
        _ingest(config, known)
    assert "\n" not in str(err.value)


def test_a_renamed_page_with_the_same_wikitext_keeps_its_text_and_takes_the_new_title(
    previous: tuple[Path, pa.Table], months: Months, tmp_path: Path
):
    """The title comes from the new dump (a move changes it, not the wikitext): still the cold build's rows."""
    data, month1 = previous
    old_title = month1["title"][1].as_py()
    renamed = tmp_path / "month2-renamed.xml"
    renamed.write_text(months.second.read_text(encoding="utf-8").replace(
        f"<title>{old_title}</title>", "<title>Moved title</title>", 1), encoding="utf-8")
    config = _config(renamed, data, M2)
    known, _ = known_articles_for(config, resolve_source(config))
    incremental, counts = _ingest(config, known)
    cold, _ = _ingest(_config(renamed, data, M2, cold=True))
    assert incremental.equals(cold) and "Moved title" in incremental["title"].to_pylist()
    assert counts["articles_reused"] == month1.num_rows - 1
