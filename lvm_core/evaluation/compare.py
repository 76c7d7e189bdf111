"""Architecture comparison: the evidence behind "why AMN" — every architecture and trivial baseline on
the same windows, with size, accuracy, training time and inference latency side by side."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from lvm_core.data.windows import SequenceSet, gather
from lvm_core.evaluation.bootstrap import ArticleBootstrap, format_delta, format_interval
from lvm_core.evaluation.metrics.cosine import cosine_to_target
from lvm_core.models.predict import predict_windows

Predict = Callable[[np.ndarray], np.ndarray]


class Predictor(Protocol):
    def predict(self, ctx: np.ndarray) -> np.ndarray: ...

COLUMNS = ("predictor", "kind", "params", "val_cosine", "test_cosine", "delta_vs_best_baseline", "ood_cosine",
           "train_seconds", "latency_ms_per_batch")
HEADERS = {"val_cosine": "val cos (selection)", "test_cosine": "test cos [95% CI]",
           "delta_vs_best_baseline": "Δ test vs best baseline [95% CI]", "ood_cosine": "ood cos"}


def latency_ms(predict: Predict, vectors: np.ndarray, seqs: SequenceSet, batch_size: int = 64, repeats: int = 20) -> float:
    """Median wall time of one prediction batch, in milliseconds (after one warm-up call)."""
    n = min(batch_size, len(seqs))
    ctx, _ = gather(vectors, seqs, np.arange(n))
    predict(ctx)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(ctx)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def comparison_row(
    name: str, kind: str, predictor: Predictor, vectors: np.ndarray, seqs: dict[str, SequenceSet],
    params: int = 0, train_seconds: float = 0.0,
) -> dict[str, Any]:
    per_window = {s: window_cosines(predictor, vectors, seqs[s]) for s in ("val", "test", "ood") if len(seqs.get(s, []))}
    mean = {s: float(c.mean()) for s, c in per_window.items()}
    return {
        "predictor": name, "kind": kind, "params": int(params), "val_cosine": mean.get("val", float("nan")),
        "test_cosine": mean.get("test", float("nan")), "ood_cosine": mean.get("ood", float("nan")),
        "ood_val_gap": abs(mean.get("ood", float("nan")) - mean.get("val", float("nan"))),
        "train_seconds": float(train_seconds),
        "latency_ms_per_batch": latency_ms(predictor.predict, vectors, seqs["val"]),
        "_per_window": per_window,
    }


def window_cosines(predictor: Predictor, vectors: np.ndarray, seqs: SequenceSet) -> np.ndarray:
    """cos(prediction, target) of every window, in window order."""
    return cosine_to_target(predict_windows(predictor, vectors, seqs, unit=True, finite=True), vectors, seqs)


def add_intervals(rows: list[dict[str, Any]], seqs: dict[str, SequenceSet], split: str = "test",
                  n_resamples: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Article-bootstrap intervals on `split` for every row, and each row's delta to the best trivial
    baseline (best chosen on val, as selection is); drops the per-window values from the rows."""
    if not len(seqs.get(split, [])):
        return [{k: v for k, v in r.items() if k != "_per_window"} for r in rows]
    boot = ArticleBootstrap(seqs[split].article_ids, n_resamples=n_resamples, seed=seed)
    baselines = [r for r in rows if r["kind"] == "baseline"]
    best = max(baselines, key=lambda r: r["val_cosine"]) if baselines else None
    out = []
    for r in rows:
        cos = r["_per_window"][split]
        iv = boot.mean(cos)
        row = {k: v for k, v in r.items() if k != "_per_window"}
        row[f"{split}_interval"] = [iv.low, iv.high]
        if best is not None:
            d = boot.delta(cos, best["_per_window"][split])
            row["best_baseline"] = best["predictor"]
            row["delta_vs_best_baseline"] = {"delta": d.mean, "low": d.low, "high": d.high}
        out.append(row)
    return out


def comparison_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """A Markdown table sorted by val cosine (the selection split), best first."""
    ordered = sorted(rows, key=lambda r: -r["val_cosine"])
    lines = [f"## {title}", "", "| " + " | ".join(HEADERS.get(c, c) for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in ordered:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            if c == "test_cosine" and r.get("test_interval"):
                cells.append(format_interval(v, *r["test_interval"]))
            elif c == "delta_vs_best_baseline":
                cells.append("—" if not isinstance(v, dict) or r.get("predictor") == r.get("best_baseline")
                             else format_delta(v["delta"], v["low"], v["high"]))
            elif c == "latency_ms_per_batch":
                cells.append(f"{v:.2f}")
            elif c == "train_seconds":
                cells.append(f"{v:.0f}")
            elif isinstance(v, float):
                cells.append(f"{v:.4f}")
            else:
                cells.append(f"{v:,}" if isinstance(v, int) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- grouped cross-validation (lvm_core.evaluation.crossval) ------------------------------------------------

def _cell(v: dict[str, float] | None, digits: int = 4) -> str:
    return "—" if not v else format_interval(v["mean"], v["low"], v["high"], digits)


def _delta_cell(v: dict[str, float] | None, digits: int = 4) -> str:
    return "—" if not v else format_delta(v["delta"], v["low"], v["high"], digits)


def crossval_verdict(rows: Sequence[dict[str, Any]], level: float) -> str:
    """One sentence: which models beat the per-fold best baseline after Holm's correction, or that none does."""
    alpha = (1.0 - level) / 2.0
    models = [r for r in rows if r["kind"] == "model"]
    wins = [r["predictor"] for r in models if r["delta_cosine"].get("p_holm", 1.0) < alpha]
    if not wins:
        best = max(models, key=lambda r: r["delta_cosine"]["delta"]) if models else None
        tail = f" (closest: {best['predictor']}, {_delta_cell(best['delta_cosine'])})" if best else ""
        return (f"No model beats the best trivial baseline: no Holm-adjusted one-sided p below {alpha:.3g}{tail}.")
    return f"Beat the best trivial baseline after Holm's correction (one-sided α = {alpha:.3g}): {', '.join(wins)}."


def crossval_markdown(result: Any, title: str) -> str:
    """The cross-validation table (`CrossValResult.rows`): pooled per-article means with cluster-t intervals,
    model − best-baseline deltas with the seed spread, Holm-adjusted p, within-article R@1 / MRR."""
    cfg, rows = result.config, result.rows
    pct = f"{cfg['level']:.0%}"
    head = ["predictor", f"cosine [{pct} CI]", f"Δ cosine vs best baseline [{pct} CI]", "seed SD of Δ",
            "p (one-sided)", "Holm p", f"within-article R@1 [{pct} CI]", "Δ R@1 vs best baseline", "within-article MRR",
            "best epoch (median) / epoch-0 share", "train s (mean)"]
    lines = [f"## {title}", "",
             f"{result.n_articles} articles ({result.n_windows:,} windows), {cfg['folds']} folds × {cfg['seeds']} seed(s); "
             f"each article is test once; inner validation (the next fold) chose the epoch (epoch 0 included) and the "
             f"best baseline; configurations tried: {result.configurations_tried} (one per architecture: "
             f"{cfg['epochs']} epochs max, patience {cfg['patience']}, batch {cfg['batch_size']}, lr {cfg['lr']:g}, "
             f"weight decay {cfg['weight_decay']:g}, dropout {cfg['dropout']:g}). Articles weigh equally; intervals: "
             f"cluster-robust t over articles (seed spread folded in), Holm across the {sum(r['kind'] == 'model' for r in rows)} models.",
             "", crossval_verdict(rows, cfg["level"]), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = r["predictor"]
        if r["kind"] == "baseline":
            name += f" (best in {r['chosen_in_folds']}/{cfg['folds']} folds)" if r["predictor"] != "best_baseline" \
                else " (chosen per fold on inner val)"
            cells = [name, _cell(r["cosine"]), "—", "—", "—", "—", _cell(r["r@1"], 3), "—",
                     format_interval(r["mrr"]["mean"], digits=3), "—", "—"]
        else:
            d = r["delta_cosine"]
            sd = "—" if not math.isfinite(d["seed_sd"]) else f"{d['seed_sd']:.4f}"
            cells = [name, _cell(r["cosine"]), _delta_cell(d), sd, f"{d['p']:.3g}", f"{d['p_holm']:.3g}",
                     _cell(r["r@1"], 3), _delta_cell(r["delta_r@1"], 3), format_interval(r["mrr"]["mean"], digits=3),
                     f"{r['median_best_epoch']:g} / {r['epoch0_share']:.0%}", f"{r['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: Columns of the short cross-validation table the evaluation report and the model card show.
CROSSVAL_SUMMARY_HEADERS = ("predictor", "cosine [95% CI]", "Δ cosine vs best baseline [95% CI]", "Holm p",
                            "within-article R@1 [95% CI]")


def crossval_summary_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The cross-validation table cut to what a reader of a report or card needs (`CROSSVAL_SUMMARY_HEADERS`)."""
    out = []
    for r in rows:
        if r["kind"] == "baseline":
            out.append([r["predictor"], _cell(r["cosine"]), "—", "—", _cell(r["r@1"], 3)])
        else:
            d = r["delta_cosine"]
            out.append([r["predictor"], _cell(r["cosine"]), _delta_cell(d), f"{d['p_holm']:.3g}", _cell(r["r@1"], 3)])
    return out


def crossval_protocol_text(result: Any) -> str:
    """One paragraph: what the cross-validation is, what it decided and where it lives."""
    cfg = result.config
    return (f"Grouped {cfg['folds']}-fold cross-validation by article, {cfg['seeds']} seed(s), over "
            f"{result.n_articles} articles ({result.n_windows:,} windows): every article is test exactly once, an inner "
            f"validation fold chooses the epoch (epoch 0 = the baseline anchor) and the best baseline, intervals are "
            f"cluster-robust t over articles with the seed spread folded in, Holm across the models; "
            f"{result.configurations_tried} configuration(s) tried. {crossval_verdict(result.rows, cfg['level'])}")


def crossval_document(result: Any, title: str) -> str:
    """The cross-validation as `lvm compare` writes it: the full table, the learning-curve table, wall time."""
    from lvm_core.evaluation.learning_curve import curve_markdown

    md = crossval_markdown(result, title)
    if result.curve and result.curve_arch:
        md += (f"\n### Learning curve ({result.curve_arch}, the best by inner-validation cosine; seed 0)\n\n"
               + curve_markdown(result.curve, result.curve_arch, result.config["level"]))
    return md + f"\nWall time: {result.seconds:.0f} s ({result.config['jobs']} training(s) at a time).\n"


CURVE_SUMMARY_HEADERS = ("training articles per fold", "Δ cosine vs best baseline [95% CI]",
                         "Δ within-article R@1 [95% CI]")


def crossval_facts(folder: Any, result: Any) -> dict[str, Any]:
    """What the evaluation report and the model card show of a cross-validation, as plain data: the protocol
    paragraph, the short table, the learning curve's rows and where the full comparison lives."""
    curve = [[f"{p['train_articles']:.1f}", _delta_cell(p["delta_cosine"]), _delta_cell(p["delta_r@1"], 3)]
             for p in result.curve]
    return {"text": crossval_protocol_text(result), "headers": list(CROSSVAL_SUMMARY_HEADERS),
            "rows": crossval_summary_rows(result.rows), "curve_arch": result.curve_arch,
            "curve_headers": list(CURVE_SUMMARY_HEADERS), "curve_rows": curve, "source": str(folder)}
