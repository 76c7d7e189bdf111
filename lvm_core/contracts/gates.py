"""Gate thresholds and results shared by the pre-training (data) and post-training (model) gates.

Thresholds default to the plan's values; every gate records its value and threshold so a person can
see by how much it passed or failed. The model gates themselves (`post_training_gates`) read an
evaluation result and live in `lvm_core.evaluation.gates`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateThresholds:
    """Configurable gate thresholds (plan defaults)."""

    # pre-training (data)
    # leakage is gated on the RAW rates per eval split, before the purge (the remainder after it is 0 by
    # construction), and on the share of each eval split's windows the purge removed
    max_leakage_rate: float = 0.01  # chunks whose text hash also occurs in train
    max_near_duplicate_rate: float = 0.01  # chunks with cos >= near_dup_threshold to a train chunk
    max_purged_fraction: float = 0.01  # purged windows / windows before the purge
    max_crossing_windows: int = 0
    min_oracle_recall_at_5: float = 0.97
    max_split_ks: float = 0.5  # KS statistic of coherence, eval split vs train, after the purge
    max_split_mean_diff: float = 0.1  # |mean coherence(split) - mean coherence(train)|
    unit_norm_tolerance: float = 1e-3
    # post-training (model), on the reporting split: test, or val for datasets built without a test split
    # (the names keep their old spelling so existing --threshold overrides still work)
    min_val_cosine: float = 0.55
    min_ood_cosine: float = 0.55
    max_ood_val_gap: float = 0.05
    must_beat_best_baseline: bool = True
    # the LOWER bound of the delta's interval (model − best trivial baseline, cosine, reporting split) must
    # exceed this margin
    beats_baseline_margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "GateThresholds":
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown gate threshold(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class GateResult:
    """One gate: did it pass, what was measured, against what."""

    name: str
    passed: bool
    value: Any = None
    threshold: Any = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateReport:
    """All gates of one stage; `passed` only when every gate passed."""

    stage: str
    results: list[GateResult] = field(default_factory=list)
    docs_path: str | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.passed]

    def to_manifest(self) -> dict[str, dict[str, Any]]:
        """`gates` section of manifest.json: name -> {passed, value, threshold}."""
        return {
            r.name: {"passed": r.passed, "value": r.value, "threshold": r.threshold, "detail": r.detail}
            for r in self.results
        }


class GateFailedError(RuntimeError):
    """Raised to stop a flow when a gate failed; names the failed gates."""

    def __init__(self, report: GateReport, where: str = ""):
        self.report = report
        names = ", ".join(report.failed) or "?"
        suffix = f" (results: {where})" if where else ""
        super().__init__(f"{report.stage} gates failed: {names}{suffix}")
