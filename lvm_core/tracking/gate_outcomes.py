"""Gate outcomes as a model version's tags: the tags written at registration and promotion, and read back.

The outcome record itself (`name -> {passed, value, threshold}`) and its normalisation are
`lvm_core.contracts.gates.gate_outcomes`; this module only stores and reads it in the registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.contracts.gates import failed_gates, gate_outcome, gate_outcomes
from lvm_core.tracking.tags import (
    TAG_FAILED_GATES,
    TAG_FORCED,
    TAG_GATE_RESULTS,
    TAG_GATES_PASSED,
    TAG_INCOMPLETE,
    tag_value,
)


def gate_outcome_tags(outcomes: Mapping[str, Mapping[str, Any]], failed: Sequence[str]) -> dict[str, str]:
    """Version tags of the outcomes: gates_passed, gate_results (`name -> passed`) and, when any, failed_gates."""
    tags = {
        TAG_GATES_PASSED: str(not failed).lower(),
        TAG_GATE_RESULTS: tag_value({k: v["passed"] for k, v in outcomes.items()}),
    }
    if failed:
        tags[TAG_FAILED_GATES] = ",".join(failed)
    return tags


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
            return {"all": gate_outcome(True)}
        return {g: gate_outcome(False) for g in failed or ["unknown"]}
    return None


def version_blockers(mv: Any, *, allow_forced: bool) -> list[str]:
    """Why a model version may not answer traffic (empty: it may), from its recorded tags.

    Failed offline gates, no gate results at all, or a killed training run block it. `allow_forced`: a
    version promoted with `force` (recorded as a tag) may still serve as champion, because an operator
    chose that explicitly; a rollout's challenger never gets that exception.
    """
    tags = mv.tags or {}
    if allow_forced and TAG_FORCED in tags:
        return []
    blockers: list[str] = []
    if TAG_INCOMPLETE in tags:
        blockers.append("incomplete training run")
    outcomes = recorded_gate_outcomes(mv)
    if outcomes is None:
        blockers.append("no gate results (evaluate it first: lvm evaluate)")
    else:
        failed = failed_gates(outcomes)
        if failed:
            blockers.append("failed gates " + ", ".join(failed))
    return blockers
