"""Article-level bootstrap: self-delta is [0, 0], a clearly better predictor excludes 0, seeded, narrows with articles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lvm_core.evaluation.bootstrap import ArticleBootstrap, BootstrapError, bootstrap_delta, bootstrap_mean


def _windows(n_articles: int, per_article: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-window values with a per-article offset (windows of one article are correlated)."""
    rng = np.random.default_rng(seed)
    aids = np.repeat(np.arange(n_articles) * 7 + 100, per_article)
    article_effect = rng.normal(0, 0.05, size=n_articles)
    values = 0.55 + np.repeat(article_effect, per_article) + rng.normal(0, 0.1, size=aids.size)
    return values, aids


def test_mean_is_the_window_mean_inside_its_interval() -> None:
    values, aids = _windows(30)
    iv = bootstrap_mean(values, aids)
    assert iv.mean == pytest.approx(values.mean())
    assert iv.low < iv.mean < iv.high
    assert iv.n_articles == 30 and iv.n_windows == values.size and iv.n_resamples == 1000 and iv.level == 0.95


def test_predictor_against_itself_is_exactly_zero_width() -> None:
    values, aids = _windows(25)
    iv = bootstrap_delta(values, values, aids)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert not iv.excludes(0.0)


def test_clearly_better_predictor_excludes_zero_and_tiny_gain_does_not() -> None:
    base, aids = _windows(30)
    rng = np.random.default_rng(1)
    better = base + 0.05 + rng.normal(0, 0.02, size=base.size)
    iv = bootstrap_delta(better, base, aids)
    assert iv.mean == pytest.approx(0.05, abs=0.005)
    assert iv.low > 0 and iv.excludes(0.0)
    # per-article noise much larger than the mean gain: the interval straddles 0
    noisy = base + 0.001 + np.repeat(rng.normal(0, 0.05, size=30), 20)
    iv2 = bootstrap_delta(noisy, base, aids)
    assert iv2.low < 0 < iv2.high and not iv2.excludes(0.0)


def test_same_seed_same_interval_other_seed_differs() -> None:
    values, aids = _windows(20)
    a = bootstrap_mean(values, aids, seed=3)
    b = bootstrap_mean(values, aids, seed=3)
    c = bootstrap_mean(values, aids, seed=4)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_wider_with_fewer_articles() -> None:
    values, aids = _windows(200, per_article=10)
    few = np.isin(aids, np.unique(aids)[:10])
    wide = bootstrap_mean(values[few], aids[few])
    narrow = bootstrap_mean(values, aids)
    assert wide.width > 2 * narrow.width


def test_resamples_articles_not_windows() -> None:
    # Every window of an article has the same value: resampling windows would give a tiny interval,
    # resampling articles gives the spread between articles.
    aids = np.repeat(np.arange(10), 100)
    values = np.repeat(np.linspace(0.0, 1.0, 10), 100)
    iv = bootstrap_mean(values, aids)
    assert iv.width > 0.2


def test_shared_resamples_nan_values_and_degenerate_inputs() -> None:
    values, aids = _windows(15)
    boot = ArticleBootstrap(aids, n_resamples=2000, level=0.9, seed=5)
    ivs = boot.intervals({"a": values, "b": values + 1.0})
    assert ivs["b"].low == pytest.approx(ivs["a"].low + 1.0) and ivs["b"].high == pytest.approx(ivs["a"].high + 1.0)
    assert ivs["a"].n_resamples == 2000 and ivs["a"].level == 0.9
    with_nan = values.copy()
    with_nan[::7] = np.nan
    iv = boot.mean(with_nan)
    assert iv.mean == pytest.approx(np.nanmean(with_nan)) and math.isfinite(iv.low)
    one = bootstrap_mean(values[:20], aids[:20])  # a single article: no interval
    assert one.mean == pytest.approx(values[:20].mean()) and math.isnan(one.low) and math.isnan(one.high)
    assert not one.excludes(0.0)
    json_ready = iv.to_dict()
    assert set(json_ready) >= {"mean", "low", "high", "level", "n_resamples", "n_articles", "n_windows"}
    with pytest.raises(BootstrapError, match="windows"):
        boot.mean(values[:-1])
    with pytest.raises(BootstrapError, match="level"):
        ArticleBootstrap(aids, level=1.5)
    with pytest.raises(BootstrapError, match="n_resamples"):
        ArticleBootstrap(aids, n_resamples=0)
