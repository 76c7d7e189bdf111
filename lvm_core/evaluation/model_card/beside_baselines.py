"""The model card's "Metrics beside baselines" section: the model's primary metric beside every trivial
baseline per split, with bootstrap intervals and model − baseline deltas where the evaluation computed
them, a verdict per split, and every other metric in one table per split.

A cosine means nothing on its own, so this is the part of the card a reader should trust or doubt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from lvm_core.evaluation.bootstrap import format_delta, format_interval
from lvm_core.evaluation.model_card.markdown import cell, table
from lvm_core.evaluation.result import SELECTION_SPLIT, select_baseline, split_label

__all__ = ["metrics_section"]

SPLIT_NAMES = ("train", "val", "ood", "test")
BASELINE_ORDER = ("copy_last", "mean", "context_mean", "recency_weighted", "recency_weighted_mean", "ridge")
PRIMARY_METRIC = "cosine"


def _metrics_by_split(metrics: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Normalise to metrics[split][predictor][metric]."""
    if not metrics:
        return {}
    split_major = all(k in SPLIT_NAMES for k in metrics)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for outer, inner in metrics.items():
        if not isinstance(inner, Mapping):
            continue
        for mid, value in inner.items():
            split, predictor = (outer, mid) if split_major else (mid, outer)
            entry = dict(value) if isinstance(value, Mapping) else {PRIMARY_METRIC: value}
            out.setdefault(str(split), {})[str(predictor)] = entry
    return out


def _order_predictors(predictors: Sequence[str], model_name: str | None) -> list[str]:
    def rank(p: str) -> tuple[int, int, str]:
        if p == model_name:
            return (0, 0, p)
        if p in BASELINE_ORDER:
            return (1, BASELINE_ORDER.index(p), p)
        return (2, 0, p)

    return sorted(predictors, key=rank)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _with_interval(value: Any, iv: Mapping[str, Any] | None) -> Any:
    """`0.5690 [0.5610, 0.5770]` when an interval exists, else the value as is."""
    if not iv or _num(value) is None:
        return value
    return format_interval(float(value), _num(iv.get("low")), _num(iv.get("high")))


@dataclass(frozen=True)
class _MetricView:
    """metrics[split][predictor][metric] with its intervals and deltas, predictors in card order."""

    by_split: dict[str, dict[str, dict[str, Any]]]
    model_name: str | None
    ordered: list[str]
    splits: list[str]
    intervals: Mapping[str, Any]
    deltas: Mapping[str, Any]
    ood_kind: str | None = None

    @property
    def has_intervals(self) -> bool:
        return bool(self.intervals or self.deltas)

    @property
    def report(self) -> str:
        """The reported split: test when it has windows, else val."""
        return "test" if any(m.get("n_windows", 1) for m in self.by_split.get("test", {}).values()) else "val"

    def value(self, predictor: str, split: str) -> Any:
        return self.by_split[split].get(predictor, {}).get(PRIMARY_METRIC)

    def iv(self, predictor: str, split: str) -> Mapping[str, Any] | None:
        return cast(Mapping[str, Any] | None, (self.intervals.get(predictor) or {}).get(split, {}).get(PRIMARY_METRIC))

    def dl(self, predictor: str, split: str) -> Mapping[str, Any] | None:
        return ((self.deltas.get(split) or {}).get(predictor) or {}).get(PRIMARY_METRIC)


def _metric_view(
    metrics: Mapping[str, Any], model_name: str | None, intervals: Mapping[str, Any], deltas: Mapping[str, Any],
    ood_kind: str | None = None,
) -> _MetricView:
    by_split = _metrics_by_split(metrics)
    predictors: list[str] = []
    for split_rows in by_split.values():
        for p in split_rows:
            if p not in predictors:
                predictors.append(p)
    if model_name is None and predictors:
        model_name = predictors[0]
    splits = [s for s in SPLIT_NAMES if s in by_split] + [s for s in by_split if s not in SPLIT_NAMES]
    return _MetricView(by_split, model_name, _order_predictors(predictors, model_name), splits, intervals, deltas,
                       ood_kind)


def metrics_section(
    metrics: Mapping[str, Any],
    model_name: str | None,
    intervals: Mapping[str, Any] | None = None,
    deltas: Mapping[str, Any] | None = None,
    ood_kind: str | None = None,
) -> list[str]:
    """The headline table (primary metric beside the baselines, with intervals and deltas), what it says,
    and every other metric, one table per split. `ood_kind` "in_distribution" labels ood a second test sample."""
    view = _metric_view(metrics, model_name, intervals or {}, deltas or {}, ood_kind)
    if not view.by_split:
        return ["No metrics recorded."]
    lines: list[str] = []
    if any(PRIMARY_METRIC in m for rows in view.by_split.values() for m in rows.values()):
        lines += [_headline_table(view), ""]
        if view.has_intervals:
            lines += [f"[low, high]: article-level intervals. Reported split: {view.report}"
                      + ("" if view.report == "test" else " (no test split)") + "; val is used for selection.", ""]
        notes = _headline_notes(view)
        if notes:
            lines += [*notes, ""]
    return lines + _other_metric_tables(view)


def _headline_table(view: _MetricView) -> str:
    """Predictors × splits of the primary metric, with model − baseline deltas where computed."""
    delta_splits = [s for s in view.splits if any(view.dl(p, s) for p in view.ordered)]
    headers = ["predictor"]
    for s in view.splits:
        headers.append(f"{split_label(s, view.ood_kind)} {PRIMARY_METRIC}")
        if s in delta_splits:
            headers.append(f"{s} Δ model − baseline")
    rows = []
    for p in view.ordered:
        row: list[Any] = [f"**{p}** (model)" if p == view.model_name else p]
        for s in view.splits:
            row.append(_with_interval(view.value(p, s), view.iv(p, s)))
            if s in delta_splits:
                d = view.dl(p, s) or {}
                row.append(format_delta(_num(d.get("delta")), _num(d.get("low")), _num(d.get("high"))) if d else None)
        rows.append(row)
    return table(headers, rows)


def _headline_notes(view: _MetricView) -> list[str]:
    """Per split: does the model beat the best baseline (on the interval where there is one); the ood gap."""
    notes = []
    splits = sorted(view.splits, key=lambda x: x != view.report) if view.has_intervals else view.splits
    for s in splits:
        note = _baseline_note(view, s)
        if note:
            notes.append(note)
    by_split, model_name = view.by_split, view.model_name
    if view.ood_kind == "in_distribution" and "ood" in by_split:
        notes.append("- ood is a second in-distribution test sample (stratified split), not a shift: it is not "
                     "gated as one")
    elif view.ood_kind == "shift" and view.report in by_split and "ood" in by_split and model_name:
        v = by_split[view.report].get(model_name, {}).get(PRIMARY_METRIC)
        o = by_split["ood"].get(model_name, {}).get(PRIMARY_METRIC)
        if isinstance(v, (int, float)) and isinstance(o, (int, float)):
            notes.append(f"- |ood − {view.report}| {PRIMARY_METRIC} of the model (ood a held-out shift): "
                         f"{abs(float(o) - float(v)):.4f}")
    return notes


def _baseline_note(view: _MetricView, s: str) -> str | None:
    """The model against the one baseline of the primary comparison (best on val; on `s` only when there
    is no val) on split `s` (None without both numbers)."""
    model = view.model_name or ""
    model_v = view.by_split[s].get(model, {}).get(PRIMARY_METRIC)
    by_predictor: dict[str, dict[str, Any]] = {}
    for split, rows in view.by_split.items():
        for p, m in rows.items():
            by_predictor.setdefault(p, {})[split] = m
    chosen_on = SELECTION_SPLIT if SELECTION_SPLIT in view.by_split else s
    picked = select_baseline(by_predictor, view.model_name, chosen_on, PRIMARY_METRIC)
    if not isinstance(model_v, (int, float)) or picked is None:
        return None
    best_p = picked[0]
    best_v = view.by_split[s].get(best_p, {}).get(PRIMARY_METRIC)
    if not isinstance(best_v, (int, float)) or math.isnan(float(best_v)):
        return None
    label = f"{best_p}, best trivial baseline on {chosen_on}"
    d = view.dl(best_p, s) or {}
    low, high = _num(d.get("low")), _num(d.get("high"))
    name = split_label(s, view.ood_kind)
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        role = " (reported; primary comparison)" if s == view.report else ""
        verdict = "beats" if low > 0 else "is worse than" if high < 0 else "is not distinguishable from"
        return (
            f"- {name}{role}: the model ({_with_interval(float(model_v), view.iv(model, s))}) {verdict} "
            f"the baseline ({label}, {_with_interval(float(best_v), view.iv(best_p, s))}): "
            f"{format_delta(_num(d.get('delta')), low, high)}"
        )
    delta = float(model_v) - float(best_v)
    verdict = "beats" if delta > 0 else "does not beat"
    return f"- {name}: the model {verdict} the baseline ({label}, {cell(float(best_v))}) by {delta:+.4f}"


def _other_metric_tables(view: _MetricView) -> list[str]:
    """Every metric but the primary one, one table per split."""
    lines: list[str] = []
    for s in view.splits:
        names: list[str] = []
        for m in view.by_split[s].values():
            for k, v in m.items():
                if k != PRIMARY_METRIC and k not in names and not isinstance(v, (Mapping, list)):
                    names.append(k)
        if not names:
            continue
        rows = [[p, *[view.by_split[s].get(p, {}).get(k) for k in names]] for p in view.ordered if p in view.by_split[s]]
        lines += [f"**{s}** — all metrics", "", table(["predictor", *names], rows), ""]
    return lines
