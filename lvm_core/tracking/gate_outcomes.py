"""Gate results in the one form the registry records and promotion decides on: `name -> {passed, value, threshold}`.

Why a module of its own: gate results reach tracking from the data build (a manifest's `gates`), from
evaluation (a `GateReport`) and back from the registry (a version's `gate_results` tag); runs, registration,
promotion and rollout must all read them the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lvm_core.io.plain import to_plain as _plain
from lvm_core.tracking.tags import TAG_FAILED_GATES, TAG_GATE_RESULTS, TAG_GATES_PASSED

_META_KEYS = ("stage", "docs_path")  # keys of a gate report that are not gates


def gate_outcomes(report: Any) -> dict[str, dict[str, Any]]:
    """Normalise gate results to `name -> {passed, value, threshold}`.

    Accepts the three forms callers hold: a `lvm_core.contracts.gates.GateReport` (evaluation), its
    `to_manifest()` form `name -> {passed, value, threshold, ...}` (a dataset manifest's gates, optionally
    with a `stage` key), or `name -> bool` (the `gate_results` tag of a model version).
    """
    if report is None:
        raise ValueError("gate report is None")
    if hasattr(report, "results") and not isinstance(report, Mapping):
        report = _by_name([r.to_dict() if hasattr(r, "to_dict") else r for r in report.results])
    if not isinstance(report, Mapping):
        raise ValueError(f"gate report must be a GateReport or a dict, got {type(report).__name__}")
    entries = {str(k): v for k, v in _plain(report).items() if k not in _META_KEYS}
    if not entries:
        raise ValueError("gate report contains no gate results")
    return {name: _outcome(name, entry) for name, entry in entries.items()}


def _by_name(items: list[Any]) -> dict[str, Any]:
    """A GateReport's result list as `name -> result`."""
    for item in items:
        if not isinstance(item, Mapping) or "name" not in item or "passed" not in item:
            raise ValueError(f"gate result entry {item!r} needs 'name' and 'passed'")
    return {str(item["name"]): item for item in items}


def _outcome(name: str, entry: Any) -> dict[str, Any]:
    if isinstance(entry, bool):
        return {"passed": entry, "value": None, "threshold": None}
    if isinstance(entry, Mapping) and "passed" in entry:
        return {"passed": bool(entry["passed"]), "value": entry.get("value"), "threshold": entry.get("threshold")}
    raise ValueError(f"gate {name!r}: cannot read a pass/fail result from {entry!r}")


def failed_gates(outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names of the gates that did not pass, sorted."""
    return sorted(name for name, o in outcomes.items() if not o["passed"])


def recorded_gate_outcomes(mv: Any) -> dict[str, dict[str, Any]] | None:
    """The gate outcomes recorded on a model version (gate_results, else gates_passed/failed_gates); None if none."""
    tags = mv.tags or {}
    if TAG_GATE_RESULTS in tags:
        try:
            return gate_outcomes(json.loads(tags[TAG_GATE_RESULTS]))
        except ValueError:
            pass
    if TAG_GATES_PASSED in tags:
        failed = [g for g in tags.get(TAG_FAILED_GATES, "").split(",") if g]
        if tags[TAG_GATES_PASSED] == "true":
            return {"all": {"passed": True, "value": None, "threshold": None}}
        return {g: {"passed": False, "value": None, "threshold": None} for g in failed or ["unknown"]}
    return None
