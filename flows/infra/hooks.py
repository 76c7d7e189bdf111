"""Flow-run hooks: a failure alert that needs no Prefect automation, and flow runs of dead processes
ended Crashed.

The server-side automation (deployments/automations.yaml) alerts on every failed or crashed flow run
once `python -m deployments.setup` created it. These hooks cover what it cannot: flows called without a
server (the temporary local API) and setups where automations were never installed. Both send the same
PagerDuty Events API v2 body with the same `dedup_key`, so a receiver that gets both opens one incident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import httpx

from lvm_core.runtime.environment import ALERT_URL_ENV, ROUTING_KEY_ENV

if TYPE_CHECKING:
    from prefect.flows import FlowStateHook

ALERT_SOURCE = "lvm-platform"


def dedup_key(flow_run_id: Any) -> str:
    """One incident per flow run, however many alert paths report it."""
    return f"prefect-flow-run-{flow_run_id}"


def alert_summary(flow_name: str, flow_run_name: str, state_name: str) -> str:
    return f"LVM flow {flow_name} run {flow_run_name} is {state_name}"


def pagerduty_event(
    *,
    flow_name: str,
    flow_run_id: Any,
    flow_run_name: str,
    state_name: str,
    deployment: str | None,
    message: str | None = None,
    routing_key: str | None = None,
) -> dict[str, Any]:
    """A PagerDuty Events API v2 `trigger` event for a flow run that ended badly."""
    return {
        "routing_key": routing_key if routing_key is not None else os.environ.get(ROUTING_KEY_ENV, ""),
        "event_action": "trigger",
        "dedup_key": dedup_key(flow_run_id),
        "payload": {
            "summary": alert_summary(flow_name, flow_run_name, state_name)[:1024],
            "source": ALERT_SOURCE,
            "severity": "error",
            "custom_details": {
                "flow": flow_name,
                "flow_run_id": str(flow_run_id),
                "flow_run_name": flow_run_name,
                "state": state_name,
                "deployment": deployment,
                "message": (message or "")[:1000],
            },
        },
    }


def send_alert(event: dict[str, Any], url: str | None = None, timeout: float = 10.0) -> bool:
    """POST `event` as JSON to `url` (default `$LVM_ALERT_WEBHOOK_URL`); False when no URL is set.

    Raises `httpx.HTTPError` when the receiver cannot be reached or answers with an error status.
    """
    url = url or os.environ.get(ALERT_URL_ENV)
    if not url:
        return False
    response = httpx.post(url, json=event, timeout=timeout)
    response.raise_for_status()
    return True


def alert_on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_failure` / `on_crashed` hook: send the PagerDuty event when `$LVM_ALERT_WEBHOOK_URL` is set.

    A failing alert is logged, never raised: it must not hide the flow's own failure.
    """
    from prefect.logging import get_logger

    url = os.environ.get(ALERT_URL_ENV)
    if not url:
        return
    logger = get_logger("lvm.alerts")
    event = pagerduty_event(
        flow_name=flow.name,
        flow_run_id=flow_run.id,
        flow_run_name=flow_run.name,
        state_name=state.name or str(state.type.value).title(),
        deployment=_deployment_name(flow_run),
        message=state.message,
    )
    try:
        send_alert(event, url)
    except httpx.HTTPError as exc:
        logger.warning("failure alert for flow run %s not delivered: %s", flow_run.id, exc)
    else:
        logger.info("failure alert for flow run %s sent", flow_run.id)


def _deployment_name(flow_run: Any) -> str | None:
    deployment_id = getattr(flow_run, "deployment_id", None)
    if deployment_id is None:
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return client.read_deployment(deployment_id).name
    except Exception:  # noqa: BLE001 - the alert matters more than a pretty name
        return str(deployment_id)


# --- flow runs whose process died -----------------------------------------------------------------
# A process killed outright (SIGKILL, OOM, lost machine) runs no hook, so its flow runs stay RUNNING.
# With a server, the worker or the heartbeat automation ends them Crashed. Without one (the temporary
# local API of `lvm`), each flow run leaves an owner record in PREFECT_HOME, and the next flow run
# started on this host ends Crashed (and alerts) those whose process is gone.

def _owners_dir() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "lvm-flow-run-owners"


def claim_flow_run(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_running` hook: record this process as the owner of the flow run; reap dead owners' runs."""
    import json

    from lvm_core.runtime.liveness import Owner

    owners = _owners_dir()
    owners.mkdir(parents=True, exist_ok=True)
    (owners / f"{flow_run.id}.json").write_text(json.dumps(Owner.this_process(flow_run.name).to_dict()))
    reap_dead_flow_runs()


def release_flow_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Final-state hook: the flow run ended in its own process; nothing to reap."""
    (_owners_dir() / f"{flow_run.id}.json").unlink(missing_ok=True)


def reap_dead_flow_runs() -> list[str]:
    """End Crashed the flow runs whose owning process on this host is gone; one line per run."""
    import json
    import math
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.logging import get_logger
    from prefect.states import Crashed

    from flows.infra.slots import TERMINAL_STATES
    from lvm_core.runtime.liveness import Owner

    done: list[str] = []
    logger = get_logger("lvm.reaper")
    for record in sorted(_owners_dir().glob("*.json")):
        try:
            owner = Owner.from_dict(json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        why = owner.gone(stale_after=math.inf)  # only a process on this host can be proven dead
        if why is None:
            continue
        with get_client(sync_client=True) as client:
            try:
                run = client.read_flow_run(UUID(record.stem))
            except (ObjectNotFound, ValueError):
                run = None
            if run is not None and run.state is not None and run.state.type.value not in TERMINAL_STATES:
                client.set_flow_run_state(run.id, Crashed(message=f"process gone: {why}"), force=True)
                done.append(f"flow run {run.name} ({run.id}) ended Crashed: {why}")
                logger.warning("%s", done[-1])
                _alert_crashed(client, run, why)
        record.unlink(missing_ok=True)
    return done


def _alert_crashed(client: Any, run: Any, why: str) -> None:
    url = os.environ.get(ALERT_URL_ENV)
    if not url:
        return
    flow_name = client.read_flow(run.flow_id).name
    event = pagerduty_event(flow_name=flow_name, flow_run_id=run.id, flow_run_name=run.name, state_name="Crashed",
                            deployment=_deployment_name(run), message=f"process gone: {why}")
    try:
        send_alert(event, url)
    except httpx.HTTPError as exc:
        from prefect.logging import get_logger

        get_logger("lvm.alerts").warning("crash alert for flow run %s not delivered: %s", run.id, exc)


class RunHooks(TypedDict):
    """The state hooks every flow is declared with (`@flow(..., **RUN_HOOKS)`)."""

    on_running: list[FlowStateHook[..., Any]]
    on_completion: list[FlowStateHook[..., Any]]
    on_failure: list[FlowStateHook[..., Any]]
    on_crashed: list[FlowStateHook[..., Any]]
    on_cancellation: list[FlowStateHook[..., Any]]


# Every flow: alert on failure, own its flow run so a dead process's runs are ended Crashed.
RUN_HOOKS: RunHooks = {
    "on_running": [claim_flow_run],
    "on_completion": [release_flow_run],
    "on_failure": [alert_on_failure, release_flow_run],
    "on_crashed": [alert_on_failure, release_flow_run],
    "on_cancellation": [release_flow_run],
}
