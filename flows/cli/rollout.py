"""`lvm rollout start|status|promote|abort`: the staged canary rollout of a challenger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.common import call, call_flow, console, err
from flows.cli.options import DataDirOpt, data_dir_of

rollout_app = typer.Typer(help="Staged canary rollout of a challenger: 5% → 20% → 100% with automatic rollback.",
                          no_args_is_help=True)


RolloutNameOpt = Annotated[str, typer.Option("--name", help="Registered model name")]


def print_rollout(state) -> None:
    t = Table(title=f"rollout of {state.name}", show_header=False)
    t.add_row("status", state.status)
    if state.challenger is not None:
        t.add_row("challenger / champion at start", f"v{state.challenger} / v{state.champion}")
        t.add_row("share", f"{state.share:.0%} (step {state.step} of plan {', '.join(f'{p:.0%}' for p in state.plan)})")
        t.add_row("started / step started", f"{state.started_at} / {state.step_started_at}")
        if state.active:
            t.add_row("owner / lease until", f"{state.owner} / {state.lease_until}"
                      + (" (EXPIRED: services route champion only)" if state.lease_expired() else ""))
    d = state.last_decision or {}
    if d:
        t.add_row("last decision", f"{d.get('action')} at {d.get('at')}: {d.get('reason')}")
    console.print(t)


@rollout_app.command("start")
def rollout_start(
    version: Annotated[int, typer.Option("--version", help="Challenger version to roll out (its offline gates must have passed)")],
    name: RolloutNameOpt = "lvm-amn",
    service_url: Annotated[list[str] | None, typer.Option("--service-url", envvar="LVM_SERVE_URL", help="Base URL of each `lvm serve` replica (repeatable); token from LVM_SERVE_TOKEN [default: http://127.0.0.1:8000]")] = None,
    step_seconds: Annotated[float, typer.Option(min=0.0, help="Seconds each share is watched before deciding")] = 600.0,
    check_seconds: Annotated[float, typer.Option(min=0.0, help="Seconds between stats reads within a step (a regression rolls back at once)")] = 30.0,
    plan: Annotated[str, typer.Option(help="Challenger shares, increasing, ending at 1 (reaching it promotes)")] = "0.05,0.2,1.0",
    max_holds: Annotated[int, typer.Option(min=0, help="Extra periods a step may wait for enough samples before rolling back")] = 3,
    min_requests: Annotated[int, typer.Option(min=1, help="Requests per version before any step")] = 100,
    min_feedback: Annotated[int, typer.Option(min=0, help="Feedback cosines per version before any step (0: do not judge cosine)")] = 30,
    min_clients: Annotated[int, typer.Option(min=2, help="Distinct client keys per version before a test gives a verdict")] = 20,
    cosine_margin: Annotated[float, typer.Option(min=0.0, help="Non-inferiority margin of the online cosine: roll back when the challenger is surely worse by more, step only when surely not")] = 0.015,
    error_rate_margin: Annotated[float, typer.Option(min=0.0, help="Non-inferiority margin of the server error rate (challenger − champion)")] = 0.005,
    alpha: Annotated[float, typer.Option(min=1e-6, max=0.5, help="Level of each test's confidence sequence, valid over every look of a step")] = 0.05,
    max_p99_ratio: Annotated[float, typer.Option(help="Roll back when the challenger's p99 is surely above ratio × champion p99 (plus --p99-slack-ms)")] = 1.5,
    p99_slack_ms: Annotated[float, typer.Option(help="Latency slack added to the p99 limit, in ms")] = 10.0,
    lease_seconds: Annotated[float, typer.Option(min=1.0, help="Services route champion-only when this flow has not renewed its lease for this long")] = 120.0,
    service_outage_seconds: Annotated[float, typer.Option(min=0.0, help="How long the services may be unreachable (a restart) before rolling back")] = 120.0,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the staged rollout flow; exit 1 when it rolled back (the alert goes to LVM_ALERT_WEBHOOK_URL).

    Each step is decided by sequential non-inferiority tests over clients (docs/monitoring.md): a rollback may
    happen at any look, a step only at the end of a period.
    """
    from flows.rollout import staged_rollout
    from lvm_core.rollout.decision import Thresholds
    from lvm_core.rollout.plan import check_plan

    shares = call(lambda: list(check_plan(float(x) for x in plan.split(","))))
    thresholds = Thresholds(min_requests=min_requests, min_feedback=min_feedback, min_clients=min_clients,
                            cosine_margin=cosine_margin, error_rate_margin=error_rate_margin, alpha=alpha,
                            max_p99_ratio=max_p99_ratio, p99_slack_s=p99_slack_ms / 1e3)
    out = call_flow(staged_rollout, name=name, challenger=version, service_urls=service_url or None,
                    step_seconds=step_seconds, check_seconds=check_seconds, plan=shares, max_holds=max_holds,
                    thresholds=thresholds, data_dir=data_dir_of(data_dir), lease_seconds=lease_seconds,
                    service_outage_seconds=service_outage_seconds)
    t = Table("share", "decision", "reason", title=f"rollout of {name} v{version}: {out['outcome']}")
    for d in out["decisions"]:
        t.add_row(f"{d['numbers'].get('share', 0):.0%}", d["action"], d["reason"])
    err.print(t)
    typer.echo(f"{out['outcome']}: champion is v{out['champion']}")
    if out["outcome"] != "promoted":
        raise typer.Exit(1)


@rollout_app.command("status")
def rollout_status(name: RolloutNameOpt = "lvm-amn", data_dir: DataDirOpt = None) -> None:
    """Print the rollout state recorded on the registered model (what every replica follows)."""
    from lvm_core.rollout.state import read_state
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(Path(data_dir_of(data_dir)))
    print_rollout(call(read_state, name))


@rollout_app.command("promote")
def rollout_promote(name: RolloutNameOpt = "lvm-amn", data_dir: DataDirOpt = None) -> None:
    """Step the active rollout by hand to its next share; from the last canary share, promote to champion."""
    from lvm_core.rollout.plan import advance
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(Path(data_dir_of(data_dir)))
    state, result = call(advance, name)
    if result is not None:
        err.print(f"{result.action}: {result.message}", soft_wrap=True)
    print_rollout(state)


@rollout_app.command("abort")
def rollout_abort(
    name: RolloutNameOpt = "lvm-amn",
    reason: Annotated[str, typer.Option(help="Recorded as the decision's reason")] = "aborted by hand",
    data_dir: DataDirOpt = None,
) -> None:
    """Roll the active rollout back: share 0, champion alias restored, reason recorded."""
    from lvm_core.rollout.plan import abort
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(Path(data_dir_of(data_dir)))
    print_rollout(call(abort, name, reason))
