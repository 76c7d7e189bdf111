"""`lvm watch`: one pipeline run per new Wikipedia snapshot."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.common import call_flow, console
from flows.cli.options import DataDirOpt, data_dir_of


def watch(
    source: Annotated[str | None, typer.Option(help="Folder / fsspec URL of dumps, or a Wikimedia-style dumps index [default: $LVM_SNAPSHOT_SOURCE]")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be triggered")] = False,
    backfill: Annotated[bool, typer.Option("--backfill", help="Also trigger snapshots older than the newest handled one")] = False,
    deployment: Annotated[str, typer.Option(help="Pipeline deployment to trigger")] = "lvm_pipeline/lvm-pipeline",
    data_dir: DataDirOpt = None,
) -> None:
    """Look for new Wikipedia snapshots and trigger the pipeline deployment once per new one (needs a Prefect server)."""
    from flows.watch_snapshots import watch_snapshots

    report = call_flow(watch_snapshots, source=source, data_dir=data_dir_of(data_dir), deployment_name=deployment,
                       dry_run=dry_run, backfill=backfill)
    console.print_json(data=report.model_dump(mode="json"))
