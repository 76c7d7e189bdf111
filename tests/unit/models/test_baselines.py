"""Trivial baselines on data with known answers; persistence without pickle."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lvm_core.data.windows import SequenceSet, check_windows
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.baselines.base import Baseline, BaselineFileError
from lvm_core.models.baselines.collection import fit_baselines, load_baseline, save_baselines
from lvm_core.models.baselines.recency import RecencyWeightedMean
from lvm_core.models.baselines.ridge import RidgeBaseline
from lvm_core.models.baselines.simple import ContextMean, CopyLast
from lvm_core.models.predict import mean_cosine, predict_windows
from tests.fixtures.vectors import random_unit


def windows_over_articles(lengths: list[int], ctx: int) -> SequenceSet:
    """Stride-1 windows inside consecutive articles laid out row after row."""
    ctx_rows, tgt_rows, art, tci = [], [], [], []
    start = 0
    for a, length in enumerate(lengths):
        for i in range(length - ctx):
            ctx_rows.append(np.arange(start + i, start + i + ctx))
            tgt_rows.append(start + i + ctx)
            art.append(a)
            tci.append(i + ctx)
        start += length
    return SequenceSet(
        np.asarray(ctx_rows, dtype=np.int64),
        np.asarray(tgt_rows, dtype=np.int64),
        np.asarray(art, dtype=np.int64),
        np.asarray(tci, dtype=np.int32),
    )


def copy_last_data(rng: np.random.Generator, n_windows: int, ctx: int, d: int) -> tuple[np.ndarray, SequenceSet]:
    """Windows whose target row *is* the last context row."""
    vectors = random_unit(rng, n_windows * ctx, d)
    ctx_rows = np.arange(n_windows * ctx, dtype=np.int64).reshape(n_windows, ctx)
    seqs = SequenceSet(ctx_rows, ctx_rows[:, -1].copy(), np.arange(n_windows) // 10, np.full(n_windows, ctx, np.int32))
    return vectors, seqs


def linear_map_data(
    rng: np.random.Generator, n_windows: int, ctx: int, d: int
) -> tuple[np.ndarray, SequenceSet, np.ndarray, np.ndarray]:
    """Targets = flattened context @ W + b exactly (each window owns ctx + 1 fresh rows)."""
    w_true = rng.standard_normal((ctx * d, d)).astype(np.float64) / np.sqrt(ctx * d)
    b_true = rng.standard_normal(d) * 0.1
    vectors = np.zeros((n_windows * (ctx + 1), d), dtype=np.float32)
    ctx_rows = np.zeros((n_windows, ctx), dtype=np.int64)
    tgt_rows = np.zeros(n_windows, dtype=np.int64)
    for i in range(n_windows):
        base = i * (ctx + 1)
        c = random_unit(rng, ctx, d)
        vectors[base : base + ctx] = c
        vectors[base + ctx] = (c.reshape(-1).astype(np.float64) @ w_true + b_true).astype(np.float32)
        ctx_rows[i] = np.arange(base, base + ctx)
        tgt_rows[i] = base + ctx
    seqs = SequenceSet(ctx_rows, tgt_rows, np.arange(n_windows) // 5, np.full(n_windows, ctx, np.int32))
    return vectors, seqs, w_true, b_true


def test_copy_last_returns_last_context_vector() -> None:
    rng = np.random.default_rng(0)
    ctx = rng.standard_normal((7, 4, 12)).astype(np.float32) * 3.0  # not unit: output must be normalised
    out = CopyLast().predict(ctx)
    np.testing.assert_allclose(out, l2_normalize(ctx[:, -1]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_context_mean_is_normalised_mean() -> None:
    rng = np.random.default_rng(1)
    ctx = rng.standard_normal((5, 3, 8)).astype(np.float32)
    expected = ctx.mean(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(ContextMean().predict(ctx), expected, atol=1e-6)


def test_recency_weights_concentrate_on_last_slot_when_target_is_last() -> None:
    rng = np.random.default_rng(2)
    vectors, seqs = copy_last_data(rng, n_windows=300, ctx=5, d=16)
    model = RecencyWeightedMean().fit(vectors, seqs)
    assert model.weights is not None and model.weights.shape == (5,)
    assert model.weights[-1] > 0.99, model.weights
    assert np.abs(model.weights[:-1]).max() < 0.01, model.weights
    assert model.train_cosine == pytest.approx(1.0, abs=1e-6)


def test_recency_weights_beat_uniform_mean_on_recency_data() -> None:
    """Targets close to the later slots: fitted weights rise towards the last slot and beat the mean."""
    rng = np.random.default_rng(3)
    d, ctx, n = 24, 5, 400
    vectors = random_unit(rng, n * (ctx + 1), d)
    ctx_rows = np.zeros((n, ctx), dtype=np.int64)
    tgt_rows = np.zeros(n, dtype=np.int64)
    true_w = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    for i in range(n):
        base = i * (ctx + 1)
        ctx_rows[i] = np.arange(base, base + ctx)
        tgt_rows[i] = base + ctx
        vectors[base + ctx] = l2_normalize(true_w @ vectors[base : base + ctx] + 0.05 * rng.standard_normal(d))
    seqs = SequenceSet(ctx_rows, tgt_rows, np.arange(n), np.full(n, ctx, np.int32))
    model = RecencyWeightedMean().fit(vectors, seqs)
    assert np.all(np.diff(model.weights) > 0), model.weights
    np.testing.assert_allclose(model.weights, true_w, atol=0.05)
    assert mean_cosine(model, vectors, seqs) > mean_cosine(ContextMean(), vectors, seqs) + 0.05


@pytest.mark.parametrize("n_windows", [400, 30])  # primal (n > N*D) and dual (n < N*D)
def test_ridge_recovers_a_linear_map(n_windows: int) -> None:
    rng = np.random.default_rng(4)
    ctx, d = 3, 8
    vectors, seqs, w_true, b_true = linear_map_data(rng, n_windows, ctx, d)
    model = RidgeBaseline(alpha=1e-8).fit(vectors, seqs)
    assert model.solver == ("primal" if n_windows > ctx * d else "dual")
    x = vectors[seqs.context_rows].reshape(n_windows, -1)
    expected = l2_normalize(x @ w_true + b_true)
    np.testing.assert_allclose(predict_windows(model, vectors, seqs), expected, atol=1e-4)
    if n_windows > ctx * d:  # identifiable only with more windows than features
        anchor_map = np.kron(model.anchor_weights[:, None], np.eye(d))  # the recency mean as a (ctx*d, d) map
        np.testing.assert_allclose(model.coef + anchor_map, w_true, atol=1e-3)
        np.testing.assert_allclose(model.intercept, b_true, atol=1e-3)


def test_ridge_alpha_selection_prefers_small_alpha_on_noiseless_data() -> None:
    rng = np.random.default_rng(5)
    vectors, seqs, _, _ = linear_map_data(rng, 300, 3, 8)
    model = RidgeBaseline(alphas=(0.001, 10.0, 1000.0)).fit(vectors, seqs)
    assert model.chosen_alpha == 0.001
    assert set(model.holdout_scores) == {"0.001", "10.0", "1000.0"}
    assert model.holdout_scores["0.001"] > model.holdout_scores["1000.0"]


def test_fit_baselines_save_and_load_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(6)
    vectors = random_unit(rng, 400, 16)
    seqs = windows_over_articles([40] * 10, ctx=4)
    fitted = fit_baselines(vectors, seqs)
    assert list(fitted) == ["copy_last", "context_mean", "recency_weighted_mean", "ridge"]
    assert all(isinstance(b, Baseline) for b in fitted.values())
    paths = save_baselines(fitted, tmp_path / "baselines")
    for path in paths.values():
        with np.load(path, allow_pickle=False) as data:  # must not need pickle
            assert "name" in data.files
    loaded = {name: load_baseline(path) for name, path in paths.items()}
    assert {b.name for b in loaded.values()} == set(fitted)
    assert set(loaded) == set(fitted)
    ctx = vectors[seqs.context_rows[:20]]
    for name, b in fitted.items():
        np.testing.assert_allclose(loaded[name].predict(ctx), b.predict(ctx), atol=1e-6)
    assert loaded["ridge"].chosen_alpha == fitted["ridge"].chosen_alpha


def test_bad_inputs_give_clear_errors(tmp_path) -> None:
    rng = np.random.default_rng(7)
    vectors = random_unit(rng, 50, 8)
    bad = SequenceSet(np.array([[0, 1, 60]]), np.array([3]), np.array([0]), np.array([3]))
    # fitting checks the windows (the one window check), and any SequenceSet-like object gets the same checks
    with pytest.raises(ValueError, match=r"train_seqs\.context_rows indexes rows 0\.\.60"):
        fit_baselines(vectors, bad)
    with pytest.raises(ValueError, match=r"train_seqs\.context_rows indexes rows 0\.\.60"):
        check_windows(bad, vectors, what="train_seqs")
    misaligned = SimpleNamespace(
        context_rows=np.zeros((2, 3), np.int64), target_rows=np.zeros(3, np.int64),
        article_ids=np.zeros(2, np.int64), target_chunk_index=np.zeros(2, np.int32),
    )
    with pytest.raises(ValueError, match="target_rows has shape"):
        check_windows(misaligned, vectors)
    with pytest.raises(ValueError, match="holds no windows"):
        CopyLast().fit(vectors, bad.subset(np.zeros(1, bool)))
    with pytest.raises(ValueError, match="expects ctx of shape"):
        CopyLast().predict(np.zeros((3, 8)))
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeBaseline().predict(np.zeros((1, 3, 8)))
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(BaselineFileError, match="x.npz"):
        load_baseline(tmp_path / "x.npz")
    with open(tmp_path / "y.npz", "wb") as fh:
        np.savez(fh, name=np.array("nope"), meta=np.array("{}"))
    with pytest.raises(BaselineFileError, match="unknown baseline 'nope'"):
        load_baseline(tmp_path / "y.npz")
