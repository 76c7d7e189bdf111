"""The post-training (model) gates computed from an evaluation result: the cosine floor on the reporting
split, the ood floor and gap where ood is a real shift, leakage and oracle recall re-read from the dataset
manifest, the primary comparison (beats the best trivial baseline chosen on val, on the article-level
interval) and how often the test split has been evaluated; and `gate_value_text`, how a delta gate's
value is shown.

Only the computation lives here: the thresholds, the result and report types and the outcome record are
`lvm_core.contracts.gates`, shared with the data gates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lvm_core.contracts.gates import GateReport, GateResult, GateThresholds
from lvm_core.contracts.manifest import ood_is_shift
from lvm_core.evaluation.bootstrap import format_delta
from lvm_core.evaluation.result import SELECTION_SPLIT, EvaluationResult, reporting_split, select_baseline

__all__ = ["PRIMARY_METRIC", "gate_value_text", "post_training_gates", "primary_baseline"]

#: The metric of the one pre-declared primary comparison (model − best trivial baseline chosen on val).
PRIMARY_METRIC = "cosine"


def primary_baseline(metrics: Mapping[str, Any], model: str | None) -> str:
    """The baseline of the primary comparison: the best trivial baseline by val cosine (selection happens on
    val, never on the split being reported); "none" when no baseline has a val number. The gate, the report
    and the model card all compare against this one."""
    found = select_baseline(metrics, model, SELECTION_SPLIT, PRIMARY_METRIC)
    return "none" if found is None else found[0]


def post_training_gates(
    metrics: Any,
    model: str,
    manifest: dict[str, Any],
    thresholds: GateThresholds = GateThresholds(),
    *,
    deltas: dict[str, Any] | None = None,
    test_evaluations: int | None = None,
) -> GateReport:
    """The plan's model gates, plus the primary comparison decided on the interval, not the point.

    `metrics` is an `EvaluationResult` (or its `to_dict()`), whose `deltas` carry the article-level
    intervals, or a plain `metrics[predictor][split][metric]` dict with the intervals passed as
    `deltas[split][baseline]["cosine"] = {"delta", "low", "high"}` (model − baseline, same windows).
    `beats_best_baseline` is the one pre-declared primary comparison: model − `primary_baseline` (best by
    val cosine) on the reporting split ("test" when evaluated, else "val"); it passes only when the lower
    bound exceeds `thresholds.beats_baseline_margin`; without an interval it fails.
    `ood_cosine` and the ood gap are gated only where the manifest says ood is a shift (`ood_kind`); a
    stratified ood is a second in-distribution test sample. `test_evaluations` (evaluations recorded on this
    test split hash, this one included) adds the `test_evaluations` gate: above
    `thresholds.max_test_evaluations` it fails, above `warn_test_evaluations` its detail warns.
    Data gates (leakage, oracle recall) are re-read from the dataset manifest so the model's gate
    report is complete on its own.
    """
    metrics, deltas, report_split = _metrics_and_deltas(metrics, deltas)

    def cos(pred: str, split: str) -> float:
        v = metrics.get(pred, {}).get(split, {}).get("cosine")
        return float("nan") if v is None else float(v)

    reported = cos(model, report_split)
    leak_rate = _leak_rate(manifest)
    oracle = manifest.get("oracle_recall_at_5")
    results = [
        GateResult(f"{report_split}_cosine", reported >= thresholds.min_test_cosine, reported,
                   thresholds.min_test_cosine, detail=f"model cosine on the {report_split} split"),
    ]
    if ood_is_shift(manifest.get("splits")):
        results += _shift_gates(cos(model, "ood"), reported, report_split, thresholds)
    results += [
        GateResult("leakage", leak_rate <= thresholds.max_leakage_rate, leak_rate, thresholds.max_leakage_rate),
        GateResult(
            "oracle_recall_at_5",
            oracle is not None and float(oracle) >= thresholds.min_oracle_recall_at_5,
            oracle,
            thresholds.min_oracle_recall_at_5,
        ),
    ]
    if thresholds.must_beat_best_baseline:
        baseline = primary_baseline(metrics, model)
        results.append(_beats_best_baseline(deltas, baseline, report_split, thresholds.beats_baseline_margin))
    if test_evaluations is not None and report_split == "test":
        results.append(_test_evaluations(int(test_evaluations), thresholds))
    for r in results:  # NaN never passes
        if isinstance(r.value, float) and math.isnan(r.value):
            r.passed = False
    return GateReport(stage="post_training", results=results)


def _shift_gates(ood: float, reported: float, report_split: str, thresholds: GateThresholds) -> list[GateResult]:
    """The ood floor and the ood gap, for an ood split that is a real shift."""
    gap = abs(ood - reported)
    return [
        GateResult("ood_cosine", ood >= thresholds.min_ood_cosine, ood, thresholds.min_ood_cosine,
                   detail="model cosine on the held-out (shifted) ood split"),
        GateResult(f"ood_{report_split}_gap", gap <= thresholds.max_ood_test_gap, gap, thresholds.max_ood_test_gap,
                   detail=f"|ood − {report_split}| model cosine"),
    ]


def _test_evaluations(n: int, thresholds: GateThresholds) -> GateResult:
    """How often this test split (by split hash) has been evaluated, this evaluation included."""
    limit, warn = int(thresholds.max_test_evaluations), int(thresholds.warn_test_evaluations)
    passed = n <= limit
    if not passed:
        detail = (f"the test split has been evaluated {n} times (limit {limit}): every look spends it, and retrying "
                  "until a version passes is fishing; build a dataset with a new split seed for a fresh test split")
    elif n > warn:
        detail = f"WARNING: the test split has been evaluated {n} times (warning above {warn}, failing above {limit})"
    else:
        detail = f"evaluation {n} of this test split (warning above {warn}, failing above {limit})"
    return GateResult("test_evaluations", passed, n, limit, detail=detail)


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
    """The largest of the text-hash overlap rate (eval splits vs train), the article overlap and the val↔test
    overlap rate, as recorded before the purge."""
    leakage = manifest.get("leakage_raw") or manifest.get("leakage", {})  # raw: before the purge
    return max(
        float(leakage.get("text_hash_overlap", {}).get("rate", 0.0) or 0.0),
        float(leakage.get("article_overlap", 0) or 0),
        float((leakage.get("val_test") or {}).get("rate", 0.0) or 0.0),
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
        detail = (f"no interval of cosine Δ (model − {baseline}) on {split}; "
                  f"the gate needs one (evaluate with n_resamples > 0 and at least 2 articles)")
        return GateResult("beats_best_baseline", False, value, margin, detail=detail)
    passed = low > margin
    detail = (f"primary comparison: cosine Δ (model − {baseline}, the best trivial baseline on val) on {split}: "
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
