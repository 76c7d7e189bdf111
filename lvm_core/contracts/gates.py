"""Gate thresholds, results and outcomes: the one definition the data gates, the model gates and the registry share.

- `GateThresholds`: every threshold, data and model, with the plan's defaults.
- `GateResult` / `GateReport`: what one stage's gates measured; `GateReport.to_manifest()` is the
  ``gates`` section of manifest.json (typed there as `lvm_core.contracts.manifest.GateOutcome`).
- `gate_outcomes` / `failed_gates`: any of the forms gate results travel in, read as one
  ``name -> {passed, value, threshold}`` record; runs, registration, promotion and rollout decide on it.

Every gate records its value and threshold so a person can see by how much it passed or failed. The
gates are computed elsewhere from these thresholds: the data gates by the Great Expectations suites in
``expectations/``, the model gates from an evaluation result by `lvm_core.evaluation.gates`; the
registry stores and reads outcomes in `lvm_core.tracking.gate_outcomes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lvm_core.contracts.errors import UserError
from lvm_core.io.plain import to_plain

#: Old threshold names that did not name the split they gate -> their names now (kept for `--threshold`).
THRESHOLD_ALIASES: dict[str, str] = {"min_val_cosine": "min_test_cosine", "max_ood_val_gap": "max_ood_test_gap"}


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
    # share of re-encoded target texts (eval and train samples) whose row, or a same-text row, is among the 5
    # nearest stored vectors: below 1 only through near-duplicate neighbourhoods (tolerated up to 3%) or broken
    # alignment; the exact alignment check is the count of misaligned rows, gated at 0
    min_oracle_recall_at_5: float = 0.97
    max_oracle_misaligned: int = 0
    max_split_ks: float = 0.5  # KS statistic of coherence, eval split vs train, after the purge
    max_split_mean_diff: float = 0.1  # |mean coherence(split) - mean coherence(train)|
    unit_norm_tolerance: float = 1e-3
    # post-training (model), on the reporting split: test, or val for datasets built without a test split
    min_test_cosine: float = 0.55
    # the ood gates apply only where ood is a real shift (ranges or titles held out: manifest ood_kind "shift");
    # a stratified ood is a second in-distribution test sample, reported as such and not gated as a shift
    min_ood_cosine: float = 0.55
    max_ood_test_gap: float = 0.05
    must_beat_best_baseline: bool = True
    # the primary comparison: the LOWER bound of the delta's interval (model − the best trivial baseline chosen
    # on val, cosine, reporting split) must exceed this margin
    beats_baseline_margin: float = 0.0
    # evaluations recorded on the same test split (same split hash), this one included: a warning above
    # `warn_test_evaluations`, a failing gate above `max_test_evaluations` (retrying until a test passes is fishing)
    warn_test_evaluations: int = 3
    max_test_evaluations: int = 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GateThresholds:
        """Thresholds by name; the old names in `THRESHOLD_ALIASES` still work (`--threshold min_val_cosine=...`)."""
        data = dict(data or {})
        for old, new in THRESHOLD_ALIASES.items():
            if old in data:
                if new in data:
                    raise ValueError(f"gate threshold {old!r} is the old name of {new!r}: give one of them")
                data[new] = data.pop(old)
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


class GateFailedError(UserError, RuntimeError):
    """Raised to stop a flow when a gate failed; names the failed gates."""

    def __init__(self, report: GateReport, where: str = ""):
        self.report = report
        names = ", ".join(report.failed) or "?"
        suffix = f" (results: {where})" if where else ""
        super().__init__(f"{report.stage} gates failed: {names}{suffix}")


# --- outcomes: the form the registry records and promotion decides on ------------------------------------

_META_KEYS = ("stage", "docs_path")  # keys of a gate report that are not gates


def gate_outcome(passed: bool, value: Any = None, threshold: Any = None) -> dict[str, Any]:
    """One gate's outcome record: `{passed, value, threshold}`."""
    return {"passed": passed, "value": value, "threshold": threshold}


def gate_outcomes(report: Any) -> dict[str, dict[str, Any]]:
    """Normalise gate results to `name -> {passed, value, threshold}`.

    Accepts the three forms callers hold: a `GateReport` (evaluation), its `to_manifest()` form
    `name -> {passed, value, threshold, ...}` (a dataset manifest's gates, optionally with a `stage` key),
    or `name -> bool` (the `gate_results` tag of a model version).
    """
    if report is None:
        raise ValueError("gate report is None")
    if hasattr(report, "results") and not isinstance(report, Mapping):
        report = _by_name([r.to_dict() if hasattr(r, "to_dict") else r for r in report.results])
    if not isinstance(report, Mapping):
        raise ValueError(f"gate report must be a GateReport or a dict, got {type(report).__name__}")
    entries = {str(k): v for k, v in to_plain(report).items() if k not in _META_KEYS}
    if not entries:
        raise ValueError("gate report contains no gate results")
    return {name: _outcome(name, entry) for name, entry in entries.items()}


def failed_gates(outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names of the gates that did not pass, sorted."""
    return sorted(name for name, o in outcomes.items() if not o["passed"])


def _by_name(items: list[Any]) -> dict[str, Any]:
    """A GateReport's result list as `name -> result`."""
    for item in items:
        if not isinstance(item, Mapping) or "name" not in item or "passed" not in item:
            raise ValueError(f"gate result entry {item!r} needs 'name' and 'passed'")
    return {str(item["name"]): item for item in items}


def _outcome(name: str, entry: Any) -> dict[str, Any]:
    if isinstance(entry, bool):
        return gate_outcome(entry)
    if isinstance(entry, Mapping) and "passed" in entry:
        return gate_outcome(bool(entry["passed"]), entry.get("value"), entry.get("threshold"))
    raise ValueError(f"gate {name!r}: cannot read a pass/fail result from {entry!r}")
