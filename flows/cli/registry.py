"""`lvm promote`, `lvm rollback` and `lvm models`: the registry's aliases by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.cli.common import call, console, err
from flows.cli.options import DataDirOpt, data_dir_of


def promote(
    version: Annotated[int, typer.Option(help="Model version to make champion")],
    name: Annotated[str, typer.Option(help="Registered model name")] = "lvm-amn",
    force: Annotated[bool, typer.Option("--force", help="Promote even if its gates failed (recorded)")] = False,
    abort_rollout: Annotated[bool, typer.Option("--abort-rollout", help="Abort an active staged rollout first (refused otherwise)")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Move the `champion` alias to a version whose gates passed (the previous champion is kept for rollback).

    Refused while a staged rollout is active (it decides the champion then), unless --abort-rollout.
    """
    from lvm_core.tracking import promotion
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(Path(data_dir_of(data_dir)))
    if abort_rollout:
        _abort_active_rollout(name, f"aborted to promote v{version} by hand")
    result = call(promotion.promote, name, version, None, force)
    err.print(f"{result.action}: {result.message}" if result.message else result.action)
    if not result.promoted and result.action != "already_champion":
        raise typer.Exit(1)


def rollback(
    name: Annotated[str, typer.Option(help="Registered model name")] = "lvm-amn",
    abort_rollout: Annotated[bool, typer.Option("--abort-rollout", help="Abort an active staged rollout first (refused otherwise)")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Move `champion` back to the previous champion (refused during a staged rollout, unless --abort-rollout)."""
    from lvm_core.tracking import promotion
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(Path(data_dir_of(data_dir)))
    if abort_rollout:
        _abort_active_rollout(name, "aborted to roll the champion back by hand")
    result = call(promotion.rollback, name)
    err.print(f"{result.action}: champion is now v{result.champion}. {result.message}".strip())


def _abort_active_rollout(name: str, reason: str) -> None:
    from lvm_core.rollout.plan import abort
    from lvm_core.rollout.state import read_state

    if call(read_state, name).active:
        state = call(abort, name, reason)
        err.print(f"rollout of v{state.challenger} aborted: {reason}")


def models(
    name: Annotated[str, typer.Option(help="Registered model name")] = "lvm-amn",
    data_dir: DataDirOpt = None,
) -> None:
    """List the versions of a registered model with aliases and gate results."""
    from lvm_core.tracking.references import list_versions
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(Path(data_dir_of(data_dir)))
    rows = call(list_versions, name)
    t = Table("version", "aliases", "gates", "failed gates", "dataset", "run")
    for r in rows:
        tags = r.get("tags", {})
        t.add_row(str(r.get("version")), ",".join(r.get("aliases", [])), tags.get("gates_passed", ""),
                  tags.get("failed_gates", ""), tags.get("dataset_id", ""), str(r.get("run_id", ""))[:12])
    console.print(t)
