"""`lvm gc`: remove work folders and staging leftovers that no published dataset or running build needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import call, console
from flows.cli.options import DataDirOpt, data_dir_of
from flows.cli.tables import print_gc_report


def gc(
    data_dir: DataDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go, with sizes")] = False,
) -> None:
    """Remove work folders (<data-dir>/work) and abandoned staging folders no published dataset or running build
    needs; prints the bytes freed. Work folders stay while a build runs."""
    from lvm_core.data.build.gc import collect_garbage

    report = call(collect_garbage, Path(data_dir_of(data_dir)), dry_run)
    print_gc_report(report)
    console.print(report.bytes_freed)
