"""Poll a snapshot source and start one pipeline run per new Wikipedia snapshot.

Runs on a schedule (see prefect.yaml). A snapshot is started once: the data dir's `watch_state.json`
records each trigger under a file lock, and every run is created with an idempotency key, so neither
an overlapping poll nor a task retry can start a second run for the same snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from flows.hooks import RUN_HOOKS
from lvm_core.contracts.layout import default_data_dir
from lvm_core.snapshots.state import BuiltSnapshots, watch_lock
from lvm_core.snapshots.plan import WatchPlan, plan_snapshots
from tasks.common import is_transient

SOURCE_ENV = "LVM_SNAPSHOT_SOURCE"
DEFAULT_PIPELINE_DEPLOYMENT = "lvm_pipeline/lvm-pipeline"
ARTIFACT_KEY = "snapshot-watch"


class TriggeredRun(BaseModel):
    snapshot_id: str
    source: str
    flow_run_id: str | None = None


class WatchReport(BaseModel):
    """What one poll saw and did (also the flow's return value)."""

    source: str
    dry_run: bool
    found: list[str] = Field(default_factory=list)
    triggered: list[TriggeredRun] = Field(default_factory=list)
    would_trigger: list[str] = Field(default_factory=list)
    already_built: list[str] = Field(default_factory=list)
    already_triggered: list[str] = Field(default_factory=list)
    older: list[str] = Field(default_factory=list)
    skipped: list[dict[str, str]] = Field(default_factory=list)


def resolve_watch_source(source: str | None) -> str:
    """The explicit `source`, else `$LVM_SNAPSHOT_SOURCE`; a clear error when neither is set."""
    value = source or os.environ.get(SOURCE_ENV, "").strip()
    if not value:
        raise ValueError(
            f"watch_snapshots: no snapshot source; pass source=... or set {SOURCE_ENV} "
            "(a folder, file:// URL or dumps index URL such as https://dumps.wikimedia.org/enwiki/)"
        )
    return value


def pipeline_parameters(
    snapshot_path: str,
    snapshot_id: str,
    data_dir: str | None,
    limit_articles: int | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """Parameters of the pipeline run for one snapshot; source and id always come from the snapshot."""
    params: dict[str, Any] = dict(extra or {})
    params.update({"source": snapshot_path, "snapshot_id": snapshot_id})
    if data_dir is not None:
        params["data_dir"] = data_dir
    if limit_articles is not None:
        params["limit_articles"] = limit_articles
    return params


@task(
    name="trigger-new-snapshots",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient,
)
def trigger_new_snapshots(
    source: str,
    data_dir: str | None,
    deployment_name: str,
    dry_run: bool,
    limit_articles: int | None,
    backfill: bool,
    retrigger: list[str],
    extra_parameters: dict[str, Any] | None,
) -> WatchReport:
    """List new snapshots and start the pipeline deployment once for each (without waiting for it)."""
    logger = get_run_logger()
    root = Path(data_dir) if data_dir else default_data_dir()
    report = WatchReport(source=source, dry_run=dry_run)
    with watch_lock(root):
        state = BuiltSnapshots.load(root)
        for sid in retrigger:
            if not dry_run and state.forget(sid):
                logger.info("forgot the earlier trigger of %s; it will be started again", sid)
        plan = plan_snapshots(source, root, backfill=backfill, state=state)
        if not dry_run:
            state.save_id_cache()
        _fill_report(report, plan)
        for snap in plan.new:
            if dry_run:
                report.would_trigger.append(snap.snapshot_id)
                continue
            params = pipeline_parameters(snap.path, snap.snapshot_id, data_dir, limit_articles, extra_parameters)
            flow_run = run_deployment(
                deployment_name,
                parameters=params,
                timeout=0,
                as_subflow=False,
                idempotency_key=state.trigger_key(snap.snapshot_id),
                flow_run_name=f"{snap.snapshot_id}",
                tags=["lvm", f"snapshot:{snap.snapshot_id}"],
            )
            state.record_triggered(snap, str(flow_run.id), deployment_name)
            report.triggered.append(TriggeredRun(snapshot_id=snap.snapshot_id, source=snap.path, flow_run_id=str(flow_run.id)))
            logger.info("started %s for %s (flow run %s)", deployment_name, snap.snapshot_id, flow_run.id)
    return report


def _fill_report(report: WatchReport, plan: WatchPlan) -> None:
    report.found = [s.snapshot_id for s in plan.found]
    report.already_built = [s.snapshot_id for s in plan.built]
    report.already_triggered = [s.snapshot_id for s in plan.triggered]
    report.older = [s.snapshot_id for s in plan.older]
    report.skipped = [{"location": s.location, "reason": s.reason} for s in plan.skipped]


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
