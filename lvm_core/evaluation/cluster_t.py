"""Article-level intervals that hold their level with few articles: a cluster-robust t with G − 1 degrees
of freedom, the seed-to-seed variance folded in, and Holm's correction across the candidates of a table.

Why not the percentile bootstrap of `lvm_core.evaluation.bootstrap` here. With G articles the percentile
interval is, to first order, mean ± z·sqrt((G − 1)/G)·s/√G: a normal quantile and a variance shrunk by
(G − 1)/G. At G = 10 its one-sided error under no true difference is ~4.5 % for a nominal 2.5 %
(P(t₉ > 1.96·√0.9)), which is what the cross-validation's few test articles cannot afford. Of the fixes
(studentized bootstrap, BCa, cluster-robust t) the cluster-robust t is the one that is exact for the
case that matters — a mean of G independent article means with normal-ish spread is a one-sample t
problem — needs no resampling (so no Monte-Carlo noise and nothing to seed), and degrades gracefully:
for symmetric heavy tails it errs on the conservative side. BCa is not exact at small G (it keeps the
normal quantile) and a bootstrap-t with 10 clusters has an unstable studentising SE. The simulation in
tests/unit/evaluation/test_cluster_t.py checks the one-sided error at 10 and 30 articles (20,000
seeded draws each) and shows the normal/percentile-style interval failing the same check.

Estimator. Article a contributes a value v_a (its mean delta over its windows) and a weight w_a (1: every
article counts the same, the cross-validation's choice; or its window count: the window-weighted mean of
the evaluation report). θ = Σ w_a v_a / Σ w_a; the CR1 variance is G/(G − 1) · Σ w_a² (v_a − θ)² / (Σ w_a)²,
which with equal weights is exactly s²/G; the interval is θ ± t_{G−1} · se.

Seeds. With S training seeds the per-article values are averaged over seeds first; the spread of the
seed-level estimates θ_s adds var_s(θ_s)/S to the variance (the seed effect is shared by every article of
a fold, so the article spread alone understates it), with Welch–Satterthwaite degrees of freedom.

Pure numpy/scipy; nothing here knows about predictors, splits or Prefect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from lvm_core.evaluation.bootstrap import DEFAULT_LEVEL, BootstrapError, Interval, _check_level

__all__ = ["TInterval", "article_t", "cluster_t", "holm", "seeded_cluster_t"]


@dataclass(frozen=True)
class TInterval(Interval):
    """An `Interval` from the cluster-robust t: also its standard error, degrees of freedom, the one-sided
    p-value of H0 "mean ≤ 0" and the seed-to-seed standard deviation of the estimate (NaN with one seed)."""

    se: float = float("nan")
    df: float = float("nan")
    p_value: float = float("nan")
    seed_sd: float = float("nan")
    n_seeds: int = 1


def _nan(mean: float, level: float, g: int, n_seeds: int = 1) -> TInterval:
    nan = float("nan")
    return TInterval(mean, nan, nan, level, 0, g, g, nan, nan, nan, nan, n_seeds)


def cluster_t(values: np.ndarray, weights: np.ndarray | None = None, level: float = DEFAULT_LEVEL) -> TInterval:
    """Weighted mean of one value per article with its cluster-robust t interval (G − 1 df).

    `values[a]` is article a's value (e.g. its mean model − baseline delta), `weights[a]` its weight
    (default 1). Fewer than two articles: NaN bounds (a NaN bound never passes a gate).
    """
    return seeded_cluster_t(np.asarray(values, dtype=np.float64).reshape(-1, 1), weights, level)


def seeded_cluster_t(values: np.ndarray, weights: np.ndarray | None = None, level: float = DEFAULT_LEVEL) -> TInterval:
    """`cluster_t` of `values (G articles, S seeds)`: articles' seed means, plus the seed-to-seed variance.

    The seed part is var_s(θ_s)/S, θ_s the estimate of seed s alone; the degrees of freedom are
    Welch–Satterthwaite's between the article part (G − 1) and the seed part (S − 1).
    """
    level = _check_level(level)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise BootstrapError(f"values must be (articles, seeds), got shape {v.shape}")
    g, s = v.shape
    w = np.ones(g) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != g or (w < 0).any() or not np.isfinite(w).all():
        raise BootstrapError(f"weights must be {g} finite non-negative numbers, got shape {w.shape}")
    if not np.isfinite(v).all():
        raise BootstrapError("values must be finite (one value per article and seed)")
    if g == 0 or w.sum() == 0:
        return _nan(float("nan"), level, g, s)
    theta, se, df, seed_sd = (float(x[0]) for x in article_t(v[None], w[None]))
    if g < 2:
        return _nan(theta, level, g, s)
    if se == 0.0:
        p = 0.0 if theta > 0 else 1.0
        return TInterval(theta, theta, theta, level, 0, g, g, 0.0, df, p, seed_sd, s)
    q = float(stats.t.ppf(0.5 + level / 2.0, df))
    p = float(stats.t.sf(theta / se, df))
    return TInterval(theta, theta - q * se, theta + q * se, level, 0, g, g, se, df, p, seed_sd, s)


def article_t(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised core over R independent tables `values (R, G, S)` with `weights (R, G)`: the weighted
    mean θ of the seed-averaged article values, its standard error (CR1 article part + seed part), the
    Welch–Satterthwaite degrees of freedom and the seed-to-seed SD of θ_s (NaN with one seed); each (R,).
    The interval is θ ± t_{df}(level)·se; G < 2 gives NaN."""
    r, g, s = values.shape
    wsum = weights.sum(axis=1)
    per_article = values.mean(axis=2)
    theta = np.einsum("rg,rg->r", per_article, weights) / wsum
    seed_thetas = np.einsum("rgs,rg->rs", values, weights) / wsum[:, None]
    if g < 2:
        nan = np.full(r, np.nan)
        return theta, nan, nan, nan
    resid = (per_article - theta[:, None]) * weights
    v_art = g / (g - 1) * np.sum(resid**2, axis=1) / wsum**2
    if s > 1:
        seed_var = np.var(seed_thetas, axis=1, ddof=1)
        v_seed = seed_var / s
        var = v_art + v_seed
        with np.errstate(invalid="ignore", divide="ignore"):
            df = var**2 / (v_art**2 / (g - 1) + v_seed**2 / (s - 1))
        df = np.where(np.isfinite(df), df, g - 1.0)
        seed_sd = np.sqrt(seed_var)
    else:
        var, df, seed_sd = v_art, np.full(r, g - 1.0), np.full(r, np.nan)
    return theta, np.sqrt(var), df, seed_sd


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error across the candidates of one table).

    The k-th smallest of m p-values is multiplied by m − k + 1, then made non-decreasing and capped at 1;
    a candidate "beats the baseline" at one-sided α when its adjusted p is below α. NaN stays NaN (and is
    not counted in m).
    """
    finite = {k: float(p) for k, p in p_values.items() if math.isfinite(float(p))}
    order = sorted(finite, key=lambda k: finite[k])
    m = len(order)
    out = {k: float("nan") for k in p_values}
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * finite[k]))
        out[k] = running
    return out
