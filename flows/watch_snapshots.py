"""Poll a snapshot source and start one pipeline run per new Wikipedia snapshot.

Runs on a schedule (see prefect.yaml). A snapshot is started once: the data dir's `watch_state.json`
records each trigger under a file lock, and every run is created with an idempotency key, so neither
an overlapping poll nor a task retry can start a second run for the same snapshot.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.infra.hooks import RUN_HOOKS
from tasks.snapshots import WatchReport, trigger_new_snapshots

SOURCE_ENV = "LVM_SNAPSHOT_SOURCE"
DEFAULT_PIPELINE_DEPLOYMENT = "lvm_pipeline/lvm-pipeline"
ARTIFACT_KEY = "snapshot-watch"


def resolve_watch_source(source: str | None) -> str:
    """The explicit `source`, else `$LVM_SNAPSHOT_SOURCE`; a clear error when neither is set."""
    value = source or os.environ.get(SOURCE_ENV, "").strip()
    if not value:
        raise ValueError(
            f"watch_snapshots: no snapshot source; pass source=... or set {SOURCE_ENV} "
            "(a folder, file:// URL or dumps index URL such as https://dumps.wikimedia.org/enwiki/)"
        )
    return value


def report_markdown(report: WatchReport) -> str:
    """The UI artifact: every snapshot found and what happened to it, plus skipped entries."""
    status: dict[str, str] = {}
    for sid in report.found:
        status[sid] = "found"
    for sid in report.already_built:
        status[sid] = "already built"
    for sid in report.already_triggered:
        status[sid] = "already triggered"
    for sid in report.older:
        status[sid] = "older than the last handled snapshot (not backfilled)"
    for sid in report.would_trigger:
        status[sid] = "new (dry run: not triggered)"
    runs = {t.snapshot_id: t for t in report.triggered}
    for sid, run in runs.items():
        status[sid] = f"triggered (flow run `{run.flow_run_id}`)"
    lines = [
        f"# Snapshot watch{' (dry run)' if report.dry_run else ''}",
        "",
        f"Source: `{report.source}`",
        "",
        f"Found **{len(report.found)}**, triggered **{len(report.triggered)}**, "
        f"skipped **{len(report.skipped)}**.",
        "",
    ]
    if status:
        lines += ["| snapshot | status |", "|---|---|"]
        lines += [f"| `{sid}` | {text} |" for sid, text in status.items()]
        lines.append("")
    if report.skipped:
        lines += ["## Skipped", "", "| location | reason |", "|---|---|"]
        lines += [f"| `{s['location']}` | {s['reason'].replace('|', '/')} |" for s in report.skipped]
        lines.append("")
    return "\n".join(lines)


@flow(
    name="watch_snapshots",
    description="Find new Wikipedia snapshots and start the LVM pipeline once for each.",
    **RUN_HOOKS,
)
def watch_snapshots(
    source: str | None = None,
    data_dir: str | None = None,
    deployment_name: str = DEFAULT_PIPELINE_DEPLOYMENT,
    dry_run: bool = False,
    limit_articles: int | None = None,
    backfill: bool = False,
    retrigger: list[str] | None = None,
    pipeline_overrides: dict[str, Any] | None = None,
) -> WatchReport:
    """Poll `source` (default `$LVM_SNAPSHOT_SOURCE`) and trigger `deployment_name` per new snapshot.

    `backfill` also starts snapshots older than the newest handled one; `retrigger` lists snapshot ids
    whose earlier trigger is dropped first (e.g. after a failed run); `pipeline_overrides` are extra
    pipeline parameters (e.g. {"epochs": 5}).
    """
    resolved = resolve_watch_source(source)
    report = trigger_new_snapshots(
        resolved,
        data_dir,
        deployment_name,
        dry_run,
        limit_articles,
        backfill,
        list(retrigger or []),
        pipeline_overrides,
    )
    create_markdown_artifact(
        markdown=report_markdown(report),
        key=ARTIFACT_KEY,
        description=f"Snapshots found in {resolved}",
    )
    return report


if __name__ == "__main__":
    import sys

    print(watch_snapshots(source=sys.argv[1] if len(sys.argv) > 1 else None).model_dump_json(indent=2))
