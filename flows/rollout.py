"""Flow: roll a challenger out to 5% → 20% → 100% of traffic, stepping only while it holds against the champion.

start (offline gates checked) → for each canary step: set the share, watch the step period (live stats
read from the services every `check_seconds`; a clear regression rolls back at once), decide at its end:
step, promote (the last step: the registry's promote makes it champion), hold for another period (too
few samples yet), or roll back. A rollback sets the share to 0, restores the champion alias, records the
decision on the registered model and sends a PagerDuty Events v2 `trigger` to `$LVM_ALERT_WEBHOOK_URL`.
Every decision is a markdown artifact of its step. A flow that fails mid-rollout rolls back first.
A rollout aborted or stepped by hand (`lvm rollout abort|promote`) is followed, not fought.

The rollout holds a lease on the registered model, renewed at every look: if this flow dies, the services
stop routing the challenger once the lease is past, and the next rollout run ends the stale one as `expired`
and alerts. A service that cannot be reached (a restart) is tolerated for `service_outage_seconds`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger

from flows.infra.hooks import RUN_HOOKS, pagerduty_event, send_alert
from lvm_core.contracts.layout import default_data_dir
from lvm_core.rollout.decision import Decision, StepWatch, Thresholds
from lvm_core.rollout.plan import default_owner, rollback
from lvm_core.rollout.state import DEFAULT_LEASE_S, DEFAULT_PLAN, PROMOTED, ROLLED_BACK, RolloutState, now, read_state
from lvm_core.runtime.environment import ALERT_URL_ENV
from lvm_core.tracking.references import current_champion
from lvm_core.tracking.setup import configure_tracking
from tasks import rollout as t

DEFAULT_SERVICE_URL = "http://127.0.0.1:8000"
SERVICE_URL_ENV = "LVM_SERVE_URL"
ROLLBACK_SEVERITY = "warning"


def rollout_dedup_key(name: str, challenger: int) -> str:
    """One incident per rolled-back challenger."""
    return f"lvm-rollout-{name}-v{challenger}"


def rollback_event(name: str, challenger: int, decision: Decision) -> dict[str, Any]:
    """The PagerDuty Events v2 body for an automatic rollback (the failure alert's shape, its own dedup key)."""
    from prefect.runtime import deployment, flow_run

    event = pagerduty_event(flow_name=flow_run.flow_name or "staged_rollout", flow_run_id=flow_run.id,
                            flow_run_name=flow_run.name or "", state_name="RolledBack", deployment=deployment.name,
                            message=decision.reason)
    event["dedup_key"] = rollout_dedup_key(name, challenger)
    event["payload"]["summary"] = f"LVM rollout of {name} v{challenger} rolled back: {decision.reason}"[:1024]
    event["payload"]["severity"] = ROLLBACK_SEVERITY
    event["payload"]["custom_details"].update(model=name, challenger=challenger, decision=decision.to_dict())
    return event


def _alert(name: str, challenger: int, decision: Decision, log: Any) -> bool:
    """Send the rollback alert; a lost alert is logged, never raised (the rollback itself is done)."""
    if not os.environ.get(ALERT_URL_ENV):
        log.warning("no %s set: rollback alert logged only", ALERT_URL_ENV)
        return False
    try:
        sent = send_alert(rollback_event(name, challenger, decision))
    except httpx.HTTPError as exc:
        log.warning("rollback alert for %s v%s not delivered: %s", name, challenger, exc)
        return False
    log.info("rollback alert for %s v%s sent", name, challenger)
    return sent


@flow(name="staged_rollout", flow_run_name="rollout-{name}-v{challenger}", log_prints=True, **RUN_HOOKS)
def staged_rollout(
    name: str,
    challenger: int,
    service_urls: list[str] | None = None,
    step_seconds: float = 600.0,
    check_seconds: float = 30.0,
    plan: list[float] = list(DEFAULT_PLAN),
    max_holds: int = 3,
    thresholds: Thresholds = Thresholds(),
    data_dir: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_S,
    service_outage_seconds: float = 120.0,
) -> dict[str, Any]:
    """Roll `challenger` out against the champion of `name`; returns the outcome and every decision.

    Args:
        name: Registered model name.
        challenger: Version to roll out; its offline gates must have passed.
        service_urls: Base URLs of every service replica (stats are merged) [default: $LVM_SERVE_URL or
            http://127.0.0.1:8000]. Their token is read from $LVM_SERVE_TOKEN, never a parameter.
        step_seconds: How long each share is watched before deciding.
        check_seconds: How often stats are read during a step (a regression rolls back before its end).
        plan: Challenger shares, increasing, ending at 1.0 (reaching it promotes).
        max_holds: Extra periods a step may wait for enough samples before the rollout is rolled back.
        thresholds: When the challenger holds (minimum samples, error rate, p99 latency, online cosine).
        data_dir: Data folder of the MLflow registry (default $LVM_DATA_DIR or ./lvm-data).
        lease_seconds: How long the services keep routing the challenger without hearing from this flow
            (renewed at every look; at least 2 × check_seconds).
        service_outage_seconds: How long the services may be unreachable (a restart) before rolling back.
    """
    from prefect.runtime import flow_run

    log = get_run_logger()
    if lease_seconds < 2 * min(float(check_seconds), float(step_seconds)):
        raise ValueError(f"lease_seconds {lease_seconds} must be at least twice check_seconds {check_seconds}")
    configure_tracking(Path(data_dir) if data_dir else default_data_dir())
    urls = list(service_urls or [os.environ.get(SERVICE_URL_ENV) or DEFAULT_SERVICE_URL])
    owner = f"flow-run:{flow_run.id}" if flow_run.id else default_owner()
    stale = t.expire_stale(name)
    if stale is not None and stale.challenger is not None:
        reason = f"the previous rollout of v{stale.challenger} (owner {stale.owner}) stopped renewing its lease"
        log.warning("%s; ended it as expired, champion v%s restored", reason, stale.champion)
        _alert(name, stale.challenger, Decision("rollback", reason, 0.0, {"stale": stale.to_dict()}, now()), log)
    state = t.start(name, challenger, plan, owner, lease_seconds)
    log.info("rollout of %s v%s against champion v%s started at %.0f%%", name, challenger, state.champion,
             state.share * 100)
    decisions: list[dict[str, Any]] = []
    try:
        outcome = _run_steps(name, challenger, urls, state, step_seconds, check_seconds, max_holds, thresholds,
                             decisions, log, owner=owner, lease_seconds=lease_seconds,
                             outage_seconds=service_outage_seconds)
    except BaseException as exc:
        # a failed or interrupted flow leaves nobody watching: take the challenger out of traffic first
        reason = f"rollout flow stopped: {type(exc).__name__}: {str(exc).strip()[:300]}"
        try:
            if read_state(name).active:
                rollback(name, reason)
                log.warning("%s; rolled back", reason)
        except Exception as rb_exc:  # noqa: BLE001 - report the original failure
            log.error("rollback after failure did not complete: %s", rb_exc)
        raise
    final = read_state(name)
    return {"name": name, "challenger": challenger, "outcome": outcome, "decisions": decisions,
            "state": final.to_dict(), "champion": current_champion(name)}


def _run_steps(name: str, challenger: int, urls: list[str], state: RolloutState, step_seconds: float,
               check_seconds: float, max_holds: int, thresholds: Thresholds,
               decisions: list[dict[str, Any]], log: Any, *, owner: str, lease_seconds: float,
               outage_seconds: float) -> str:
    """The step loop; returns the outcome: promoted, rolled_back, or a status set by hand (aborted, ...).

    Each step is a `StepWatch`: stats are read every `check_seconds`; a rollback may happen at any look (the
    tests are confidence sequences, valid however often they are looked at), a step only at a period's end.
    """
    check = max(0.05, min(float(check_seconds), float(step_seconds)))
    watch = _watch(state, thresholds, step_seconds, max_holds)
    unreachable_since: float | None = None
    while True:
        time.sleep(max(0.0, min(check, watch.deadline - time.monotonic())))
        current = t.read_state(name)
        if not current.active or current.challenger != challenger or current.owner != owner:
            log.warning("rollout of %s v%s is %s (changed by hand); stopping", name, challenger, current.status)
            return current.status
        t.renew_lease(name, owner, lease_seconds, current)
        if current.window != state.window:  # stepped by hand: watch the new step from now
            state = current
            watch = _watch(state, thresholds, step_seconds, max_holds)
            continue
        try:
            stats = t.read_stats(urls, state)
        except httpx.HTTPError as exc:
            unreachable_since = unreachable_since if unreachable_since is not None else time.monotonic()
            down = time.monotonic() - unreachable_since
            if down <= outage_seconds:
                log.warning("service unreachable for %.0f s of the %.0f s tolerated: %s", down, outage_seconds, exc)
                watch.started += check  # the step's clock does not run while nobody can be measured
                continue
            outage = Decision("rollback", f"the service was unreachable for {down:.0f} s (more than the "
                              f"{outage_seconds:.0f} s tolerated): {exc}", 0.0, {"share": state.share}, now())
            decisions.append(outage.to_dict())
            t.record(name, challenger, state.step, outage)
            t.rollback(name, outage.reason, outage)
            _alert(name, challenger, outage, log)
            return ROLLED_BACK
        unreachable_since = None
        looked = watch.look(stats["champion"], stats["challenger"], time.monotonic())
        if looked is None:
            continue
        decision = looked
        decision.numbers["replicas"] = stats["replicas"]
        decisions.append(decision.to_dict())
        t.record(name, challenger, state.step, decision)
        log.info("step %d (%.0f%%): %s: %s", state.step, state.share * 100, decision.action, decision.reason)
        if decision.action == "hold":
            continue
        if decision.action == "rollback":
            t.rollback(name, decision.reason, decision)
            _alert(name, challenger, decision, log)
            return ROLLED_BACK
        if decision.action == "promote":
            result = t.promote(name)
            log.info("%s", result["message"])
            return PROMOTED
        state = t.set_step(name, state.step + 1)
        watch = _watch(state, thresholds, step_seconds, max_holds)


def _watch(state: RolloutState, thresholds: Thresholds, step_seconds: float, max_holds: int) -> StepWatch:
    return StepWatch(thresholds=thresholds, share=state.share, plan=state.plan, step_seconds=float(step_seconds),
                     max_holds=max_holds, started=time.monotonic())
