"""Article-bootstrap intervals of an evaluation: every INTERVAL_METRICS mean of every predictor and every
model − baseline delta of one split, added to the `EvaluationResult` in one place.

All columns of a split share the same resampled articles, so a paired delta cancels what the model and
the baseline have in common (see `lvm_core.evaluation.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lvm_core.data.windows import SequenceSet
from lvm_core.evaluation.bootstrap import ArticleBootstrap
from lvm_core.evaluation.result import INTERVAL_METRICS, EvaluationResult

__all__ = ["record_intervals"]


def record_intervals(
    res: EvaluationResult,
    split: str,
    w: SequenceSet,
    per_window: Mapping[str, Mapping[str, np.ndarray]],
    n_resamples: int,
    level: float,
    seed: int,
) -> None:
    """Article-bootstrap intervals of every INTERVAL_METRICS mean and every model − baseline delta of `split`.

    `per_window[predictor][metric]` holds one value per window of `w`; the means go to
    `res.intervals[predictor][split]`, the deltas to `res.deltas[split][baseline]`.
    """
    boot = ArticleBootstrap(w.article_ids, n_resamples, level, seed)
    res.config["bootstrap"]["n_articles"][split] = boot.n_articles
    model = res.model_name
    columns: dict[tuple[str, str, str], np.ndarray] = {}
    for p, cols in per_window.items():
        for name in INTERVAL_METRICS:
            columns[("mean", p, name)] = cols[name]
            if p != model:
                columns[("delta", p, name)] = per_window[model][name] - cols[name]
    keys = list(columns)
    ivs = boot.intervals({str(i): columns[k] for i, k in enumerate(keys)})
    res.deltas[split] = {}
    for i, (kind, p, name) in enumerate(keys):
        iv = ivs[str(i)]
        if kind == "mean":
            res.intervals.setdefault(p, {}).setdefault(split, {})[name] = {
                "mean": iv.mean, "low": iv.low, "high": iv.high
            }
        else:
            res.deltas[split].setdefault(p, {})[name] = {"delta": iv.mean, "low": iv.low, "high": iv.high}
