"""Leakage counts on crafted overlaps, row masks and window purging."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.leakage import purge_leaking_windows, scan_leakage
from lvm_core.data.windows import build_windows
from tests.fixtures.vectors import random_unit


@pytest.fixture()
def crafted():
    """4 articles x 8 chunks: 1, 2 train; 3 val; 4 ood; 5 unsplit. Random vectors are far apart (d=32)."""
    rng = np.random.default_rng(0)
    ids = np.repeat([1, 2, 3, 4, 5], 8).astype(np.int64)
    ci = np.tile(np.arange(8), 5).astype(np.int32)
    split = np.repeat(np.array(["train", "train", "val", "ood", ""]), 8)
    hashes = np.array([f"h{i}" for i in range(40)])
    v = random_unit(rng, 40, 32)
    # val row 17 repeats the text of train row 2 (same text -> same vector)
    hashes[17] = hashes[2]
    v[17] = v[2]
    # ood row 30: near duplicate of train row 12 (cos ~ 0.999) with different text
    noise = random_unit(rng, 1, 32)[0]
    v[30] = v[12] + 0.04 * noise
    v[30] /= np.linalg.norm(v[30])
    # ood row 27: same text as a val row -> not train leakage
    hashes[27] = hashes[20]
    # the unsplit article duplicates train text: ignored
    hashes[33] = hashes[3]
    return ids, ci, hashes, v, split


def test_counts_on_crafted_overlaps(crafted) -> None:
    ids, ci, hashes, v, split = crafted
    scan = scan_leakage(ids, hashes, v, split)
    rep = scan.report()
    assert rep["article_overlap"] == 0
    assert rep["rows"] == {"train": 16, "val": 8, "test": 0, "ood": 8}
    assert rep["text_hash_overlap"] == {"val": 1, "test": 0, "ood": 0, "rate": pytest.approx(1 / 16)}
    nd = rep["near_duplicates"]
    assert (nd["val"], nd["ood"]) == (1, 1)  # the exact text duplicate counts here too
    assert nd["rate"] == pytest.approx(2 / 16) and nd["threshold"] == 0.995
    assert nd["max_cos"] == pytest.approx(1.0, abs=1e-5)
    assert rep["leaking_rows"] == {"val": 1, "test": 0, "ood": 1, "rate": pytest.approx(2 / 16)}
    mask = scan.leaking_rows
    assert np.flatnonzero(mask).tolist() == [17, 30]
    strict = scan_leakage(ids, hashes, v, split, near_dup_threshold=0.9999).report()
    assert strict["near_duplicates"]["ood"] == 0 and strict["near_duplicates"]["val"] == 1


def test_blockwise_near_duplicates_match_brute_force() -> None:
    rng = np.random.default_rng(4)
    n = 300
    v = random_unit(rng, n, 8)  # d=8: many close pairs
    split = rng.choice(np.array(["train", "val", "ood", ""]), size=n, p=[0.6, 0.15, 0.15, 0.1])
    ids = np.arange(n, dtype=np.int64)
    hashes = [f"x{i}" for i in range(n)]
    scan = scan_leakage(ids, hashes, v, split, near_dup_threshold=0.9, query_block=7, train_block=11)
    train = v[split == "train"]
    ev = np.isin(split, ["val", "ood"])
    brute = (v[ev] @ train.T).max(axis=1)
    assert np.allclose(scan.max_train_cos[ev], brute, atol=1e-6)
    assert np.isnan(scan.max_train_cos[~ev]).all()
    assert scan.near_leak.sum() == (brute >= 0.9).sum() > 0


def test_article_in_two_splits(crafted) -> None:
    ids, ci, hashes, v, split = crafted
    split = split.copy()
    split[8] = "val"  # one row of train article 2 marked val
    split[24] = "train"  # one row of ood article 4 marked train
    rep = scan_leakage(ids, hashes, v, split).report()
    assert rep["article_overlap"] == 2 and rep["overlapping_articles"] == [2, 4]


def test_purge_removes_every_window_touching_a_leaking_row(crafted) -> None:
    ids, ci, hashes, v, split = crafted
    scan = scan_leakage(ids, hashes, v, split)
    val_windows = build_windows(ids, ci, 3, articles=np.array([3]))  # rows 16..23, targets 19..23
    assert len(val_windows) == 5
    kept, removed = purge_leaking_windows(val_windows, scan.leaking_rows)
    assert removed == 2 and len(kept) == 3  # row 17 is in the context of windows 0,1
    assert kept.context_rows.min() > 17
    assert purge_leaking_windows(kept, scan.leaking_rows)[1] == 0  # nothing left that leaks
    ood_windows = build_windows(ids, ci, 3, articles=np.array([4]))  # targets 27..31; row 30 leaks
    kept_ood, removed_ood = purge_leaking_windows(ood_windows, scan.leaking_rows)
    # row 30 is the target of the window starting at 27 and in the context of the one starting at 28
    assert removed_ood == 2 and kept_ood.target_rows.tolist() == [27, 28, 29]
    empty, n0 = purge_leaking_windows(kept_ood.subset(np.zeros(3, bool)), scan.leaking_rows)
    assert n0 == 0 and len(empty) == 0


def test_bad_inputs(crafted) -> None:
    ids, ci, hashes, v, split = crafted
    with pytest.raises(DataContractError, match="not aligned"):
        scan_leakage(ids, hashes, v[:-1], split)
    bad = split.copy()
    bad[0] = "holdout"
    with pytest.raises(DataContractError, match="unknown split"):
        scan_leakage(ids, hashes, v, bad)


def test_parity_after_the_purge_drops_eval_articles_with_no_window_left() -> None:
    import polars as pl

    from lvm_core.data.build.analyse import _articles_after_purge

    ids = np.repeat([1, 2, 3, 4], 6).astype(np.int64)
    ci = np.tile(np.arange(6), 4).astype(np.int32)
    split_df = pl.DataFrame({"article_id": [1, 2, 3, 4], "split": ["train", "train", "val", "val"]})
    seqs = {s: build_windows(ids, ci, context_len=3, articles=np.array(a)) for s, a in
            [("train", [1, 2]), ("val", [3, 4])]}
    leaking = np.zeros(ids.size, dtype=bool)
    leaking[ids == 4] = True  # every window of article 4 leaks
    seqs["val"], purged = purge_leaking_windows(seqs["val"], leaking)
    assert purged == 3 and len(seqs["val"]) == 3
    kept = _articles_after_purge(split_df, seqs)
    assert kept["article_id"].to_list() == [1, 2, 3]  # train stays whole; val article 4 is gone


def test_val_test_overlap_is_counted(crafted) -> None:
    """A test chunk repeating a val chunk (text, or nearly its vector) is counted; a train repeat is not."""
    ids, ci, hashes, v, split = crafted
    split = split.copy()
    split[32:40] = "test"  # article 5 becomes test; its row 33 repeats train row 3's text: train leakage only
    clean = scan_leakage(ids, hashes, v, split).report()
    assert clean["val_test"] == {"test_rows": 8, "text_hash_overlap": 0, "near_duplicates": 0, "rate": 0.0}
    assert clean["text_hash_overlap"]["test"] == 1
    hashes, v = hashes.copy(), v.copy()
    hashes[34] = hashes[20]  # test row 34 repeats val row 20's text
    v[35] = v[21] + 0.03 * v[0]  # test row 35: a near duplicate of val row 21
    v[35] /= np.linalg.norm(v[35])
    rep = scan_leakage(ids, hashes, v, split).report()["val_test"]
    assert (rep["text_hash_overlap"], rep["near_duplicates"], rep["rate"]) == (1, 1, pytest.approx(2 / 8))
