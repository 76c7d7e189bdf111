"""Crash recovery on a real Prefect server: a worker lost with its flow run, and concurrency leases that
outlive a server restart.

- A process worker and its flow-run subprocess are SIGKILLed together mid-run (a machine that lost
  power): nobody reports the run's end, so its heartbeats stop; the zombie automation of
  deployments/lost_runs.py marks it Crashed, the failure automation pages for it, and the same run started
  again on a new worker completes.
- A run claimed by a worker (Pending) whose worker dies before starting it never sends a heartbeat; the
  lost-Pending automation marks it Crashed and the failure automation pages for it.
- The server keeps concurrency leases in files (PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=...filesystem):
  a slot held across a server restart stays held, and once its lease runs out the repossessor frees it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from tests.fixtures.prefect_server import (
    LEASE_STORAGE,
    REPO,
    PrefectServer,
    api,
    create_run,
    deployment_named,
    flow_run_logs,
    kill_tree,
    process_tree,
    restart_worker,
    start_server,
    stop_process,
    wait_for_final_state,
)

# isort: split
# (prefect_server puts the repository root on sys.path: `deployments` is not an installed package.)
from deployments.lost_runs import (
    MIN_PROACTIVE_WITHIN_S,
    PENDING_AUTOMATION_NAME,
    ZOMBIE_AUTOMATION_NAME,
    SetupError,
    pending_automation,
    pending_window_seconds,
    zombie_automation,
    zombie_window_seconds,
)
from deployments.setup import ensure_pending_automation, ensure_zombie_automation
from lvm_core.runtime.environment import FLOW_RUN_HEARTBEAT_S
from tests.fixtures.builds import session_embedding_cache

SMALL_BUILD = {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}  # parity on 1-2 held-out articles is noise
# 10 articles: the smallest slice well clear of the data gates' limits (7 fails them) and a rerun that
# builds in about a minute on two cores; 14 would take two.
CRASH_BUILD_ARTICLES = 10
# While the killed run waits to be noticed, the zombie window is narrowed from the shipped 3 heartbeats
# (90 s) to Prefect's shortest proactive window plus a margin: the dead run has no second heartbeat to send
# anyway, and no other run is on the server meanwhile.
TEST_ZOMBIE_WINDOW_S = MIN_PROACTIVE_WITHIN_S + 5
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --- offline: the settings every shipped server and worker gets ----------------------------------------


def test_zombie_automation_and_heartbeat_settings_agree() -> None:
    automation = zombie_automation(zombie_window_seconds({}))
    trigger = automation.trigger
    assert automation.name == ZOMBIE_AUTOMATION_NAME
    assert trigger.posture == "Proactive" and trigger.threshold == 1
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert "prefect.flow-run.heartbeat" in trigger.after and "prefect.flow-run.heartbeat" in trigger.expect
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.within == dt.timedelta(seconds=3 * FLOW_RUN_HEARTBEAT_S)
    [action] = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED" and not action.force

    assert zombie_window_seconds({"LVM_ZOMBIE_WINDOW_SECONDS": "45"}) == 45
    assert zombie_window_seconds({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}) == 180
    assert zombie_window_seconds({"LVM_ZOMBIE_WINDOW_SECONDS": "0"}) == 0
    for bad in ("30", "5", "soon", "-1"):  # no longer than one heartbeat period: healthy runs would crash
        with pytest.raises(SetupError, match="LVM_ZOMBIE_WINDOW_SECONDS"):
            zombie_window_seconds({"LVM_ZOMBIE_WINDOW_SECONDS": bad})

    pending = pending_automation(pending_window_seconds({})).trigger
    assert pending.after == {"prefect.flow-run.Pending"} and pending.for_each == {"prefect.resource.id"}
    # started, ended, or handed back to the scheduler: each satisfies it; a heartbeat is the other automation's
    assert {"prefect.flow-run.Running", "prefect.flow-run.Crashed", "prefect.flow-run.Scheduled"} <= pending.expect
    assert "prefect.flow-run.heartbeat" not in pending.expect and pending.within == dt.timedelta(seconds=600)
    assert pending_window_seconds({"LVM_PENDING_WINDOW_SECONDS": "0"}) == 0
    for bad in ("5", "later", "-1"):
        with pytest.raises(SetupError, match="LVM_PENDING_WINDOW_SECONDS"):
            pending_window_seconds({"LVM_PENDING_WINDOW_SECONDS": bad})

    # Flow runs of every deployment beat at the period the window is derived from ...
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(FLOW_RUN_HEARTBEAT_S), deployment["name"]
    # ... and so do the workers and ad-hoc runs the shipped scripts start; their servers keep leases on disk.
    script = (REPO / "deployments" / "start_local.sh").read_text()
    assert f"PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-{FLOW_RUN_HEARTBEAT_S}" in script
    assert f"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE={LEASE_STORAGE}" in script


# --- the worker crash ----------------------------------------------------------------------------------


def _wait_for_running(server: PrefectServer, flow_run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = api(server, "GET", f"/flow_runs/{flow_run_id}")
        state_type = (run.get("state") or {}).get("type")
        if state_type == "RUNNING":
            return run
        assert state_type not in FINAL, f"run ended before it could be killed: {run['state']}\n{flow_run_logs(server, flow_run_id)}"
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} not RUNNING after {timeout:.0f} s: {run.get('state_name')}")


def _heartbeats(server: PrefectServer, flow_run_id: str) -> list[dict[str, Any]]:
    page = api(server, "POST", "/events/filter", json={
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 50,
    })
    return page["events"]


def _wait_for_heartbeat(server: PrefectServer, flow_run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beats = _heartbeats(server, flow_run_id)
        if beats:
            return beats[0]
        time.sleep(1)
    raise AssertionError(f"no prefect.flow-run.heartbeat event from flow run {flow_run_id} within {timeout:.0f} s")


def _install_zombie_window(server: PrefectServer, seconds: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        ensure_zombie_automation(client, seconds)


def _zombie_window(server: PrefectServer) -> float:
    [zombie] = api(server, "POST", "/automations/filter", json={"automations": {"name": {"any_": [ZOMBIE_AUTOMATION_NAME]}}})
    return float(zombie["trigger"]["within"])


def _wait_for_alert(server: PrefectServer, flow_run_id: str, timeout: float) -> dict[str, Any]:
    receiver = server.alert_receiver
    assert receiver is not None
    key = f"prefect-flow-run-{flow_run_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        matching = [r.json() for r in receiver.requests if r.json().get("dedup_key") == key]
        if matching:
            return matching[0]
        receiver.wait_for(len(receiver.requests) + 1, timeout=2)
    raise AssertionError(f"no alert for {key}; received {[r.body[:200] for r in receiver.requests]}")


@pytest.mark.server
@pytest.mark.timeout(900)
def test_killed_worker_run_is_crashed_alerted_and_rerun_completes(deployed_server: PrefectServer, tmp_path: Path,
                                                                  small_dataset: Path) -> None:
    server = deployed_server
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    shipped_window = zombie_window_seconds(server.env)
    assert _zombie_window(server) == shipped_window  # as setup installed it

    dep = deployment_named(server, "build-dataset")
    params = {
        "source": "sample",
        "data_dir": str(tmp_path / "data"),
        "limit_articles": CRASH_BUILD_ARTICLES,
        "options": {"thresholds": SMALL_BUILD},
    }
    # The run waits at its chunk step when the machine goes: mid-run, every time at the same point. (Killed
    # a moment later, inside the embed step, it would hold a slot of the `lvm-heavy-cpu` tag limit, which
    # Prefect frees only when the dead task's lease runs out, about a minute later.)
    marker = tmp_path / "fault-marker"
    env = {**dep["job_variables"]["env"], "LVM_FAULT_INJECT": "hang@chunk", "LVM_FAULT_MARKER": str(marker)}
    _install_zombie_window(server, TEST_ZOMBIE_WINDOW_S)
    try:
        run = api(server, "POST", f"/deployments/{dep['id']}/create_flow_run",
                  json={"parameters": params, "job_variables": {"env": env}})
        run_id = run["id"]
        _wait_for_running(server, run_id, timeout=180)
        timings["running"] = time.monotonic() - t0
        # Killed after its first heartbeat got out and once it reached its chunk step.
        beat = _wait_for_heartbeat(server, run_id, timeout=60)
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline, f"the run never reached its chunk step:\n{flow_run_logs(server, run_id)}"
            time.sleep(0.2)
        assert f"prefect.deployment.{dep['id']}" in {r["prefect.resource.id"] for r in beat["related"]}

        # The machine is lost: worker and flow-run processes die at once, nobody reports anything.
        tree = process_tree(server.worker.pid)
        assert len(tree) >= 2, "the worker should be running the flow run in a subprocess"
        killed = kill_tree(server.worker)
        t_kill = time.monotonic()
        timings["killed"] = t_kill - t0
        assert not any(ref.alive() for ref in killed), "a killed process survived"
        assert api(server, "GET", f"/flow_runs/{run_id}")["state"]["type"] == "RUNNING"

        # A replacement machine comes up meanwhile (and keeps serving the tests that follow).
        restart_worker(server)
        timings["new worker"] = time.monotonic() - t0

        final = wait_for_final_state(server, run_id, timeout=TEST_ZOMBIE_WINDOW_S + 60)
        timings["crashed"] = time.monotonic() - t0
    finally:
        restart_worker(server)  # whatever failed, the tests that follow need a worker ...
        _install_zombie_window(server, shipped_window)  # ... and the shipped window
    state = final["state"]
    assert state["type"] == "CRASHED" and state["name"] == "Crashed", state
    assert "heartbeat" in state["message"] and ZOMBIE_AUTOMATION_NAME in state["message"]
    # Crashed once the window after its last heartbeat ran out, not on the kill itself.
    last_beat = max(dt.datetime.fromisoformat(b["occurred"]) for b in _heartbeats(server, run_id))
    silent = (dt.datetime.fromisoformat(state["timestamp"]) - last_beat).total_seconds()
    assert silent >= TEST_ZOMBIE_WINDOW_S - 1, f"crashed {silent:.1f} s after its last heartbeat"

    alert = _wait_for_alert(server, run_id, timeout=60)
    timings["alerted"] = time.monotonic() - t0
    assert alert["event_action"] == "trigger" and alert["routing_key"] == "test-routing-key"
    details = alert["payload"]["custom_details"]
    assert details["flow_run_id"] == run_id and details["state"] == "Crashed"
    assert details["flow"] == "build_dataset" and details["deployment"] == "build-dataset"

    # The same build again, on the new worker: nothing the dead run held (its build slot) stops it. The
    # session's embedding cache (when a small build filled it) spares it a cold encode: what is tested here is
    # that it runs at all.
    if (cache := session_embedding_cache()) is not None:
        shutil.rmtree(tmp_path / "data" / "cache", ignore_errors=True)
        shutil.copytree(cache, tmp_path / "data" / "cache")
    rerun = create_run(server, dep["id"], params)
    done = wait_for_final_state(server, rerun["id"], timeout=420)
    timings["rerun completed"] = time.monotonic() - t0
    assert done["state"]["type"] == "COMPLETED", (
        f"{done['state']['name']}: {done['state'].get('message')}\n{flow_run_logs(server, rerun['id'])[-6000:]}"
    )
    assert len(list((tmp_path / "data" / "datasets").glob("*/READY"))) == 1
    assert not any(ref.alive() for ref in killed)
    print("worker crash timings (s from start): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


@pytest.mark.server
@pytest.mark.timeout(300)
def test_run_lost_while_pending_is_crashed_and_alerted(deployed_server: PrefectServer, tmp_path: Path) -> None:
    """A worker claimed the run (Pending) and died before its process started: no heartbeat ever comes."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = deployed_server
    dep = deployment_named(server, "build-dataset")
    params = {"source": "sample", "data_dir": str(tmp_path / "data"), "limit_articles": CRASH_BUILD_ARTICLES}
    # Scheduled for tomorrow, so no live worker picks it up; then claimed the way a worker claims a run.
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    with temporary_settings({PREFECT_API_URL: server.api_url}), get_client(sync_client=True) as client:
        ensure_pending_automation(client, TEST_ZOMBIE_WINDOW_S)
        try:
            run = api(server, "POST", f"/deployments/{dep['id']}/create_flow_run", json={
                "parameters": params, "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": tomorrow}}})
            claimed = api(server, "POST", f"/flow_runs/{run['id']}/set_state",
                          json={"state": {"type": "PENDING", "name": "Pending"}})
            assert claimed["status"] == "ACCEPT", claimed
            final = wait_for_final_state(server, run["id"], timeout=TEST_ZOMBIE_WINDOW_S + 60)
        finally:
            ensure_pending_automation(client, pending_window_seconds(server.env))
    state = final["state"]
    assert state["type"] == "CRASHED" and PENDING_AUTOMATION_NAME in state["message"], state
    alert = _wait_for_alert(server, run["id"], timeout=60)
    assert alert["event_action"] == "trigger" and alert["payload"]["custom_details"]["state"] == "Crashed"
    assert alert["payload"]["custom_details"]["deployment"] == "build-dataset"


# --- leases across a server restart --------------------------------------------------------------------


def _expire_lease(root: Path, lease_id: str) -> None:
    """What a dead holder's lease looks like once its time ran out (leases are at least 60 s long)."""
    from prefect.server.concurrency.lease_storage.filesystem import ConcurrencyLeaseStorage

    storage = ConcurrencyLeaseStorage(storage_path=root / "prefect-home" / "concurrency_leases")
    assert asyncio.run(storage.renew_lease(UUID(lease_id), dt.timedelta(seconds=-1)))


@pytest.mark.server
@pytest.mark.timeout(300)
def test_concurrency_lease_survives_server_restart_and_is_repossessed(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("lease-server")
    server = start_server(root)
    try:
        api(server, "POST", "/v2/concurrency_limits/", json={"name": "lvm-lease-probe", "limit": 1})
        take = {"names": ["lvm-lease-probe"], "slots": 1, "mode": "concurrency", "lease_duration": 60}
        lease_id = api(server, "POST", "/v2/concurrency_limits/increment-with-lease", json=take)["lease_id"]
        assert (root / "prefect-home" / "concurrency_leases" / f"{lease_id}.json").is_file()

        stop_process(server.process)
        server = start_server(root, server_settings={"PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2"})
        # The lease came back with the server: the slot is still taken and its holder can renew it.
        assert api(server, "GET", "/v2/concurrency_limits/lvm-lease-probe")["active_slots"] == 1
        api(server, "POST", f"/v2/concurrency_limits/leases/{lease_id}/renew", json={"lease_duration": 60})

        # The holder dies and its lease runs out: the repossessor (every 15 s by default, 2 s here) frees the slot.
        _expire_lease(root, lease_id)
        deadline = time.monotonic() + 60
        while api(server, "GET", "/v2/concurrency_limits/lvm-lease-probe")["active_slots"] and time.monotonic() < deadline:
            time.sleep(2)
        assert api(server, "GET", "/v2/concurrency_limits/lvm-lease-probe")["active_slots"] == 0, server.log_tail()
        lease = api(server, "POST", "/v2/concurrency_limits/increment-with-lease", json=take)
        assert lease["lease_id"] != lease_id
    finally:
        stop_process(server.process)
        shutil.rmtree(root, ignore_errors=True)
