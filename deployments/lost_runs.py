"""The automations that end flow runs whose process is gone, and their time windows (used by
`deployments.setup`, which creates them on the server).

- `lvm-zombie-flow-runs`: a Running run (or one that sent a heartbeat) that sends neither another heartbeat
  nor a final state for LVM_ZOMBIE_WINDOW_SECONDS (default 3 x the heartbeat period) is marked Crashed.
- `lvm-lost-pending-flow-runs`: a run claimed by a worker (Pending) that neither starts, ends nor goes back
  to Scheduled for LVM_PENDING_WINDOW_SECONDS (default 600 s) is marked Crashed: its worker died before the
  run's process started, so it never sent a heartbeat.

Either Crashed state fires the failure alert of deployments/automations.yaml. A window of 0 removes its
automation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.runtime.environment import FLOW_RUN_HEARTBEAT_S, HEARTBEAT_ENV


class SetupError(RuntimeError):
    """A configuration file or server object is not what setup expects; the message says which."""


# Heartbeats of flow runs (Prefect 3.8: HEARTBEAT_ENV, legacy name PREFECT_RUNNER_HEARTBEAT_FREQUENCY;
# Prefect's minimum is 30 s, its default 180 s). The LVM workers and the deployments of prefect.yaml set
# FLOW_RUN_HEARTBEAT_S (lvm_core/runtime/environment.py).
LEGACY_HEARTBEAT_ENV = "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"
ZOMBIE_WINDOW_ENV = "LVM_ZOMBIE_WINDOW_SECONDS"
ZOMBIE_WINDOW_BEATS = 3  # default window: this many heartbeat periods
ZOMBIE_AUTOMATION_NAME = "lvm-zombie-flow-runs"
MIN_PROACTIVE_WITHIN_S = 10  # Prefect rejects shorter windows for proactive triggers
# A bucket opens on either event and stays satisfied by a heartbeat or any state that ends the run's
# process (terminal, or paused/suspended: a suspended run's process exits and its heartbeats stop).
ZOMBIE_START_EVENTS = ("prefect.flow-run.heartbeat", "prefect.flow-run.Running", "prefect.flow-run.Retrying")
ZOMBIE_EXPECTED_EVENTS = (
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.TimedOut",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Paused",
    "prefect.flow-run.Suspended",
)

PENDING_AUTOMATION_NAME = "lvm-lost-pending-flow-runs"
PENDING_WINDOW_ENV = "LVM_PENDING_WINDOW_SECONDS"
PENDING_WINDOW_DEFAULT_S = 600.0
# What a claimed run does next when its worker is alive: starts, ends (cancelled before it started, ...), or is
# handed back to the scheduler (a Scheduled-type state such as AwaitingRetry or AwaitingConcurrencySlot).
PENDING_EXPECTED_EVENTS = (
    "prefect.flow-run.Running",
    *(e for e in ZOMBIE_EXPECTED_EVENTS if e != "prefect.flow-run.heartbeat"),
    "prefect.flow-run.Cancelling",
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Late",
    "prefect.flow-run.AwaitingRetry",
    "prefect.flow-run.AwaitingConcurrencySlot",
)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise SetupError(f"{name}={value!r}: expected a number of seconds") from None
    if seconds < 0:
        raise SetupError(f"{name}={value!r}: must be >= 0")
    return seconds


def heartbeat_seconds(env: Mapping[str, str] | None = None) -> float:
    """The flow-run heartbeat period the workers use: $PREFECT_FLOWS_HEARTBEAT_FREQUENCY or the project's 30 s."""
    env = os.environ if env is None else env
    for name in (HEARTBEAT_ENV, LEGACY_HEARTBEAT_ENV):
        if env.get(name):
            return max(_seconds(name, env[name]), float(FLOW_RUN_HEARTBEAT_S))  # Prefect's minimum period
    return float(FLOW_RUN_HEARTBEAT_S)


def zombie_window_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a running flow run may stay silent before it is marked Crashed; 0 = no zombie automation.

    $LVM_ZOMBIE_WINDOW_SECONDS, default 3 x the heartbeat period. A window no longer than one heartbeat
    period would crash healthy runs between two beats, so it is refused.
    """
    env = os.environ if env is None else env
    beat = heartbeat_seconds(env)
    raw = env.get(ZOMBIE_WINDOW_ENV, "")
    window = _seconds(ZOMBIE_WINDOW_ENV, raw) if raw.strip() else ZOMBIE_WINDOW_BEATS * beat
    if window == 0:
        return 0.0
    if window <= beat or window < MIN_PROACTIVE_WITHIN_S:
        raise SetupError(
            f"{ZOMBIE_WINDOW_ENV}={window:g}: must be longer than the heartbeat period ({beat:g} s) "
            f"and at least {MIN_PROACTIVE_WITHIN_S} s (or 0 to disable)"
        )
    return window


def pending_window_seconds(env: Mapping[str, str] | None = None) -> float:
    """How long a claimed (Pending) flow run may stay unstarted before it is marked Crashed; 0 = no automation."""
    env = os.environ if env is None else env
    raw = env.get(PENDING_WINDOW_ENV, "")
    window = _seconds(PENDING_WINDOW_ENV, raw) if raw.strip() else PENDING_WINDOW_DEFAULT_S
    if window and window < MIN_PROACTIVE_WITHIN_S:
        raise SetupError(f"{PENDING_WINDOW_ENV}={window:g}: must be at least {MIN_PROACTIVE_WITHIN_S} s (or 0 to disable)")
    return window


def _silence_automation(name: str, description: str, after: Sequence[str], expect: Sequence[str],
                        window_seconds: float, message: str) -> Any:
    """A proactive automation, one bucket per flow run: opened by an `after` event, satisfied by an `expect`
    event; a bucket that runs out sets the run Crashed (not forced: a run that already finished keeps its state),
    and the Crashed state's event is what the failure alert of automations.yaml pages on."""
    from prefect.events.schemas.automations import AutomationCore

    spec = {
        "name": name,
        "description": description,
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "after": list(after),
            "expect": list(expect),
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": window_seconds,
        },
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED", "name": "Crashed", "message": message}],
    }
    try:
        return AutomationCore.model_validate(spec)
    except ValueError as exc:
        raise SetupError(f"automation {name!r} is invalid: {exc}") from exc


def pending_automation(window_seconds: float) -> Any:
    """Proactive automation: a flow run Pending for `window_seconds` without starting or ending -> Crashed."""
    return _silence_automation(
        PENDING_AUTOMATION_NAME,
        f"Mark a flow run Crashed when it stayed Pending (claimed by a worker) for {window_seconds:g} s without "
        "starting, ending or going back to Scheduled: its worker died before the run's process started.",
        ["prefect.flow-run.Pending"], PENDING_EXPECTED_EVENTS, window_seconds,
        f"Pending for {window_seconds:g} s without starting: the worker that claimed it is gone. Marked Crashed "
        f"by the automation {PENDING_AUTOMATION_NAME!r}.",
    )


def zombie_automation(window_seconds: float) -> Any:
    """Proactive automation: a flow run with no heartbeat and no final state for `window_seconds` -> Crashed.

    The trigger keeps one bucket per flow run (`for_each: prefect.resource.id`), opened by the run's
    Running event or a heartbeat and renewed by every heartbeat; when a bucket expires without a
    heartbeat or an event that ends the run, the run is set to Crashed (not forced: a run that already
    finished keeps its state). The Crashed state emits `prefect.flow-run.Crashed`, which the failure
    alert of automations.yaml pages on.
    """
    return _silence_automation(
        ZOMBIE_AUTOMATION_NAME,
        f"Mark a flow run Crashed when it sent no heartbeat (prefect.flow-run.heartbeat) and reached no "
        f"final state for {window_seconds:g} s: its worker or machine died with it.",
        ZOMBIE_START_EVENTS, ZOMBIE_EXPECTED_EVENTS, window_seconds,
        f"No heartbeat from this flow run for {window_seconds:g} s: its process is gone "
        f"(worker or machine lost). Marked Crashed by the automation {ZOMBIE_AUTOMATION_NAME!r}.",
    )
