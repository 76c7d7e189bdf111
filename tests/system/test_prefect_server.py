"""The deployments on a real Prefect server: setup, `prefect deploy --all`, a process worker, runs started
through the API, the per-deployment concurrency limit and the failure automation.

Each test starts from one shared server (tests/fixtures/prefect_server.py); the first one pays for its start,
the setup script, the deploy and the worker (about a minute on two cores). A full pipeline deployment run
(build on Dask, training, evaluation, promotion) and what follows it are in tests/system/test_stack.py, on
the production stack (PostgreSQL, the registry behind authentication).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.prefect_server import (
    REPO,
    PrefectServer,
    api,
    create_run,
    deployment_named,
    flow_run_logs,
    wait_for_final_state,
)

# Every test but the offline prefect.yaml check needs the real server.
on_server = [pytest.mark.server, pytest.mark.timeout(1500)]


def server_test(fn):
    for mark in on_server:
        fn = mark(fn)
    return fn

SMALL_BUILD = {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}  # parity on 1-2 held-out articles is noise


def _deployments(server: PrefectServer) -> dict[str, dict]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {d["name"]: deployment_named(server, d["name"]) for d in spec["deployments"]}


def _flow_name(entrypoint: str) -> str:
    from prefect.flows import load_flow_from_entrypoint

    path, func = entrypoint.split(":")
    return load_flow_from_entrypoint(f"{REPO / path}:{func}").name


def test_prefect_yaml_is_valid_for_prefect() -> None:
    """Offline: the file parses with Prefect's own model and every entrypoint loads as a flow."""
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load((REPO / "prefect.yaml").read_text()))
    names = [d.name for d in model.deployments]
    assert names == ["build-dataset", "train-model", "evaluate-model", "lvm-pipeline", "watch-snapshots", "drift-monitor",
                     "compare-architectures", "staged-rollout"]
    assert {d.work_pool.name for d in model.deployments} == {"lvm-process"}
    assert model.pull == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $LVM_REPO_DIR }}"}}]
    by_name = {d.name: d for d in model.deployments}
    assert by_name["lvm-pipeline"].concurrency_limit.limit == 1
    assert by_name["lvm-pipeline"].concurrency_limit.collision_strategy == "ENQUEUE"
    [schedule] = by_name["watch-snapshots"].schedules
    assert schedule.cron == "0 6 * * *"
    [drift_schedule] = by_name["drift-monitor"].schedules
    assert drift_schedule.cron == "0 * * * *" and by_name["drift-monitor"].parameters["model"].endswith("@champion")
    assert not by_name["staged-rollout"].schedules  # started by hand only
    assert not by_name["compare-architectures"].schedules and by_name["compare-architectures"].parameters == {
        "folds": 10, "seeds": 3}
    pipeline_flow = _flow_name(by_name["lvm-pipeline"].entrypoint)
    assert by_name["watch-snapshots"].parameters["deployment_name"] == f"{pipeline_flow}/lvm-pipeline"
    for d in model.deployments:
        assert _flow_name(d.entrypoint)


@server_test
def test_setup_and_deploy_registered_everything(deployed_server: PrefectServer) -> None:
    server = deployed_server
    assert "work pool 'lvm-process'" in server.setup_output
    pool = api(server, "GET", "/work_pools/lvm-process")
    assert pool["type"] == "process"
    deployments = _deployments(server)
    assert set(deployments) == {"build-dataset", "train-model", "evaluate-model", "lvm-pipeline", "watch-snapshots",
                                "drift-monitor", "compare-architectures", "staged-rollout"}
    for d in deployments.values():
        assert d["work_pool_name"] == "lvm-process" and "lvm" in d["tags"]
        assert d["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    pipeline = deployments["lvm-pipeline"]
    assert pipeline["global_concurrency_limit"]["limit"] == 1
    assert pipeline["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    [schedule] = deployments["watch-snapshots"]["schedules"]
    assert schedule["schedule"]["cron"] == "0 6 * * *" and schedule["active"]

    block = api(server, "GET", "/block_types/slug/custom-webhook/block_documents/name/lvm-alert-webhook")
    assert block["data"]["url"] == server.alert_receiver.url
    [automation] = api(server, "POST", "/automations/filter", json={"automations": {"name": {"any_": ["lvm-flow-run-failure-alert"]}}})
    assert automation["actions"][0]["block_document_id"] == block["id"]
    limit = api(server, "GET", "/concurrency_limits/tag/lvm-heavy-cpu")
    assert limit["concurrency_limit"] == 1

    # Idempotent: a second setup updates in place, no duplicates.
    again = server.run([sys.executable, "-m", "deployments.setup", "--webhook-url", server.alert_receiver.url], timeout=300)
    assert "work pool 'lvm-process': exists" in again.stdout and "automation 'lvm-flow-run-failure-alert': updated" in again.stdout
    found = api(server, "POST", "/automations/filter", json={"automations": {"name": {"any_": ["lvm-flow-run-failure-alert"]}}})
    assert len(found) == 1


@dataclass
class Submitted:
    """Flow runs of this module's tests, created at once as on a busy day: the worker runs what it may side by
    side, and each test waits for its own."""

    overlapping: list[str]  # three runs of the pipeline deployment, with a source that is not there
    failing_watch: str  # meanwhile a watch run that fails: the failure automation's webhook


@pytest.fixture(scope="module")
def submitted(deployed_server: PrefectServer) -> Submitted:
    server = deployed_server
    pipeline, watch = deployment_named(server, "lvm-pipeline"), deployment_named(server, "watch-snapshots")
    missing = str(server.root / "no-such" / "enwiki-20240101-pages-articles.xml.bz2")
    bad = {"source": missing, "snapshot_id": "enwiki-20240101", "limit_articles": 2, "epochs": 1}
    overlapping = [create_run(server, pipeline["id"], bad)["id"] for _ in range(3)]
    failing = create_run(server, watch["id"], {"source": str(server.root / "no-such-index")})["id"]
    return Submitted(overlapping, failing)


@server_test
def test_pipeline_runs_of_one_deployment_never_overlap(deployed_server: PrefectServer, submitted: Submitted) -> None:
    """Three runs of the pipeline deployment for one snapshot created at once: the deployment's limit makes each
    wait for the one before (each takes seconds to start its process and fail, so without the limit they would
    overlap)."""
    server = deployed_server
    runs = [wait_for_final_state(server, r, timeout=900) for r in submitted.overlapping]
    assert all(r["state"]["type"] == "FAILED" for r in runs)  # bad source: each fails fast, as it should
    spans = sorted((dt.datetime.fromisoformat(r["start_time"]), dt.datetime.fromisoformat(r["end_time"])) for r in runs)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"runs overlapped: {spans}"


@server_test
def test_failed_run_fires_the_automation_webhook(deployed_server: PrefectServer, submitted: Submitted) -> None:
    """A failing deployment run -> Failed event -> automation -> Custom Webhook -> local receiver."""
    server = deployed_server
    receiver = server.alert_receiver
    run_id = submitted.failing_watch
    final = wait_for_final_state(server, run_id, timeout=300)
    assert final["state"]["type"] == "FAILED"

    key = f"prefect-flow-run-{run_id}"
    deadline = dt.datetime.now() + dt.timedelta(seconds=120)
    while not (matching := [r.json() for r in list(receiver.requests) if r.json().get("dedup_key") == key]):
        assert dt.datetime.now() < deadline, f"no alert for {key}; received {[r.body[:200] for r in receiver.requests]}"
        receiver.wait_for(len(receiver.requests) + 1, timeout=5)
    # A redelivered event may fire the automation twice; the shared dedup_key makes that one incident.
    event = matching[0]
    assert all(e["event_action"] == "trigger" and e["payload"] == event["payload"] for e in matching), matching
    assert event["routing_key"] == "test-routing-key" and event["event_action"] == "trigger"
    details = event["payload"]["custom_details"]
    assert details["flow"] == "watch_snapshots"
    assert details["deployment"] == "watch-snapshots" and details["state"] == "Failed"
    assert details["flow_run_id"] == run_id
    assert "no such file or folder" in details["message"]
    assert event["payload"]["severity"] == "error" and event["payload"]["source"] == "lvm-platform"


@server_test
def test_watch_deployment_dry_run_on_worker(deployed_server: PrefectServer, submitted: Submitted, tmp_path: Path) -> None:
    """The scheduled deployment's flow runs on the worker and publishes its report artifact. (After the failing
    watch run: a watch run that finds another one running is cancelled.)"""
    from lvm_core.data.ingest.sources import sample_dump_path

    server = deployed_server
    wait_for_final_state(server, submitted.failing_watch, timeout=300)
    index = tmp_path / "enwiki" / "20240601"
    index.mkdir(parents=True)
    name = "enwiki-20240601-pages-articles.xml.bz2"
    shutil.copyfile(sample_dump_path(), index / name)
    (index / "dumpstatus.json").write_text(json.dumps({"jobs": {"articlesdump": {"status": "done", "files": {name: {}}}}}))
    dep = deployment_named(server, "watch-snapshots")
    run = create_run(server, dep["id"], {"source": str(tmp_path / "enwiki"), "dry_run": True, "data_dir": str(tmp_path / "data")})
    final = wait_for_final_state(server, run["id"], timeout=300)
    assert final["state"]["type"] == "COMPLETED", flow_run_logs(server, run["id"])
    artifacts = api(server, "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}},
                                                               "limit": 10, "offset": 0, "sort": "CREATED_DESC"})
    markdown = next(a["data"] for a in artifacts if a["key"] == "snapshot-watch")
    assert "enwiki-20240601" in markdown and "dry run" in markdown
