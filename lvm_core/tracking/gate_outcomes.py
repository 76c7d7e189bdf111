"""Gate outcomes as a model version's tags: the tags written at registration and promotion, and read back.

The outcome record itself (`name -> {passed, value, threshold}`) and its normalisation are
`lvm_core.contracts.gates.gate_outcomes`; this module only stores and reads it in the registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.contracts.gates import gate_outcome, gate_outcomes
from lvm_core.tracking.tags import TAG_FAILED_GATES, TAG_GATE_RESULTS, TAG_GATES_PASSED, tag_value


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
