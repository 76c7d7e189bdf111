"""Prefect task of the snapshot watch: start the pipeline deployment once per new snapshot, under the data
folder's watch lock (`lvm_core.snapshots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from prefect import get_run_logger, task
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from lvm_core.contracts.layout import default_data_dir
from lvm_core.snapshots.plan import WatchPlan, plan_snapshots
from lvm_core.snapshots.state import BuiltSnapshots, watch_lock
from tasks.common import is_transient


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
            flow_run = cast(FlowRun, run_deployment(  # called from sync code: the FlowRun, not a coroutine
                deployment_name,
                parameters=params,
                timeout=0,
                as_subflow=False,
                idempotency_key=state.trigger_key(snap.snapshot_id),
                flow_run_name=f"{snap.snapshot_id}",
                tags=["lvm", f"snapshot:{snap.snapshot_id}"],
            ))
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
