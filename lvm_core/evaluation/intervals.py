"""Article-bootstrap intervals of an evaluation: every INTERVAL_METRICS mean of every predictor and every
model − baseline delta of one split, added to the `EvaluationResult` in one place.

All columns of a split share the same resampled articles, so a paired delta cancels what the model and
the baseline have in common (see `lvm_core.evaluation.bootstrap`). `method="cluster_t"` gives the
small-sample interval of `lvm_core.evaluation.cluster_t` instead (same window-weighted means, a
cluster-robust t over articles with G − 1 df), which holds its level with ~10 articles where the
percentile bootstrap does not.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lvm_core.data.windows import SequenceSet
from lvm_core.evaluation.bootstrap import ArticleBootstrap, Interval
from lvm_core.evaluation.cluster_t import cluster_t
from lvm_core.evaluation.result import INTERVAL_METRICS, EvaluationResult

__all__ = ["article_t_intervals", "record_intervals"]


def article_t_intervals(article_ids: np.ndarray, columns: dict[str, np.ndarray], level: float) -> dict[str, Interval]:
    """Window-weighted mean of each per-window column with its cluster-t interval over articles: an article's
    weight is its count of finite values, so the point estimate equals the bootstrap's."""
    _, codes = np.unique(np.asarray(article_ids).reshape(-1), return_inverse=True)
    codes = codes.reshape(-1)
    out: dict[str, Interval] = {}
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.isfinite(v)
        sums = np.bincount(codes, weights=np.where(finite, v, 0.0))
        counts = np.bincount(codes, weights=finite.astype(np.float64))
        has = counts > 0
        iv = cluster_t(sums[has] / counts[has], weights=counts[has], level=level)
        out[name] = Interval(iv.mean, iv.low, iv.high, iv.level, 0, iv.n_articles, int(v.size))
    return out


def record_intervals(
    res: EvaluationResult,
    split: str,
    w: SequenceSet,
    per_window: Mapping[str, Mapping[str, np.ndarray]],
    n_resamples: int,
    level: float,
    seed: int,
    method: str = "bootstrap",
) -> None:
    """Article-bootstrap intervals of every INTERVAL_METRICS mean and every model − baseline delta of `split`.

    `per_window[predictor][metric]` holds one value per window of `w`; the means go to
    `res.intervals[predictor][split]`, the deltas to `res.deltas[split][baseline]`.
    """
    boot = ArticleBootstrap(w.article_ids, n_resamples, level, seed)
    res.config["bootstrap"]["n_articles"][split] = boot.n_articles
    if method not in ("bootstrap", "cluster_t"):
        raise ValueError(f"interval method must be 'bootstrap' or 'cluster_t', got {method!r}")
    model = res.model_name
    columns: dict[tuple[str, str, str], np.ndarray] = {}
    for p, cols in per_window.items():
        for name in INTERVAL_METRICS:
            columns[("mean", p, name)] = cols[name]
            if p != model:
                columns[("delta", p, name)] = per_window[model][name] - cols[name]
    keys = list(columns)
    named = {str(i): columns[k] for i, k in enumerate(keys)}
    ivs = boot.intervals(named) if method == "bootstrap" else article_t_intervals(w.article_ids, named, level)
    res.deltas[split] = {}
    for i, (kind, p, name) in enumerate(keys):
        iv = ivs[str(i)]
        if kind == "mean":
            res.intervals.setdefault(p, {}).setdefault(split, {})[name] = {
                "mean": iv.mean, "low": iv.low, "high": iv.high
            }
        else:
            res.deltas[split].setdefault(p, {})[name] = {"delta": iv.mean, "low": iv.low, "high": iv.high}
