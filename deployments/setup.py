"""Create the server-side objects the LVM deployments rely on; safe to run again.

    python -m deployments.setup            # against $PREFECT_API_URL

Creates or updates: the process work pool `lvm-process`, the concurrency limits of
deployments/concurrency_limits.yaml, the zombie flow run automation (`lvm-zombie-flow-runs`: a flow run
whose heartbeats stop is marked Crashed), and, when LVM_ALERT_WEBHOOK_URL is set, the alert webhook
block and the automations of deployments/automations.yaml. Deployments themselves come from
`prefect deploy --all`.

Zombie detection: flow runs started by the LVM workers emit a `prefect.flow-run.heartbeat` event every
PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (30, set in prefect.yaml, start_local.sh and the compose
file). When a run that is Running (or has sent a heartbeat) sends neither another heartbeat nor a
terminal state event for LVM_ZOMBIE_WINDOW_SECONDS (default: 3 x the heartbeat frequency), the
automation sets it to Crashed, which in turn fires the failure alert. 0 removes the automation.

Lost Pending runs: a worker marks a run Pending when it claims it, then starts its process; a worker that dies
between the two leaves a run that never sends a heartbeat. `lvm-lost-pending-flow-runs` marks a run Crashed
when it stays Pending (neither starts nor ends nor goes back to Scheduled) for LVM_PENDING_WINDOW_SECONDS
(default 600: a process worker starts a run in seconds, a container worker may first pull an image), which
fires the same failure alert. 0 removes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from deployments.lost_runs import (
    PENDING_AUTOMATION_NAME,
    PENDING_WINDOW_ENV,
    ZOMBIE_AUTOMATION_NAME,
    ZOMBIE_WINDOW_BEATS,
    ZOMBIE_WINDOW_ENV,
    SetupError,
    pending_automation,
    pending_window_seconds,
    zombie_automation,
    zombie_window_seconds,
)
from lvm_core.runtime.environment import ALERT_URL_ENV, ROUTING_KEY_ENV

HERE = Path(__file__).resolve().parent
AUTOMATIONS_FILE = HERE / "automations.yaml"
LIMITS_FILE = HERE / "concurrency_limits.yaml"

WORK_POOL = "lvm-process"
WORK_POOL_TYPE = "process"
ALERT_BLOCK_NAME = "lvm-alert-webhook"
BLOCK_REF_KEY = "block"  # `block: <type-slug>/<name>` in automations.yaml -> block_document_id

# The Custom Webhook block wraps the automation's rendered body (a JSON object fragment, see
# automations.yaml) with the routing key kept as a block secret: the result is one PagerDuty Events
# API v2 event. The secret holds the key JSON-encoded, so any key stays a valid JSON string.
PAGERDUTY_FORM_TEMPLATE = '{"routing_key": {{routing_key}}, {{body}}}'



@dataclass
class SetupReport:
    work_pool: str = ""
    alert_block: str = ""
    limits: list[str] = field(default_factory=list)
    automations: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [self.work_pool, self.alert_block, *self.limits, *self.automations]


def alert_block(url: str, routing_key: str = "") -> Any:
    """The Custom Webhook notification block that posts PagerDuty-compatible JSON to `url`."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    return CustomWebhookNotificationBlock(
        name=ALERT_BLOCK_NAME,
        url=url,
        method="POST",
        headers={"Content-Type": "application/json"},
        form_data=PAGERDUTY_FORM_TEMPLATE,
        secrets={"routing_key": json.dumps(routing_key)},
        timeout=10,
    )


def ensure_work_pool(client: Any, name: str = WORK_POOL) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=WORK_POOL_TYPE,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="Runs LVM flows as local processes (see deployments/README.md).",
            )
        )
        return f"work pool {name!r}: created"
    if pool.type != WORK_POOL_TYPE:
        raise SetupError(f"work pool {name!r} exists with type {pool.type!r}; expected {WORK_POOL_TYPE!r}")
    return f"work pool {name!r}: exists"


def ensure_alert_block(url: str, routing_key: str = "") -> UUID:
    return alert_block(url, routing_key).save(ALERT_BLOCK_NAME, overwrite=True)


def load_limits(path: Path = LIMITS_FILE) -> dict[str, list[dict[str, Any]]]:
    data = _read_yaml(path)
    out: dict[str, list[dict[str, Any]]] = {}
    for section, key in (("task_tags", "tag"), ("global", "name")):
        items = data.get(section) or []
        if not isinstance(items, list):
            raise SetupError(f"{path}: '{section}' must be a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get(key), str) or not isinstance(item.get("limit"), int):
                raise SetupError(f"{path}: {section}[{i}] needs '{key}' (string) and 'limit' (integer)")
            if item["limit"] < 0:
                raise SetupError(f"{path}: {section}[{i}] limit must be >= 0")
        out[section] = items
    return out


def ensure_limits(client: Any, limits: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    done = []
    for item in limits.get("task_tags", []):
        client.create_concurrency_limit(tag=item["tag"], concurrency_limit=item["limit"])  # upsert by tag
        done.append(f"task tag limit {item['tag']!r} = {item['limit']}")
    for item in limits.get("global", []):
        client.upsert_global_concurrency_limit_by_name(item["name"], item["limit"])
        done.append(f"global limit {item['name']!r} = {item['limit']}")
    return done


def load_automations(path: Path = AUTOMATIONS_FILE, block_ids: Mapping[str, UUID] | None = None) -> list[Any]:
    """Parse the automations file, replacing `block: slug/name` references by ids from `block_ids`."""
    from prefect.events.schemas.automations import AutomationCore

    data = _read_yaml(path)
    raw = data.get("automations")
    if not isinstance(raw, list) or not raw:
        raise SetupError(f"{path}: expected a non-empty 'automations' list")
    block_ids = block_ids or {}
    out = []
    for i, spec in enumerate(raw):
        if not isinstance(spec, dict) or not spec.get("name"):
            raise SetupError(f"{path}: automations[{i}] needs a name")
        spec = dict(spec)
        actions = []
        for action in spec.get("actions") or []:
            action = dict(action)
            ref = action.pop(BLOCK_REF_KEY, None)
            if ref is not None:
                if ref not in block_ids:
                    raise SetupError(f"{path}: automation {spec['name']!r} refers to unknown block {ref!r}")
                action["block_document_id"] = str(block_ids[ref])
            actions.append(action)
        spec["actions"] = actions
        try:
            out.append(AutomationCore.model_validate(spec))
        except ValueError as exc:
            raise SetupError(f"{path}: automation {spec['name']!r} is invalid: {exc}") from exc
    return out


def block_references(path: Path = AUTOMATIONS_FILE) -> set[str]:
    data = _read_yaml(path)
    return {
        str(action[BLOCK_REF_KEY])
        for spec in data.get("automations") or []
        for action in spec.get("actions") or []
        if isinstance(action, dict) and BLOCK_REF_KEY in action
    }


def ensure_automations(client: Any, automations: Sequence[Any]) -> list[str]:
    done = []
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            done.append(f"automation {automation.name!r}: updated")
        else:
            client.create_automation(automation)
            done.append(f"automation {automation.name!r}: created")
    return done


def _ensure_or_remove(client: Any, name: str, automation: Any | None, effect: str, window_env: str) -> list[str]:
    """Create or update `automation`; None (its window set to 0) deletes the automation called `name`."""
    if automation is not None:
        [line] = ensure_automations(client, [automation])
        return [f"{line} ({effect})"]
    existing = client.read_automations_by_name(name)
    for found in existing:
        client.delete_automation(found.id)
    return [f"automation {name!r}: {'deleted' if existing else 'not installed'} ({window_env}=0)"]


def ensure_zombie_automation(client: Any, window_seconds: float) -> list[str]:
    """Create or update the zombie automation; with a window of 0, delete it."""
    return _ensure_or_remove(client, ZOMBIE_AUTOMATION_NAME, zombie_automation(window_seconds) if window_seconds else None,
                             f"no heartbeat for {window_seconds:g} s -> Crashed", ZOMBIE_WINDOW_ENV)


def ensure_pending_automation(client: Any, window_seconds: float) -> list[str]:
    """Create or update the lost-Pending automation; with a window of 0, delete it."""
    return _ensure_or_remove(client, PENDING_AUTOMATION_NAME, pending_automation(window_seconds) if window_seconds else None,
                             f"Pending for {window_seconds:g} s without starting -> Crashed", PENDING_WINDOW_ENV)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SetupError(f"{path}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise SetupError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SetupError(f"{path}: expected a mapping at the top level")
    return data


def run_setup(
    webhook_url: str | None = None,
    routing_key: str | None = None,
    work_pool: str = WORK_POOL,
    automations_file: Path = AUTOMATIONS_FILE,
    limits_file: Path = LIMITS_FILE,
    zombie_window: float | None = None,
) -> SetupReport:
    """Everything `main` does, callable from tests and other scripts."""
    from prefect.client.orchestration import get_client

    url = webhook_url if webhook_url is not None else os.environ.get(ALERT_URL_ENV, "")
    key = routing_key if routing_key is not None else os.environ.get(ROUTING_KEY_ENV, "")
    window = (
        zombie_window_seconds()
        if zombie_window is None
        else zombie_window_seconds({**os.environ, ZOMBIE_WINDOW_ENV: str(zombie_window)})
    )
    pending = pending_window_seconds()
    report = SetupReport()
    limits = load_limits(limits_file)
    refs = block_references(automations_file)
    with get_client(sync_client=True) as client:
        report.work_pool = ensure_work_pool(client, work_pool)
        report.limits = ensure_limits(client, limits)
        report.automations = ensure_zombie_automation(client, window) + ensure_pending_automation(client, pending)
        if not url:
            report.alert_block = (
                f"alerts: skipped ({ALERT_URL_ENV} is not set); flows still alert through "
                "flows.infra.hooks when it is set in the worker's environment"
            )
            return report
        block_id = ensure_alert_block(url, key)
        report.alert_block = f"block 'custom-webhook/{ALERT_BLOCK_NAME}': saved ({block_id})"
        block_ids = {f"custom-webhook/{ALERT_BLOCK_NAME}": block_id}
        for ref in refs - set(block_ids):
            slug, _, name = ref.partition("/")
            try:
                block_ids[ref] = client.read_block_document_by_name(name=name, block_type_slug=slug).id
            except Exception as exc:
                raise SetupError(f"{automations_file}: block {ref!r} does not exist on the server ({exc})") from exc
        report.automations += ensure_automations(client, load_automations(automations_file, block_ids))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__.split("\n")[0])
    parser.add_argument("--webhook-url", help=f"alert receiver (default: ${ALERT_URL_ENV}; empty: no alerts)")
    parser.add_argument("--routing-key", help=f"PagerDuty routing key (default: ${ROUTING_KEY_ENV})")
    parser.add_argument("--work-pool", default=WORK_POOL, help="process work pool name")
    parser.add_argument(
        "--zombie-window",
        type=float,
        help=f"seconds without a heartbeat before a running flow run is marked Crashed (default: "
        f"${ZOMBIE_WINDOW_ENV}, else {ZOMBIE_WINDOW_BEATS} x the heartbeat period; 0: no zombie automation)",
    )
    args = parser.parse_args(argv)
    try:
        report = run_setup(args.webhook_url, args.routing_key, args.work_pool, zombie_window=args.zombie_window)
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
