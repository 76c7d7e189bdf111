"""Article coherence, quantile bins, plots and drift between two builds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.coherence import (
    article_coherence,
    assign_bins,
    coherence_drift,
    plot_coherence_drift,
    plot_coherence_histogram,
)


def rotation_vectors(angles: list[float]) -> np.ndarray:
    """Unit vectors in a plane at the given angles: cos between neighbours = cos(angle difference)."""
    a = np.asarray(angles)
    v = np.zeros((len(a), 3), dtype=np.float32)
    v[:, 0] = np.cos(a)
    v[:, 1] = np.sin(a)
    return v


def test_coherence_of_known_sequences() -> None:
    # article 5: steps of 0.3 and 0.6 rad; article 2: single chunk; article 9: two identical chunks
    v = np.concatenate([rotation_vectors([0.0, 0.3, 0.9]), rotation_vectors([1.0]), rotation_vectors([0.2, 0.2])])
    ids = np.array([5, 5, 5, 2, 9, 9], dtype=np.int64)
    ci = np.array([0, 1, 2, 0, 0, 1], dtype=np.int32)
    coh = article_coherence(v, ids, ci)
    assert coh["article_id"].to_list() == [5, 2, 9]  # dataset order, not sorted
    assert coh["n_chunks"].to_list() == [3, 1, 2]
    pair = np.cos([0.3, 0.6])
    assert coh["coherence"][0] == pytest.approx(pair.mean(), abs=1e-6)
    assert coh["coherence_std"][0] == pytest.approx(pair.std(), abs=1e-6)
    assert coh["coherence"][1] is None and coh["coherence_std"][1] is None
    assert coh["coherence"][2] == pytest.approx(1.0, abs=1e-6)
    assert coh["coherence_std"][2] == pytest.approx(0.0, abs=1e-6)
    assert coh.schema == {"article_id": pl.Int64, "n_chunks": pl.Int32, "coherence": pl.Float64, "coherence_std": pl.Float64}


def test_coherence_blockwise_matches_direct_and_handles_memmap(tmp_path) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=60)
    ids = np.repeat(np.arange(len(lengths)), lengths).astype(np.int64)
    ci = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
    v = rng.standard_normal((len(ids), 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    path = tmp_path / "emb.npy"
    np.save(path, v)
    mm = np.load(path, mmap_mode="r")
    from lvm_core.data.coherence import consecutive_cosines

    coh = article_coherence(mm, ids, ci)
    start = 0
    for n, c in zip(lengths, coh["coherence"].to_list()):
        block = v[start : start + n]
        start += n
        if n < 2:
            assert c is None
        else:
            assert c == pytest.approx(float(np.mean(np.sum(block[:-1] * block[1:], axis=1))), abs=1e-6)
    assert np.allclose(consecutive_cosines(mm, block=7), np.sum(v[:-1] * v[1:], axis=1), atol=1e-6)


def test_coherence_rejects_bad_layout() -> None:
    v = rotation_vectors([0.0, 0.1, 0.2])
    with pytest.raises(DataContractError, match="article 1"):
        article_coherence(v, np.array([1, 1, 1]), np.array([0, 2, 1], dtype=np.int32))
    with pytest.raises(DataContractError, match="not aligned"):
        article_coherence(v, np.array([1, 1]), np.array([0, 1], dtype=np.int32))


def frame(coherences: list[float | None], n_chunks: list[int] | None = None) -> pl.DataFrame:
    n = len(coherences)
    return pl.DataFrame(
        {
            "article_id": np.arange(100, 100 + n, dtype=np.int64),
            "n_chunks": np.asarray(n_chunks if n_chunks is not None else [10] * n, dtype=np.int32),
            "coherence": pl.Series(coherences, dtype=pl.Float64),
        }
    )


def test_quantile_bins_equal_counts_and_eligibility() -> None:
    values = sorted(np.random.default_rng(5).uniform(0.1, 0.8, 22).tolist())
    coh = frame(values + [0.99, None, 0.95], [10] * 22 + [3, 1, 6])  # short, null, exactly min_chunks
    binned, edges = assign_bins(coh, n_bins=5, min_chunks=6)
    assert len(edges) == 6
    assert edges[0] == pytest.approx(values[0]) and edges[-1] == pytest.approx(0.95)  # 0.99 is too short
    assert edges[1] == pytest.approx(np.quantile(values + [0.95], 0.2))
    bins = binned["coherence_bin"].to_list()
    assert bins[22] is None and bins[23] is None  # too short / null coherence
    assert bins[24] == 4  # n_chunks == min_chunks is eligible
    counts = binned["coherence_bin"].drop_nulls().value_counts().sort("coherence_bin")["count"].to_list()
    assert sum(counts) == 23 and max(counts) - min(counts) <= 1
    # monotone: a higher coherence never lands in a lower bin
    elig = binned.drop_nulls("coherence_bin").sort("coherence")
    assert elig["coherence_bin"].to_list() == sorted(elig["coherence_bin"].to_list())
    again, edges2 = assign_bins(coh, n_bins=5, min_chunks=6)
    assert again.equals(binned) and edges2 == edges
    assert binned["coherence_bin"].dtype == pl.Int32


def test_bins_with_few_articles_and_ties() -> None:
    few, edges = assign_bins(frame([0.2, 0.4, 0.6]), n_bins=5, min_chunks=6)
    assert sorted(few["coherence_bin"].to_list()) == [0, 1, 2] and len(edges) == 4
    one, edges = assign_bins(frame([0.3]), n_bins=5, min_chunks=6)
    assert one["coherence_bin"].to_list() == [0] and edges == [0.3, 0.3]
    tied, edges = assign_bins(frame([0.5] * 8 + [0.9, 0.1]), n_bins=5, min_chunks=6)
    got = tied["coherence_bin"].to_list()
    assert len(set(got)) == len(edges) - 1 < 5
    assert len({b for b, c in zip(got, [0.5] * 8) if c == 0.5}) == 1  # ties share a bin
    assert set(got) == set(range(len(edges) - 1))  # no empty bin numbers
    none, edges = assign_bins(frame([0.5, 0.6], [2, 3]), n_bins=5, min_chunks=6)
    assert none["coherence_bin"].null_count() == 2 and edges == []
    with pytest.raises(ValueError, match="n_bins"):
        assign_bins(frame([0.1]), n_bins=0, min_chunks=6)


def test_plots_written_atomically(tmp_path) -> None:
    rng = np.random.default_rng(1)
    a = frame(list(rng.uniform(0.2, 0.6, 80)))
    b = frame(list(rng.uniform(0.3, 0.7, 60)))
    binned, edges = assign_bins(a, 5, 6)
    h = plot_coherence_histogram(binned, edges, tmp_path / "plots" / "coherence.png", "sample")
    d = plot_coherence_drift(a, b, tmp_path / "plots" / "drift.png", labels=("old", "new"))
    for p in (h, d):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(x.name for x in (tmp_path / "plots").iterdir()) == ["coherence.png", "drift.png"]


def test_coherence_drift_numbers() -> None:
    a = frame([0.1, 0.2, 0.3, 0.4])
    same = coherence_drift(a, a)
    assert same["ks_statistic"] == 0.0 and same["mean_diff"] == 0.0 and same["n_a"] == 4
    b = frame([0.6, 0.7, 0.8, None], [10, 10, 1, 10])  # the 1-chunk and null rows do not count
    d = coherence_drift(a, b)
    assert d["n_b"] == 2
    assert d["mean_diff"] == pytest.approx(0.65 - 0.25)
    assert d["ks_statistic"] == pytest.approx(1.0)
    assert 0 < d["ks_pvalue"] < 1
    empty = coherence_drift(a, frame([]))
    assert empty["ks_statistic"] is None and empty["mean_b"] is None


def test_bins_are_consecutive_and_non_empty_on_tie_heavy_inputs() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 15))
        vals = rng.choice([0.1, 0.2, 0.5, 0.7], size=n).tolist()
        k_req = int(rng.integers(1, 8))
        binned, edges = assign_bins(frame(vals), n_bins=k_req, min_chunks=6)
        got = binned["coherence_bin"].to_list()
        k = len(edges) - 1
        assert 1 <= k <= min(k_req, n)
        assert set(got) == set(range(k))
        order = np.argsort(vals, kind="stable")
        assert np.all(np.diff(np.asarray(got)[order]) >= 0)
