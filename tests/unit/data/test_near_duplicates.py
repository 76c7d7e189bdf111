"""The near-duplicate scan: its cost bound from the data size, the bounded IVF search, and its recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lvm_core.data import leakage
from lvm_core.data.hash_codes import hash_codes
from lvm_core.data.retrieval import nearest
from lvm_core.data.retrieval.nearest import (
    EXACT_PAIR_BUDGET,
    ivf_plan,
    max_cosine,
    max_cosine_backend,
    max_cosine_ivf,
    max_cosine_recall,
)
from tests.fixtures.vectors import chunk_table, random_unit


def _clustered(n: int, dim: int = 32, n_topics: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = random_unit(rng, n_topics, dim)
    x = topics[rng.integers(0, n_topics, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _with_near_dups(n: int = 6000, n_dup: int = 60, seed: int = 0):
    """Unit rows, query rows (every third row), bank rows (the rest); the first n_dup queries are near
    copies (cos ~0.999) of bank rows."""
    rng = np.random.default_rng(seed)
    v = _clustered(n, seed=seed)
    q, b = np.arange(0, n, 3), np.setdiff1d(np.arange(n), np.arange(0, n, 3))
    src = b[rng.choice(b.size, n_dup, replace=False)]
    x = v[src] + 0.04 * random_unit(rng, n_dup, v.shape[1]) / np.sqrt(2)
    v[q[:n_dup]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return v, q, b


def test_the_plan_bounds_the_work_linearly_in_the_data_size() -> None:
    small, large = ivf_plan(30_000, 70_000), ivf_plan(300_000, 700_000)
    assert small.nlist == -(-70_000 // small.list_rows) and large.nlist == -(-700_000 // large.list_rows)
    # the bound per query is constant, so 10x the rows cost 10x the pairs (the exact scan: 100x)
    assert large.pair_bound == 10 * small.pair_bound
    assert large.exact_pairs == 100 * small.exact_pairs
    assert small.pair_bound == 30_000 * small.nprobe * small.list_rows
    assert ivf_plan(5, 10).nlist == 1 and ivf_plan(5, 10).nprobe == 1  # never more probes than lists
    with pytest.raises(ValueError):
        ivf_plan(10, 10, list_rows=0)


def test_the_backend_is_exact_within_the_budget_and_bounded_above_it() -> None:
    assert max_cosine_backend(1000, n_query=1000) == "exact"
    over = EXACT_PAIR_BUDGET // 1000 + 1
    assert max_cosine_backend(over, n_query=1000) == "ivf"
    assert max_cosine_backend(over, use_faiss=False, n_query=1000) == "exact"  # forced exact
    assert max_cosine_backend(over) in ("exact", "faiss-flat")  # no query count: exact, by bank size


def test_bounded_ivf_finds_the_near_duplicates_scores_exactly_and_keeps_to_its_bound() -> None:
    v, q, b = _with_near_dups()
    exact = max_cosine(v, q, b)
    plan = ivf_plan(q.size, b.size, list_rows=256, nprobe=2)
    approx, pairs = max_cosine_ivf(v, q, b, plan, group_rows=500)
    assert plan.nlist == 16
    assert (approx <= exact + 1e-5).all()  # a found cosine is a true one
    dup = exact >= 0.995
    assert dup.sum() >= 60 and (approx[dup] >= 0.995).all()
    assert pairs < plan.exact_pairs / 4
    assert pairs <= 1.5 * plan.pair_bound  # lists are balanced to ~list_rows, so the bound holds
    # max_cosine's ivf backend is the same search
    np.testing.assert_array_equal(max_cosine(v, q, b, backend="ivf", plan=plan), approx)


def test_recall_is_measured_against_an_exact_scan_of_a_seeded_sample() -> None:
    v, q, b = _with_near_dups()
    exact = max_cosine(v, q, b)
    perfect = max_cosine_recall(v, q, b, exact, 0.995, sample_size=500, seed=3)
    assert perfect["sample_size"] == 500 and perfect["seed"] == 3
    assert perfect["top1"] == 1.0 and perfect["near_dup_recall"] == 1.0 and perfect["near_dup_in_sample"] > 0
    # a search that misses every near duplicate is caught by the measurement
    blind = np.where(exact >= 0.995, 0.5, exact).astype(np.float32)
    missed = max_cosine_recall(v, q, b, blind, 0.995, sample_size=500, seed=3)
    assert missed["near_dup_recall"] == 0.0 and missed["top1"] < 1.0
    assert missed["by_level"]["0.995"] == {"n": perfect["near_dup_in_sample"], "recall": 0.0}
    # the same seed gives the same sample
    assert max_cosine_recall(v, q, b, blind, 0.995, sample_size=500, seed=3) == missed


def test_scan_leakage_above_the_budget_reports_the_bound_and_the_recall(monkeypatch) -> None:
    v, q, b = _with_near_dups(3000, 30)
    split = np.full(v.shape[0], "train", dtype=object)
    split[q] = "val"
    ids = np.arange(v.shape[0], dtype=np.int64)
    hashes = np.array([f"{i:040x}" for i in range(v.shape[0])])
    exact = leakage.scan_leakage(ids, hash_codes(hashes), v, split.astype(str))
    monkeypatch.setattr(nearest, "EXACT_PAIR_BUDGET", 1000)
    monkeypatch.setattr(leakage, "ivf_plan", lambda nq, nb: ivf_plan(nq, nb, list_rows=200, nprobe=2))
    bounded = leakage.scan_leakage(ids, hash_codes(hashes), v, split.astype(str))
    assert (exact.backend, bounded.backend) == ("exact", "ivf")
    np.testing.assert_array_equal(bounded.near_leak, exact.near_leak)
    rep = bounded.report()["near_duplicates"]
    assert rep["search"]["nlist"] == 10 and rep["search"]["pairs_scored"] < rep["search"]["exact_pairs"]
    assert rep["near_dup_recall"]["sample_size"] == 500 and rep["near_dup_recall"]["near_dup_recall"] == 1.0
    assert rep["search"]["exact_pairs"] == q.size * (v.shape[0] - q.size)
    assert "search" not in exact.report()["near_duplicates"]  # an exact scan's report is as it always was


def test_split_codes_and_hash_codes_give_the_report_of_names_and_strings(tmp_path: Path) -> None:
    v, aids, _, hashes, _ = chunk_table([8, 8, 8, 8, 8], dim=16, noise=0.5)
    hashes[17] = hashes[2]  # a text leak
    split = np.repeat(np.array(["train", "train", "val", "ood", ""]), 8)
    by_name = leakage.scan_leakage(aids, hashes, v, split).report()
    codes = leakage.split_codes(split)
    assert codes.dtype == np.int8 and codes.tolist()[::8] == [0, 0, 1, 3, -1]
    by_code = leakage.scan_leakage(aids, hash_codes(hashes), v, codes).report()
    assert by_code == by_name
    assert by_code["text_hash_overlap"]["val"] == 1
    with pytest.raises(leakage.DataContractError, match="unknown split"):
        leakage.split_codes(np.array(["train", "holdout"]))
    with pytest.raises(leakage.DataContractError, match="unknown split code"):
        leakage.split_codes(np.array([0, 7], dtype=np.int8))


def test_code_leaks_match_eval_rows_whose_code_is_in_train() -> None:
    codes = np.array([5, 9, 5, 7, 9, 1], dtype=np.uint64)
    train = np.array([True, True, False, False, False, False])
    evalmask = np.array([False, False, True, True, True, False])
    np.testing.assert_array_equal(leakage.code_leaks(codes, train, evalmask), [0, 0, 1, 0, 1, 0])
    assert not leakage.code_leaks(codes, np.zeros(6, bool), evalmask).any()
