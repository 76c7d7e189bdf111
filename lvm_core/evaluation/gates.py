"""The post-training (model) gates computed from an evaluation result: cosine floors on the reporting split,
the ood gap, leakage and oracle recall re-read from the dataset manifest, and "beats the best trivial
baseline" on the bootstrap interval; and `gate_value_text`, how that last gate's interval value is shown.

Only the computation lives here: the thresholds, the result and report types and the outcome record are
`lvm_core.contracts.gates`, shared with the data gates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lvm_core.contracts.gates import GateReport, GateResult, GateThresholds
from lvm_core.evaluation.bootstrap import format_delta
from lvm_core.evaluation.result import EvaluationResult, reporting_split

__all__ = ["gate_value_text", "post_training_gates"]


def post_training_gates(
    metrics: Any,
    model: str,
    manifest: dict[str, Any],
    thresholds: GateThresholds = GateThresholds(),
    *,
    deltas: dict[str, Any] | None = None,
) -> GateReport:
    """The plan's model gates, plus: beats the best trivial baseline — on the interval, not the point.

    `metrics` is an `EvaluationResult` (or its `to_dict()`), whose `deltas` carry the bootstrap
    intervals, or a plain `metrics[predictor][split][metric]` dict with the intervals passed as
    `deltas[split][baseline]["cosine"] = {"delta", "low", "high"}` (model − baseline, same windows).
    `beats_best_baseline` picks the best baseline by val cosine (selection happens on val) and passes
    only when the lower bound of model − that baseline on the reporting split ("test" when evaluated,
    else "val") exceeds `thresholds.beats_baseline_margin`; without an interval it fails.
    Data gates (leakage, oracle recall) are re-read from the dataset manifest so the model's gate
    report is complete on its own.
    """
    metrics, deltas, report_split = _metrics_and_deltas(metrics, deltas)

    def cos(pred: str, split: str) -> float:
        v = metrics.get(pred, {}).get(split, {}).get("cosine")
        return float("nan") if v is None else float(v)

    # the plan's cosine gates read the reporting split (test; val only for datasets without one)
    reported, ood = cos(model, report_split), cos(model, "ood")
    gap = abs(ood - reported)
    baselines = {p: cos(p, "val") for p in metrics if p != model}
    best_name, best_val = (
        max(baselines.items(), key=lambda kv: -math.inf if math.isnan(kv[1]) else kv[1])
        if baselines
        else ("none", float("nan"))
    )
    leak_rate = _leak_rate(manifest)
    oracle = manifest.get("oracle_recall_at_5")
    results = [
        GateResult(f"{report_split}_cosine", reported >= thresholds.min_val_cosine, reported, thresholds.min_val_cosine,
                   detail=f"model cosine on the {report_split} split"),
        GateResult("ood_cosine", ood >= thresholds.min_ood_cosine, ood, thresholds.min_ood_cosine),
        GateResult(f"ood_{report_split}_gap", gap <= thresholds.max_ood_val_gap, gap, thresholds.max_ood_val_gap,
                   detail=f"|ood − {report_split}| model cosine"),
        GateResult("leakage", leak_rate <= thresholds.max_leakage_rate, leak_rate, thresholds.max_leakage_rate),
        GateResult(
            "oracle_recall_at_5",
            oracle is not None and float(oracle) >= thresholds.min_oracle_recall_at_5,
            oracle,
            thresholds.min_oracle_recall_at_5,
        ),
    ]
    if thresholds.must_beat_best_baseline:
        results.append(_beats_best_baseline(deltas, best_name, report_split, thresholds.beats_baseline_margin))
    for r in results:  # NaN never passes
        if isinstance(r.value, float) and math.isnan(r.value):
            r.passed = False
    return GateReport(stage="post_training", results=results)


def _metrics_and_deltas(metrics: Any, deltas: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(metrics[predictor][split][metric], deltas, reporting split) from a result, its dict or plain metrics."""
    if isinstance(metrics, dict) and "predictors" in metrics and "metrics" in metrics:
        metrics = EvaluationResult.from_dict(metrics)
    if isinstance(metrics, EvaluationResult):
        deltas = metrics.deltas if deltas is None else deltas
        report_split = metrics.reporting_split
        metrics = metrics.metrics
    else:
        report_split = reporting_split(metrics)
    return metrics, deltas or {}, report_split


def _leak_rate(manifest: dict[str, Any]) -> float:
    """The larger of the text-hash and article overlap rates recorded before the purge."""
    leakage = manifest.get("leakage_raw") or manifest.get("leakage", {})  # raw: before the purge
    return max(
        float(leakage.get("text_hash_overlap", {}).get("rate", 0.0) or 0.0),
        float(leakage.get("article_overlap", 0) or 0),
    )


def _beats_best_baseline(deltas: dict[str, Any], baseline: str, split: str, margin: float) -> GateResult:
    """Lower bound of the model − `baseline` cosine delta on `split` must exceed `margin`."""
    d = (deltas.get(split) or {}).get(baseline, {}).get("cosine") or {}

    def num(key: str) -> float:
        v = d.get(key)
        return float("nan") if v is None else float(v)

    delta, low, high = num("delta"), num("low"), num("high")
    value = {"baseline": baseline, "split": split, "delta": delta, "low": low, "high": high}
    if not math.isfinite(low):
        detail = (f"no bootstrap interval of cosine Δ (model − {baseline}) on {split}; "
                  f"the gate needs one (evaluate with n_resamples > 0 and at least 2 articles)")
        return GateResult("beats_best_baseline", False, value, margin, detail=detail)
    passed = low > margin
    detail = (f"cosine Δ (model − {baseline}, best trivial baseline on val) on {split}: "
              f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]; lower bound {'>' if passed else '<='} margin {margin:+.4f}")
    return GateResult("beats_best_baseline", passed, value, margin, detail=detail)


def gate_value_text(value: Any) -> Any:
    """A delta gate's value ({baseline, split, delta, low, high}) as `Δ +x [lo, hi] vs baseline (split)`;
    any other value as it is. The report and the model card show gate values through this."""
    if isinstance(value, Mapping) and {"delta", "low", "high"} <= set(value):
        text = format_delta(_num(value["delta"]), _num(value["low"]), _num(value["high"]))
        return f"{text} vs {value.get('baseline', '?')} ({value.get('split', '?')})"
    return value


def _num(v: Any) -> float | None:
    return None if v is None else float(v)
