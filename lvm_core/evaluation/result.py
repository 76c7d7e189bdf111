"""The outcome of an evaluation: every metric of every predictor on the same windows, its intervals, and
the JSON form written as evaluation.json (`to_dict` / `from_dict`).

The gates, the report, the model card and the CLI read this one type (or its JSON), so which split is
reported (`reporting_split`) and which metrics carry intervals are decided here, once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lvm_core.evaluation.inputs import EvaluationError
from lvm_core.io.plain import to_plain

__all__ = [
    "INTERVAL_METRICS",
    "LOWER_IS_BETTER",
    "REPORTING_SPLITS",
    "SELECTION_SPLIT",
    "SUMMARY_METRICS",
    "EvaluationResult",
    "reporting_split",
    "select_baseline",
    "split_label",
]

#: Metrics where a lower value is better (everything else: higher is better).
LOWER_IS_BETTER = frozenset({"median_rank"})
SUMMARY_METRICS = ("cosine", "margin", "r@5", "mrr", "contrastive_acc", "within_r@1")
#: Metrics that are means over windows: each gets an article-bootstrap interval, and a model − baseline
#: delta with its interval (DESIGN "Evaluation": intervals).
INTERVAL_METRICS = (
    "cosine", "margin", "r@1", "r@5", "r@10", "mrr", "within_r@1", "within_r@5", "within_mrr", "contrastive_acc",
)
#: Split whose numbers are reported and gated: `test` where the evaluation has it, else `val` (older datasets).
REPORTING_SPLITS = ("test", "val")
#: Split on which the best trivial baseline is chosen, once, for the gate, the report and the model card.
SELECTION_SPLIT = "val"


def select_baseline(
    metrics: Mapping[str, Mapping[str, Mapping[str, Any]]],
    model: str | None,
    split: str = SELECTION_SPLIT,
    metric: str = "cosine",
    exclude: Iterable[str] = (),
) -> tuple[str, float] | None:
    """(name, value) of the best predictor but `model` (and `exclude`) on `split` by `metric` from
    `metrics[predictor][split][metric]`; None when none has a finite value. Choosing on val, not on the
    split being reported, keeps the comparison honest: the report, the card and the gate all call this."""
    cands = []
    for p, by_split in metrics.items():
        if p == model or p in set(exclude) or not isinstance(by_split, Mapping):
            continue
        v = (by_split.get(split) or {}).get(metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            cands.append((str(p), float(v)))
    if not cands:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(cands, key=lambda c: c[1])


def split_label(split: str, ood_kind: str | None) -> str:
    """How a split is named in reports: a stratified (in-distribution) ood is a second test sample, not a shift."""
    if split == "ood" and ood_kind == "in_distribution":
        return "ood (2nd in-distribution test sample)"
    return split


def reporting_split(source: Any) -> str:
    """The split to report and gate: "test" when `source` has test windows, otherwise "val".

    `source` is an `EvaluationResult`, its `to_dict()`, a `metrics[predictor][split][metric]` dict or a
    sequence of split names. A test split listed with 0 windows does not count.
    """
    metrics: Mapping[str, Any]
    if isinstance(source, EvaluationResult):
        splits, metrics = source.splits, source.metrics
    elif isinstance(source, Mapping) and "splits" in source:
        splits, metrics = list(source["splits"]), source.get("metrics") or {}
    elif isinstance(source, Mapping):
        metrics = source
        splits = sorted({s for per_split in metrics.values() if isinstance(per_split, Mapping) for s in per_split})
    else:
        splits, metrics = list(source), {}

    def has_windows(split: str) -> bool:
        if split not in splits:
            return False
        counts: list[Any] = [m.get(split, {}).get("n_windows") for m in metrics.values() if isinstance(m, Mapping)]
        counts = [c for c in counts if c is not None]
        return not counts or any(int(c) > 0 for c in counts)

    return next((s for s in REPORTING_SPLITS if has_windows(s)), "val")


def _int_keys(d: Mapping[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in d.items()}


def _nan(v: Any) -> Any:
    return float("nan") if v is None else v


@dataclass
class EvaluationResult:
    """All metrics of all predictors on the same windows; the first predictor is the model.

    metrics[predictor][split][metric]; offset_sweep[predictor][split][k] = mean cosine, with
    offset_counts[split][k] windows; neighbors[split] for the model; metrics_by_bin[predictor][split][bin]
    = mean cosine with bin_counts[split][bin]; data_direction[split][j]. (No oracle here: the self-query
    oracle cannot fail; the data gate's oracle re-encodes texts, `lvm_core.data.build.oracle`.)

    Intervals (article-level bootstrap, settings in config["bootstrap"]):
    intervals[predictor][split][metric] = {"mean", "low", "high"} for every metric in INTERVAL_METRICS;
    deltas[split][baseline][metric] = {"delta", "low", "high"}: model − baseline on the same windows.
    """

    predictors: list[str]
    splits: list[str]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    offset_sweep: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    offset_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    neighbors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics_by_bin: dict[str, dict[str, dict[Any, float]]] = field(default_factory=dict)
    bin_counts: dict[str, dict[Any, int]] = field(default_factory=dict)
    data_direction: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    deltas: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.predictors[0]

    @property
    def reporting_split(self) -> str:
        """ "test" when this result has test windows, else "val" (see `reporting_split`)."""
        return reporting_split(self)

    def interval(self, predictor: str, split: str, name: str = "cosine") -> tuple[float, float]:
        """(low, high) of a metric's article-bootstrap interval; (nan, nan) when none was computed."""
        iv = self.intervals.get(predictor, {}).get(split, {}).get(name) or {}
        return float(_nan(iv.get("low"))), float(_nan(iv.get("high")))

    def delta(self, baseline: str, split: str, name: str = "cosine") -> dict[str, float]:
        """{"delta", "low", "high"} of model − `baseline` on `split` (NaN entries when not computed)."""
        d = self.deltas.get(split, {}).get(baseline, {}).get(name) or {}
        return {k: float(_nan(d.get(k))) for k in ("delta", "low", "high")}

    def metric(self, predictor: str, split: str, name: str) -> float:
        try:
            return float(_nan(self.metrics[predictor][split][name]))
        except KeyError as exc:
            raise EvaluationError(f"no metric {name!r} for predictor {predictor!r} on split {split!r}") from exc

    def best_baseline(
        self, split: str = SELECTION_SPLIT, metric: str = "cosine", exclude: str | Iterable[str] | None = None
    ) -> tuple[str, float]:
        """(name, value) of the best predictor other than `exclude` (default: the model) on `split`."""
        excl = {self.model_name} if exclude is None else ({exclude} if isinstance(exclude, str) else set(exclude))
        found = select_baseline(self.metrics, None, split, metric, exclude=excl)
        if found is None:
            raise EvaluationError(f"best_baseline: no baseline has metric {metric!r} on split {split!r}")
        return found

    @property
    def ood_kind(self) -> str | None:
        """What the ood split is ("shift" or "in_distribution"), as the dataset's manifest said; None if unknown."""
        kind = self.config.get("ood_kind")
        return None if kind is None else str(kind)

    def ood_val_gap(self, predictor: str | None = None, metric: str = "cosine") -> float:
        """|ood - val| of a metric (default: the model's cosine)."""
        p = predictor or self.model_name
        return abs(self.metric(p, "ood", metric) - self.metric(p, "val", metric))

    def summary_table(self, metrics: Sequence[str] = SUMMARY_METRICS) -> list[dict[str, Any]]:
        """Rows predictor × split with cosine, margin, r@5, mrr, contrastive accuracy, within-article R@1 and n_windows."""
        rows = []
        for p in self.predictors:
            for s in self.splits:
                m = self.metrics.get(p, {}).get(s, {})
                row: dict[str, Any] = {"predictor": p, "split": s}
                row.update({k: m.get(k) for k in metrics})
                row["n_windows"] = m.get("n_windows")
                rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, int keys -> str); written as evaluation.json, read back by `from_dict`."""
        plain: dict[str, Any] = to_plain(
            {
                "predictors": self.predictors,
                "splits": self.splits,
                "metrics": self.metrics,
                "offset_sweep": self.offset_sweep,
                "offset_counts": self.offset_counts,
                "neighbors": self.neighbors,
                "metrics_by_bin": self.metrics_by_bin,
                "bin_counts": self.bin_counts,
                "data_direction": self.data_direction,
                "config": self.config,
                "intervals": self.intervals,
                "deltas": self.deltas,
            },
            nan_to_none=True,
        )
        return plain

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Inverse of `to_dict`: a stored evaluation.json as a result again (the model gates accept either).

        Bin keys stay strings and None stays None; results written before intervals existed load with none; an old
        self-query `oracle_recall` entry is ignored.
        """
        return cls(
            predictors=list(data["predictors"]),
            splits=list(data["splits"]),
            metrics=data.get("metrics", {}),
            offset_sweep={p: {s: _int_keys(v) for s, v in d.items()} for p, d in data.get("offset_sweep", {}).items()},
            offset_counts={s: _int_keys(v) for s, v in data.get("offset_counts", {}).items()},
            neighbors=data.get("neighbors", {}),
            metrics_by_bin=data.get("metrics_by_bin", {}),
            bin_counts=data.get("bin_counts", {}),
            data_direction=data.get("data_direction", {}),
            config=data.get("config", {}),
            intervals=data.get("intervals", {}),
            deltas=data.get("deltas", {}),
        )
