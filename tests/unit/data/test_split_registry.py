"""The split registry: articles keep their split across builds of a family; new ones are drawn among
themselves; removed ones stay registered; the hash covers rows and lineage; bad files are refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from lvm_core.contracts.layout import SPLIT_REGISTRY_META_KEY
from lvm_core.data import split_registry
from lvm_core.data.split_registry import (
    RegistryHeader,
    SplitRegistry,
    SplitRegistryError,
    carry_splits,
    hashed_draw,
    read_registry,
    write_registry,
)
from lvm_core.data.splits import SplitConfig, split_articles

CFG = SplitConfig()


def _frame(ids: list[int], seed: int = 0) -> pl.DataFrame:
    """A coherence-binned split input: 5 bins by id, coherence random."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "article_id": ids, "n_chunks": [12] * len(ids), "coherence": rng.random(len(ids)),
        "coherence_bin": [i % 5 for i in ids],
    }, schema_overrides={"coherence_bin": pl.Int32})


def _header(month: int) -> RegistryHeader:
    sid = f"enwiki-2026{month:02d}01"
    return RegistryHeader("enwiki", sid, sid)


def _split_of(splits: pl.DataFrame) -> dict[int, str]:
    return dict(splits.select("article_id", "split").iter_rows())


def _months() -> tuple[split_registry.CarriedSplits, split_registry.CarriedSplits]:
    """Month 1: articles 0..199; month 2: 20..229 (20 removed, 30 new)."""
    m1 = carry_splits(_frame(list(range(200))), CFG, None, None, _header(1))
    m2 = carry_splits(_frame(list(range(20, 230)), seed=1), CFG, None, m1.registry, _header(2))
    return m1, m2


def test_first_build_is_the_plain_split():
    frame = _frame(list(range(120)))
    first = carry_splits(frame, CFG, None, None, _header(1))
    assert first.splits.equals(split_articles(frame, CFG))
    reg = first.registry
    assert reg.header.generation == 0 and reg.header.parent_hash is None and reg.header.ancestors == ()
    assert reg.rows["present"].all() and set(reg.rows["first_snapshot"]) == {"enwiki-20260101"}
    assert first.counts == {"kept": 0, "new": 120, "removed": 0, "returned": 0, "moved": 0,
                            "new_assigned_by": "stratified"}


def test_known_articles_keep_their_split_new_ones_are_drawn_removed_ones_stay():
    m1, m2 = _months()
    before, after = _split_of(m1.splits), _split_of(m2.splits)
    assert all(after[a] == before[a] for a in range(20, 200))
    counts = {k: v for k, v in m2.counts.items() if k != "new_assigned_by"}
    assert counts == {"kept": 180, "new": 30, "removed": 20, "returned": 0, "moved": 0}
    rows = m2.registry.rows
    assert rows.height == 230 and rows["article_id"].is_sorted()
    gone = rows.filter(pl.col("article_id") < 20)
    assert not gone["present"].any() and _split_of(gone) == {a: before[a] for a in range(20)}
    new = rows.filter(pl.col("article_id") >= 200)
    assert set(new["first_snapshot"]) == {"enwiki-20260201"} and set(new["first_generation"]) == {1}
    header = m2.registry.header
    assert (header.generation, header.parent_hash, header.parent_dataset) == (1, m1.registry.hash, "enwiki-20260101")
    assert header.ancestors == (m1.registry.hash,)


def test_a_returning_article_gets_its_old_split_back():
    m1, m2 = _months()
    m3 = carry_splits(_frame(list(range(230)), seed=2), CFG, None, m2.registry, _header(3))
    assert m3.counts["returned"] == 20 and m3.counts["new"] == 0
    assert _split_of(m3.splits) == {**_split_of(m1.splits), **_split_of(m2.splits)}
    assert m3.registry.header.ancestors == (m1.registry.hash, m2.registry.hash)


def test_new_articles_are_stratified_among_themselves():
    m1 = carry_splits(_frame(list(range(100))), CFG, None, None, _header(1))
    m2 = carry_splits(_frame(list(range(1000))), CFG, None, m1.registry, _header(2))
    new = m2.splits.filter(pl.col("article_id") >= 100)
    assert m2.counts["new_assigned_by"] == "stratified"
    assert _split_of(new) == _split_of(split_articles(_frame(list(range(100, 1000))), CFG))
    counts = dict(new.group_by("split").len().iter_rows())
    assert counts == {"train": 630, "val": 90, "test": 90, "ood": 90}
    for _, part in new.group_by("coherence_bin"):  # every bin keeps the fractions (180 articles each)
        assert dict(part.group_by("split").len().iter_rows()) == {"train": 126, "val": 18, "test": 18, "ood": 18}


def test_many_new_articles_are_placed_by_a_salted_hash(monkeypatch):
    monkeypatch.setattr(split_registry, "NEW_BY_HASH_ABOVE", 50)
    m1 = carry_splits(_frame(list(range(100))), CFG, None, None, _header(1))
    ids = list(range(100, 20_100))
    m2 = carry_splits(_frame(ids), CFG, None, m1.registry, _header(2))
    assert m2.counts["new_assigned_by"] == "hash"
    got = _split_of(m2.splits)
    shares = pl.Series([got[a] for a in ids]).value_counts(normalize=True)
    share = dict(shares.iter_rows())
    assert abs(share["train"] - 0.7) < 0.015 and all(abs(share[s] - 0.1) < 0.01 for s in ("val", "test", "ood"))
    # an article's split depends on its id, the family and the seed only, not on which others arrived with it
    fewer = carry_splits(_frame(ids[::7]), CFG, None, m1.registry, _header(2))
    assert all(got[a] == s for a, s in _split_of(fewer.splits).items() if a >= 100)
    other = hashed_draw(np.array(ids), np.zeros(len(ids)), np.array(CFG.fractions), CFG.seed, "dewiki")
    assert (other != np.array([got[a] for a in ids])).mean() > 0.3  # salted by the family
    no_bin = hashed_draw(np.array([5, 6]), np.array([-1, -1]), np.array(CFG.fractions), CFG.seed, "enwiki")
    assert no_bin.tolist() == ["train", "train"]


def test_explicit_ood_holdout_wins_and_the_move_is_recorded():
    m1, m2 = _months()
    train_article = next(a for a, s in _split_of(m2.splits).items() if s == "train")
    ids = list(range(20, 230))
    titles = pl.Series([f"Title {a}" for a in ids])
    cfg = SplitConfig(mode="titles", holdout_titles=[f"^Title {train_article}$"])
    m3 = carry_splits(_frame(ids, seed=3), cfg, titles, m2.registry, _header(3))
    assert _split_of(m3.splits)[train_article] == "ood" and m3.counts["moved"] == 1
    row = m3.registry.rows.filter(pl.col("article_id") == train_article).row(0, named=True)
    assert (row["moved_from"], row["split_generation"], row["first_generation"]) == ("train", 2, 0)
    # the registry still knows it was a training article of generations 0 and 1
    assert train_article in m3.registry.train_articles_at(1) and train_article not in m3.registry.train_articles_at(2)
    # the other articles keep their split
    assert {a: s for a, s in _split_of(m3.splits).items() if a != train_article} == \
        {a: s for a, s in _split_of(m2.splits).items() if a != train_article}


def test_val_ranges_place_only_new_articles():
    first = carry_splits(_frame(list(range(50))), CFG, None, None, _header(1))
    cfg = SplitConfig(mode="ranges", ood_ranges="59-59", val_ranges="0-9,50-55")
    nxt = carry_splits(_frame(list(range(60))), cfg, None, first.registry, _header(2))
    got, before = _split_of(nxt.splits), _split_of(first.splits)
    assert all(got[a] == before[a] for a in range(50)) and all(got[a] == "val" for a in range(50, 56))
    assert got[59] == "ood"


def test_hash_covers_rows_and_lineage(tmp_path: Path):
    m1, m2 = _months()
    again = carry_splits(_frame(list(range(20, 230)), seed=1), CFG, None, m1.registry, _header(2))
    assert again.registry.hash == m2.registry.hash  # deterministic
    rows = m2.registry.rows
    flipped = rows.with_columns(pl.when(pl.col("article_id") == 25).then(pl.lit("ood")).otherwise(pl.col("split"))
                                .alias("split"))
    assert SplitRegistry.of(m2.registry.header, flipped).hash != m2.registry.hash
    orphan = RegistryHeader("enwiki", "enwiki-20260201", "enwiki-20260201", 1, "0" * 64, None, ("0" * 64,))
    assert SplitRegistry.of(orphan, rows).hash != m2.registry.hash
    write_registry(tmp_path / "r.parquet", m2.registry)
    back = read_registry(tmp_path / "r.parquet")
    assert back.hash == m2.registry.hash and back.rows.equals(m2.registry.rows) and back.header == m2.registry.header
    assert back.generation_of(m1.registry.hash) == 0 and back.generation_of(m2.registry.hash) == 1
    assert back.generation_of("f" * 64) is None


def _rewrite(path: Path, edit) -> None:
    table = pq.read_table(path)
    pq.write_table(edit(table), path)


@pytest.mark.parametrize("case, message", [
    ("garbage", "unreadable split registry"),
    ("no_header", "unreadable split registry"),
    ("duplicate", "lists article 0 more than once"),
    ("unknown_split", "unknown split name(s) ['holdout']"),
    ("edited", "does not match its recorded hash"),
])
def test_bad_registry_files_are_refused_in_one_line(tmp_path: Path, case: str, message: str):
    _, m2 = _months()
    path = tmp_path / "split_registry.parquet"
    write_registry(path, m2.registry)
    meta = pq.read_schema(path).metadata
    if case == "garbage":
        path.write_bytes(b"not a parquet file")
    elif case == "no_header":
        _rewrite(path, lambda t: t.replace_schema_metadata({}))
    elif case == "duplicate":
        _rewrite(path, lambda t: pl.concat([pl.from_arrow(t), pl.from_arrow(t).head(1)]).to_arrow()
                 .replace_schema_metadata(meta))
    elif case == "unknown_split":
        _rewrite(path, lambda t: pl.from_arrow(t).with_columns(
            pl.when(pl.col("article_id") == 21).then(pl.lit("holdout")).otherwise(pl.col("split")).alias("split"))
            .to_arrow().replace_schema_metadata(meta))
    else:
        _rewrite(path, lambda t: pl.from_arrow(t).with_columns(pl.lit("train").alias("split")).to_arrow()
                 .replace_schema_metadata(meta))
    assert SPLIT_REGISTRY_META_KEY in meta
    with pytest.raises(SplitRegistryError) as err:
        read_registry(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    assert err.value.user_facing
