"""Retry and artifact conventions shared by all tasks."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.tasks import exponential_backoff

from lvm_core.contracts.errors import LvmError


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may succeed next time. The project's errors say so themselves (`LvmError.permanent`: bad
    input, contract breaches, failed gates never; a snapshot source that did not answer may); of other exceptions,
    bad input and a path that is not there never do (a remote source's errors arrive as `SnapshotSourceError`, so
    a missing file here is a local one), anything else may."""
    try:
        state.result(raise_on_failure=True)
    except LvmError as exc:
        return not exc.permanent
    except (ValueError, LookupError, TypeError, FileNotFoundError):  # bad input, no such key or path
        return False
    except Exception:  # noqa: BLE001 - a worker, network or disk hiccup
        return True
    return True


# I/O (reading dumps, writing Parquet): transient failures are retried with backoff and jitter.
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
}
# Compute steps: one retry (a worker hiccup), no point hammering a deterministic failure.
COMPUTE_RETRIES: dict[str, Any] = {"retries": 1, "retry_delay_seconds": 5, "retry_condition_fn": is_transient}

HOUR = 3600
# Tag-based concurrency limit (created by deployments/setup.py): CPU-bound steps do not share cores.
HEAVY_CPU_TAG = "lvm-heavy-cpu"


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def publish_table(rows: list[dict[str, Any]], key: str, description: str) -> None:
    create_table_artifact(rows, key=artifact_key(key), description=description)


def publish_markdown(markdown: str, key: str, description: str) -> None:
    create_markdown_artifact(markdown, key=artifact_key(key), description=description)


def gates_markdown(title: str, gates: dict[str, dict[str, Any]], extra: str = "") -> str:
    lines = [f"## {title}", "", "| gate | passed | value | threshold |", "|---|---|---|---|"]
    for name, g in gates.items():
        mark = "✅" if g.get("passed") else "❌"
        lines.append(f"| {name} | {mark} | {_fmt(g.get('value'))} | {_fmt(g.get('threshold'))} |")
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, dict) and {"delta", "low", "high"} <= set(v):  # beats_best_baseline: Δ with its interval
        from lvm_core.evaluation.bootstrap import format_delta

        delta, low, high = (None if v[k] is None else float(v[k]) for k in ("delta", "low", "high"))
        text = format_delta(delta, low, high)
        return f"{text} vs {v.get('baseline', '?')} ({v.get('split', '?')})"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
