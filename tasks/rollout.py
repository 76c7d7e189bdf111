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
def start(name: str, version: int, plan: list[float], owner: str, lease_seconds: float) -> RolloutState:
    """Refuses a version whose offline gates failed, or while another rollout or start is active (never
    retried: the answer will not change by retrying at once)."""
    return rollout_plan.start(name, version, plan, owner=owner, lease_seconds=lease_seconds)


@task(name="rollout-expire-stale", task_run_name="rollout-expire-stale-{name}", cache_policy=NO_CACHE, **IO_RETRIES)
def expire_stale(name: str) -> RolloutState | None:
    """End a rollout whose flow stopped renewing its lease; the state it had, for the alert."""
    return rollout_plan.expire_stale(name)


@task(name="rollout-renew-lease", cache_policy=NO_CACHE, **IO_RETRIES)
def renew_lease(name: str, owner: str, lease_seconds: float, current: RolloutState) -> RolloutState:
    return rollout_plan.renew_lease(name, owner, lease_seconds, current)


@task(name="rollout-read-state", cache_policy=NO_CACHE, **IO_RETRIES)
def read_state(name: str) -> RolloutState:
    return rollout_state.read_state(name)


@task(name="rollout-set-step", task_run_name="rollout-set-step-{name}-{step}", cache_policy=NO_CACHE, **IO_RETRIES)
def set_step(name: str, step: int) -> RolloutState:
    return rollout_plan.set_step(name, step)


@task(name="rollout-read-stats", cache_policy=NO_CACHE)
def read_stats(urls: list[str], state: RolloutState) -> dict[str, Any]:
    """Both versions' live stats since the step began, merged over the service replicas (token from the env).

    Not retried here: the flow tolerates an unreachable service for a bounded time of its own choosing."""
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
    """Both versions' numbers, then each test's estimate, interval, margin and verdict, under the decision."""
    n = d.numbers or {}
    ch, cp = n.get("challenger") or {}, n.get("champion") or {}
    tests = n.get("tests") or {}

    def f(v: Any, fmt: str = "{:.4f}") -> str:
        return "" if v is None else fmt.format(v)

    rows = [
        ("requests", f(cp.get("requests"), "{}"), f(ch.get("requests"), "{}")),
        ("clients", f(cp.get("clients"), "{}"), f(ch.get("clients"), "{}")),
        ("server errors", f(cp.get("errors"), "{}"), f(ch.get("errors"), "{}")),
        ("error rate", f(cp.get("error_rate"), "{:.2%}"), f(ch.get("error_rate"), "{:.2%}")),
        ("p99 latency (ms)", f(_ms(cp.get("p99_latency_s")), "{:.2f}"), f(_ms(ch.get("p99_latency_s")), "{:.2f}")),
        ("online cosine", f(cp.get("cosine_mean")), f(ch.get("cosine_mean"))),
        ("feedback count", f(cp.get("cosine_count"), "{}"), f(ch.get("cosine_count"), "{}")),
    ]
    lines = [f"## Rollout of {name} v{challenger} — step {step} (share {n.get('share', 0):.0%}): **{d.action}**", "",
             d.reason, "", f"| metric | champion v{cp.get('version', '?')} | challenger v{challenger} |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "| test | challenger − champion | confidence sequence | margin | verdict |", "|---|---|---|---|---|"]
    for key in ("error_rate", "online_cosine"):
        c = tests.get(key)
        if c:
            interval = "" if c.get("lower") is None else f"[{c['lower']:+.4f}, {c['upper']:+.4f}]"
            lines.append(f"| {c['metric']} | {f(c.get('difference'), '{:+.4f}')} | {interval} "
                         f"(level {1 - c['alpha']:.0%}, all looks) | {c['margin']} | {c['verdict']} |")
    lat = tests.get("p99_latency") or {}
    if lat:
        lines.append(f"| p99 latency | lower bound {f(_ms(lat.get('challenger_p99_lower_s')), '{:.2f}')} ms | "
                     f"limit {f(_ms(lat.get('limit_s')), '{:.2f}')} ms | ratio × champion + slack | "
                     f"{'worse' if lat.get('worse') else 'ok'} |")
    lines += ["", f"Decided at {d.at} (extra periods so far: {n.get('holds', 0)}); challenger share afterwards "
              f"{d.share:.0%}."]
    return "\n".join(lines)


def _ms(v: Any) -> float | None:
    return None if v is None else float(v) * 1e3
