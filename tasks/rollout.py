"""Prefect tasks of a staged rollout: thin wrappers over lvm_core.rollout, plus one artifact per decision."""

from __future__ import annotations

import os
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lvm_core.rollout import plan as rollout_plan
from lvm_core.rollout import state as rollout_state
from lvm_core.rollout.decision import Decision
from lvm_core.rollout.state import RolloutState
from lvm_core.rollout.stats import read_service_stats
from lvm_core.serving.settings import TOKEN_ENV
from tasks.common import IO_RETRIES, publish_markdown


@task(name="rollout-start", task_run_name="rollout-start-{name}-v{version}", cache_policy=NO_CACHE)
def start(name: str, version: int, plan: list[float]) -> RolloutState:
    """Refuses a version whose offline gates failed (never retried: the answer will not change)."""
    return rollout_plan.start(name, version, plan)


@task(name="rollout-read-state", cache_policy=NO_CACHE, **IO_RETRIES)
def read_state(name: str) -> RolloutState:
    return rollout_state.read_state(name)


@task(name="rollout-set-step", task_run_name="rollout-set-step-{name}-{step}", cache_policy=NO_CACHE, **IO_RETRIES)
def set_step(name: str, step: int) -> RolloutState:
    return rollout_plan.set_step(name, step)


@task(name="rollout-read-stats", cache_policy=NO_CACHE, **IO_RETRIES)
def read_stats(urls: list[str], state: RolloutState) -> dict[str, Any]:
    """Both versions' live stats since the step began, merged over the service replicas (token from the env)."""
    champion, challenger, notes = read_service_stats(urls, state, token=os.environ.get(TOKEN_ENV) or None)
    return {"champion": champion, "challenger": challenger, "replicas": notes}


@task(name="rollout-record", task_run_name="rollout-record-{name}-step{step}-{decision.action}", cache_policy=NO_CACHE,
      **IO_RETRIES)
def record(name: str, challenger: int, step: int, decision: Decision) -> None:
    """The decision on the registered model (tags) and as a markdown artifact of this step in the UI."""
    rollout_plan.record_decision(name, decision)
    publish_markdown(decision_markdown(name, challenger, step, decision), f"rollout-{name}-v{challenger}-step-{step}",
                     f"Rollout of {name} v{challenger}, step {step}: {decision.action}")


@task(name="rollout-promote", task_run_name="rollout-promote-{name}", cache_policy=NO_CACHE)
def promote(name: str) -> dict[str, Any]:
    return rollout_plan.promote_challenger(name).to_dict()


@task(name="rollout-rollback", task_run_name="rollout-rollback-{name}", cache_policy=NO_CACHE, **IO_RETRIES)
def rollback(name: str, reason: str, decision: Decision | None = None) -> RolloutState:
    return rollout_plan.rollback(name, reason, decision)


def decision_markdown(name: str, challenger: int, step: int, d: Decision) -> str:
    """A table of both versions' numbers beside the thresholds, under the decision and its reason."""
    n = d.numbers or {}
    ch, cp = n.get("challenger") or {}, n.get("champion") or {}
    t = n.get("thresholds") or {}

    def f(v: Any, fmt: str = "{:.4f}") -> str:
        return "" if v is None else fmt.format(v)

    rows = [
        ("requests", f(cp.get("requests"), "{}"), f(ch.get("requests"), "{}"), f"≥ {t.get('min_requests')}"),
        ("server errors", f(cp.get("errors"), "{}"), f(ch.get("errors"), "{}"), ""),
        ("error rate", f(cp.get("error_rate"), "{:.2%}"), f(ch.get("error_rate"), "{:.2%}"),
         f"challenger ≤ champion + {t.get('max_error_rate_increase')}"),
        ("p99 latency (ms)", f(_ms(cp.get("p99_latency_s")), "{:.1f}"), f(_ms(ch.get("p99_latency_s")), "{:.1f}"),
         f"≤ {t.get('max_p99_ratio')} × champion + {_ms(t.get('p99_slack_s'))} ms"),
        ("online cosine", f(cp.get("cosine_mean")), f(ch.get("cosine_mean")),
         f"drop ≤ {t.get('max_cosine_drop')}"),
        ("feedback count", f(cp.get("cosine_count"), "{}"), f(ch.get("cosine_count"), "{}"),
         f"≥ {t.get('min_feedback')}"),
    ]
    lines = [f"## Rollout of {name} v{challenger} — step {step} (share {n.get('share', 0):.0%}): **{d.action}**", "",
             d.reason, "", f"| metric | champion v{cp.get('version', '?')} | challenger v{challenger} | threshold |",
             "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
    lines += ["", f"Decided at {d.at}; challenger share afterwards {d.share:.0%}."]
    return "\n".join(lines)


def _ms(v: Any) -> float | None:
    return None if v is None else float(v) * 1e3
