"""Great Expectations suites for the pre-training data gates and the code that runs them as a checkpoint.

Importing this package is cheap; Great Expectations itself is imported on first use of the runner.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "build_gate_frames",
    "load_suite",
    "raise_for_failures",
    "run_pre_training_gates",
    "suite_parameters",
    "SuiteError",
]


def __getattr__(name: str) -> Any:
    if name == "build_gate_frames":
        from expectations.frames import build_gate_frames

        return build_gate_frames
    if name in {"load_suite", "raise_for_failures", "run_pre_training_gates", "suite_parameters", "SuiteError"}:
        from expectations import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'expectations' has no attribute {name!r}")
