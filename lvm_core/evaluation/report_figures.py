"""The figures of the evaluation report as PNG bytes: offset sweep, metrics beside the baselines (with
their bootstrap intervals), cosine per coherence bin.

Plots use matplotlib's object API with the Agg canvas, so no global backend or pyplot state is touched
(the report is written from worker threads and flows).
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lvm_core.evaluation.result import EvaluationResult

OFFSET_PNG = "offset_sweep.png"
METRICS_PNG = "metrics_vs_baselines.png"
BINS_PNG = "coherence_bins.png"


class Plot(NamedTuple):
    """One figure of the report: its file name, its PNG (None when the result has nothing to plot), caption."""

    name: str
    png: bytes | None
    caption: str


def report_plots(res: EvaluationResult) -> dict[str, Plot]:
    """The report's figures by key (the key is also the name under which `write_report` returns its path)."""
    return {
        "offset_sweep": Plot(
            OFFSET_PNG,
            plot_offsets(res),
            "Offset sweep: mean cosine of the prediction to the chunk at target + k. The peak belongs at k = 0.",
        ),
        "metrics": Plot(METRICS_PNG, plot_metrics(res), "Model (outlined) beside the trivial baselines."),
        "coherence_bins": Plot(BINS_PNG, plot_bins(res), "Cosine per coherence bin of the window's article."),
    }


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_offsets(res: EvaluationResult) -> bytes | None:
    """Mean cosine to the chunk at target + k per predictor, one panel per split (None: no sweep)."""
    splits = [s for s in res.splits if any(res.offset_sweep.get(p, {}).get(s) for p in res.predictors)]
    if not splits:
        return None
    fig = Figure(figsize=(5.2 * len(splits), 3.8))
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, s in zip(axes, splits):
        for i, p in enumerate(res.predictors):
            d = res.offset_sweep.get(p, {}).get(s, {})
            ks = sorted(d)
            ax.plot(ks, [_nan_f(d[k]) for k in ks], marker="o", lw=2.2 if i == 0 else 1.2, label=p)
        ax.axvline(0, color="grey", ls="--", lw=0.8)
        ax.set_title(f"offset sweep — {s}")
        ax.set_xlabel("k (chunk at target + k; 0 = target, −1 = last context chunk)")
        ax.set_ylabel("mean cos(pred, chunk)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _nan_f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def plot_metrics(res: EvaluationResult) -> bytes | None:
    """Cosine and R@5 bars per split and predictor, with interval error bars where computed."""
    metrics = [("cosine", "cosine to target"), ("r@5", "retrieval R@5")]
    splits = [s for s in res.splits if any("cosine" in res.metrics.get(p, {}).get(s, {}) for p in res.predictors)]
    if not splits:
        return None
    fig = Figure(figsize=(5.5 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    n_p = len(res.predictors)
    width = 0.8 / n_p
    x = np.arange(len(splits))
    for ax, (key, label) in zip(axes, metrics):
        for i, p in enumerate(res.predictors):
            vals = [_nan_f(res.metrics.get(p, {}).get(s, {}).get(key)) for s in splits]
            ivs = [res.interval(p, s, key) for s in splits]
            err = np.array([[max(0.0, v - lo), max(0.0, hi - v)] for v, (lo, hi) in zip(vals, ivs)]).T
            yerr = None if not np.isfinite(err).all() else err
            bars = ax.bar(x + (i - (n_p - 1) / 2) * width, vals, width, label=p, edgecolor="black" if i == 0 else None,
                          yerr=yerr, capsize=2, error_kw={"lw": 0.8})
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
        ax.set_xticks(x, splits)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def plot_bins(res: EvaluationResult) -> bytes | None:
    """Mean cosine per coherence bin and predictor, one panel per split (None: no bins)."""
    splits = [s for s in res.splits if any(res.metrics_by_bin.get(p, {}).get(s) for p in res.predictors)]
    if not splits:
        return None
    fig = Figure(figsize=(5.5 * len(splits), 3.8))
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    n_p = len(res.predictors)
    width = 0.8 / n_p
    for ax, s in zip(axes, splits):
        bins = sorted({b for p in res.predictors for b in res.metrics_by_bin.get(p, {}).get(s, {})}, key=str)
        x = np.arange(len(bins))
        for i, p in enumerate(res.predictors):
            d = res.metrics_by_bin.get(p, {}).get(s, {})
            bars = ax.bar(x + (i - (n_p - 1) / 2) * width, [_nan_f(d.get(b)) for b in bins], width, label=p)
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
        ax.set_xticks(x, [str(b) for b in bins])
        ax.set_xlabel("coherence bin (low → high)")
        ax.set_ylabel("mean cos(pred, target)")
        ax.set_title(f"cosine by coherence bin — {s}")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)
