"""Article splits: stratification, seeds, ranges and titles modes, validation, the split report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from lvm_core.contracts.layout import DEFAULT_SPLIT_SEED, SPLITS_SCHEMA
from lvm_core.data.coherence import assign_bins
from lvm_core.data.splits import SplitConfig, parse_ranges, split_articles, split_report, splits_table


def binned_frame(n: int = 200, seed: int = 0, n_short: int = 0, n_bins: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    coh = pl.DataFrame(
        {
            "article_id": rng.permutation(np.arange(5000, 5000 + n + n_short)).astype(np.int64),
            "n_chunks": np.r_[rng.integers(6, 60, n), np.full(n_short, 3)].astype(np.int32),
            "coherence": np.r_[rng.beta(4, 5, n), rng.beta(4, 5, n_short)],
        }
    )
    return assign_bins(coh, n_bins=n_bins, min_chunks=6)[0]


def test_parse_ranges() -> None:
    assert parse_ranges("1500-1999,4000-4499,7672-8470") == [(1500, 1999), (4000, 4499), (7672, 8470)]
    assert parse_ranges(" 3 , 5-5,4-9") == [(3, 3), (5, 5), (4, 9)]  # single numbers, overlaps ok
    for bad, msg in (("12-5", "end 5 is before start 12"), ("a-b", "malformed range 'a-b'"), ("1-2,,3", "malformed"),
                     ("", "empty"), ("1-2-3", "malformed"), ("-4", "malformed|negative")):
        with pytest.raises(ValueError, match=msg):
            parse_ranges(bad)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"split fractions sum to 1.1, must be 1"):
        SplitConfig(fractions=(0.8, 0.2, 0.1))
    with pytest.raises(ValueError, match=r"ood=-0.1 must be in \[0, 1\]"):
        SplitConfig(fractions=(1.0, 0.1, -0.1))
    with pytest.raises(ValueError, match="unknown split mode"):
        SplitConfig(mode="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs ood_ranges"):
        SplitConfig(mode="ranges")
    with pytest.raises(ValueError, match="needs holdout_titles"):
        SplitConfig(mode="titles")
    with pytest.raises(ValueError, match="invalid holdout_titles pattern"):
        SplitConfig(mode="titles", holdout_titles=["(unclosed"])
    with pytest.raises(ValueError, match="end 5 is before start 12"):
        SplitConfig(mode="ranges", ood_ranges="12-5")
    # three fractions are the older train,val,ood: no test split
    assert SplitConfig(fractions=[0.7, 0.2, 0.1]).fractions == (0.7, 0.2, 0.0, 0.1)  # type: ignore[arg-type]
    assert SplitConfig(fractions=[0.6, 0.2, 0.1, 0.1]).fractions == (0.6, 0.2, 0.1, 0.1)  # type: ignore[arg-type]
    cfg = SplitConfig(mode="titles", holdout_titles=["^A", "^B"])
    assert hash(cfg) == hash(SplitConfig(mode="titles", holdout_titles=("^A", "^B")))
    assert cfg.to_dict()["holdout_titles"] == ["^A", "^B"]
    with pytest.raises(ValueError, match="list of regex patterns"):
        SplitConfig(mode="titles", holdout_titles="^A")  # type: ignore[arg-type]


def test_stratified_keeps_per_bin_proportions() -> None:
    coh = binned_frame(200, n_short=15)
    sp = split_articles(coh, SplitConfig())
    assert sp.schema == {"article_id": pl.Int64, "split": pl.Utf8, "n_chunks": pl.Int32,
                         "coherence": pl.Float64, "coherence_bin": pl.Int32}
    assert sp["article_id"].to_list() == coh["article_id"].to_list()  # input order kept
    per_bin = sp.drop_nulls("coherence_bin").group_by("coherence_bin", "split").len()
    for b in range(5):
        rows = per_bin.filter(pl.col("coherence_bin") == b)
        counts = dict(zip(rows["split"].to_list(), rows["len"].to_list()))
        assert counts == {"train": 28, "val": 4, "test": 4, "ood": 4}  # 40 per bin -> exactly 70/10/10/10
    assert set(sp.filter(pl.col("coherence_bin").is_null())["split"].to_list()) == {"train"}


def test_small_bins_still_get_every_held_out_split() -> None:
    coh = binned_frame(30, n_bins=5)  # 6 articles per bin: 4.2 + 0.6 + 0.6 + 0.6
    sp = split_articles(coh, SplitConfig())
    counts = sp["split"].value_counts()
    got = dict(zip(counts["split"].to_list(), counts["count"].to_list()))
    assert got["train"] == 21 and got["val"] + got["test"] + got["ood"] == 9
    assert min(got["val"], got["test"], got["ood"]) >= 2
    per_bin = sp.group_by("coherence_bin").agg((pl.col("split") != "train").sum().alias("held"))
    assert sorted(per_bin["held"].to_list()) in ([1, 2, 2, 2, 2], [2, 2, 2, 2, 1])
    legacy = split_articles(coh, SplitConfig(fractions=(0.8, 0.1, 0.1)))  # no test split asked: none given
    assert "test" not in legacy["split"].to_list()


def test_seed_reproducible_and_order_independent() -> None:
    coh = binned_frame(120)
    a = split_articles(coh, SplitConfig(seed=7))
    b = split_articles(coh, SplitConfig(seed=7))
    assert a.equals(b)
    c = split_articles(coh, SplitConfig(seed=8))
    assert not a["split"].equals(c["split"])
    shuffled = split_articles(coh.sample(fraction=1.0, shuffle=True, seed=3), SplitConfig(seed=7))
    assert dict(zip(*shuffled.select("article_id", "split").to_dict(as_series=False).values())) == dict(
        zip(*a.select("article_id", "split").to_dict(as_series=False).values())
    )
    rep_a, rep_b = split_report(a, SplitConfig(seed=7)), split_report(shuffled, SplitConfig(seed=7))
    assert rep_a["content_hash"] == rep_b["content_hash"]
    assert rep_a["content_hash"] != split_report(c, SplitConfig(seed=8))["content_hash"]


def test_ranges_mode() -> None:
    coh = binned_frame(106)
    cfg = SplitConfig(mode="ranges", ood_ranges="10-19,100-105", seed=1)
    sp = split_articles(coh, cfg)
    split = sp["split"].to_numpy()
    ood_pos = np.r_[10:20, 100:106]
    assert set(split[ood_pos]) == {"ood"} and (split == "ood").sum() == 16
    n_val, n_test = int((split == "val").sum()), int((split == "test").sum())
    assert 8 <= n_val <= 12 and 8 <= n_test <= 12  # 0.1/0.9 each of the 90 remaining, by bin
    with_val = split_articles(coh, SplitConfig(mode="ranges", ood_ranges="0-9", val_ranges="50-54,60"))
    sv = with_val["split"].to_numpy()
    assert set(np.flatnonzero(sv == "val")) == {50, 51, 52, 53, 54, 60}
    assert (sv == "train").sum() + (sv == "test").sum() == 106 - 10 - 6
    assert 9 <= (sv == "test").sum() <= 14  # test drawn from the rest: 0.1/0.8 of 90
    with pytest.raises(ValueError, match=r"unknown article range 1500-1999: dataset has 106 articles"):
        split_articles(coh, SplitConfig(mode="ranges", ood_ranges="0-5,1500-1999"))
    with pytest.raises(ValueError, match="both val_ranges"):
        split_articles(coh, SplitConfig(mode="ranges", ood_ranges="0-9", val_ranges="5-12"))


def test_titles_mode() -> None:
    coh = binned_frame(60)
    titles = pl.Series([f"Physics {i}" if i % 6 == 0 else f"History of {i}" for i in range(60)])
    cfg = SplitConfig(mode="titles", holdout_titles=[r"^Physics\b", r"(?i)^nothing"])
    sp = split_articles(coh, cfg, titles=titles)
    split = sp["split"].to_numpy()
    assert set(np.flatnonzero(split == "ood")) == set(range(0, 60, 6))
    assert (split == "val").sum() >= 3
    with pytest.raises(ValueError, match="needs the article titles"):
        split_articles(coh, cfg)


def test_report_and_parquet_table(tmp_path) -> None:
    coh = binned_frame(150, n_short=10)
    cfg = SplitConfig()
    sp = split_articles(coh, cfg)
    rep = split_report(sp, cfg)
    json.dumps(rep)  # the report is splits.json
    assert rep["seed"] == DEFAULT_SPLIT_SEED and rep["mode"] == "stratified"
    assert rep["fractions"] == {"train": 0.7, "val": 0.1, "test": 0.1, "ood": 0.1}
    assert rep["ood_kind"] == "in_distribution"  # stratified: ood is a second in-distribution sample
    assert split_report(sp, SplitConfig(mode="ranges", ood_ranges="0-9"))["ood_kind"] == "shift"
    assert sum(rep["splits"][s]["articles"] for s in ("train", "val", "test", "ood")) == 160
    assert rep["splits"]["train"]["chunks"] == int(sp.filter(pl.col("split") == "train")["n_chunks"].sum())
    val_coh = sp.filter((pl.col("split") == "val") & pl.col("coherence_bin").is_not_null())["coherence"]
    assert rep["splits"]["val"]["coherence_mean"] == pytest.approx(val_coh.mean())
    for s in ("val", "ood"):
        assert 0 <= rep["splits"][s]["ks_statistic_vs_train"] < 0.35  # stratified -> similar distributions
        assert 0 < rep["splits"][s]["ks_pvalue_vs_train"] <= 1
        assert abs(rep["splits"][s]["mean_diff_vs_train"]) < 0.05
    assert len(rep["content_hash"]) == 64
    table = splits_table(sp)
    assert table.schema.equals(SPLITS_SCHEMA)
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "splits.parquet")
    back = pl.read_parquet(tmp_path / "splits.parquet")
    assert back["split"].to_list() == sp["split"].to_list()
    assert isinstance(table, pa.Table)


def test_ranges_mode_parity_is_visible_in_report() -> None:
    # held-out range = the most coherent articles: KS vs train must show the mismatch
    coh = binned_frame(100).sort("coherence")
    cfg = SplitConfig(mode="ranges", ood_ranges="80-99")
    rep = split_report(split_articles(coh, cfg), cfg)
    assert rep["splits"]["ood"]["ks_statistic_vs_train"] == pytest.approx(1.0)
    assert rep["splits"]["ood"]["mean_diff_vs_train"] > 0.1
