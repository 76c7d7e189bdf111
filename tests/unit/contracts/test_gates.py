"""Gate outcomes read from a gate report, a manifest's gates or a flat mapping."""

from __future__ import annotations

import pytest

from lvm_core.contracts.gates import GateReport, GateResult, gate_outcomes


def test_gate_outcomes_formats():
    report = GateReport(stage="model", results=[GateResult("a", True, 1.0, 0.5), GateResult("b", False)])
    assert gate_outcomes(report)["b"]["passed"] is False
    assert gate_outcomes(report.to_manifest())["a"] == {"passed": True, "value": 1.0, "threshold": 0.5}
    assert gate_outcomes({"stage": "pre_training", "a": True})["a"]["passed"] is True
    with pytest.raises(ValueError, match="no gate results"):
        gate_outcomes({})
    with pytest.raises(ValueError, match="cannot read"):
        gate_outcomes({"x": "maybe"})
