"""Learning curve from the cross-validation: the gain of one architecture over the best trivial baseline
against the number of training articles, so a reader sees whether more data would help.

Each point re-uses the folds of `lvm_core.evaluation.crossval`: the same test and inner-validation articles,
the inner-train articles cut to a nested, seeded fraction; the best baseline is re-chosen on inner validation
at every fraction (a baseline fitted on fewer articles may lose its place). One training seed (seed 0) at
every fraction, the full-data point included, so the points are comparable; the intervals are the paired
article-level cluster-t of `lvm_core.evaluation.cluster_t`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.evaluation.bootstrap import format_delta

__all__ = ["curve_markdown", "curve_points", "plot_curve"]


def curve_points(scores: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], arch: str,
                 level: float) -> list[dict[str, Any]]:
    """One point per training fraction: mean training articles per fold, Δ cosine (and Δ R@1) of `arch`
    (seed 0) over the fold's best baseline, with intervals."""
    from lvm_core.evaluation.crossval import BEST_BASELINE, paired_delta

    fractions = sorted({r["fraction"] for r in runs if r["predictor"] == arch})
    points = []
    for frac in fractions:
        base_runs = [r for r in runs if r["predictor"] == "baselines" and r["fraction"] == frac]
        d = paired_delta(scores, arch, BEST_BASELINE, frac, "cosine", level, seeds=[0])
        r1 = paired_delta(scores, arch, BEST_BASELINE, frac, "r@1", level, seeds=[0])
        points.append({
            "fraction": frac, "train_articles": float(np.mean([r["n_train_articles"] for r in base_runs])),
            "delta_cosine": {"delta": d.mean, "low": d.low, "high": d.high, "p": d.p_value},
            "delta_r@1": {"delta": r1.mean, "low": r1.low, "high": r1.high},
            "best_baselines": sorted({r["best_baseline"] for r in base_runs}),
        })
    return points


def curve_markdown(points: Sequence[dict[str, Any]], arch: str, level: float) -> str:
    """The learning curve as a Markdown table."""
    pct = f"{level:.0%}"
    lines = [f"| training articles per fold | fraction | Δ cosine {arch} − best baseline [{pct} CI] "
             f"| Δ within-article R@1 [{pct} CI] | best baseline(s) chosen |",
             "|---|---|---|---|---|"]
    for p in points:
        d, r = p["delta_cosine"], p["delta_r@1"]
        lines.append(f"| {p['train_articles']:.1f} | {p['fraction']:.2f} | {format_delta(d['delta'], d['low'], d['high'])} | "
                     f"{format_delta(r['delta'], r['low'], r['high'])} | {', '.join(p['best_baselines'])} |")
    return "\n".join(lines) + "\n"


def plot_curve(points: Sequence[dict[str, Any]], arch: str, path: Path) -> Path | None:
    """The curve as a PNG (gain with its interval against training articles); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x = np.array([p["train_articles"] for p in points])
    y = np.array([p["delta_cosine"]["delta"] for p in points])
    lo = np.array([p["delta_cosine"]["low"] for p in points])
    hi = np.array([p["delta_cosine"]["high"] for p in points])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3)
    ax.set_xlabel("training articles per fold")
    ax.set_ylabel(f"Δ cosine, {arch} − best baseline")
    ax.set_title("Learning curve (grouped cross-validation, 95% CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
