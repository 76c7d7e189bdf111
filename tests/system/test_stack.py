"""deployments/stack.sh on real parts: PostgreSQL under Prefect and MLflow, MLflow's basic-auth registry, the
monitoring servers, Dask and a worker, started once for the module on free loopback ports in a temporary folder.

What it shows: `up` brings every service up and binds loopback only, `up` again changes nothing; the registry
refuses tag, alias and version writes to anonymous clients and to the service's account (a wrong password is a
401 that no log repeats); a deployment run started through the Prefect API on Postgres runs on the stack's
worker and its failure pages the webhook; with no champion served, the shipped LvmServeDown rule (on a faster
clock) pages through the stack's Prometheus and Alertmanager; `kill -9` of PostgreSQL and `up` again lose neither
Prefect's runs nor the registry's versions, tags and aliases; `kill -9` of MLflow makes a registration fail
without leaving a version, and `up` restarts only MLflow; `down` stops what `up` started and nothing else.

Cost: one stack for the module; the file took 1 min 45 s to 3 min 4 s of wall time on a busy 2-core machine.

Outside CI a machine without PostgreSQL or the Prometheus packages skips; in CI (`CI=true`) it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.fixtures.monitoring import alertmanager_on_a_faster_clock, in_ci, rules_on_a_faster_clock
from tests.fixtures.paths import REPO
from tests.fixtures.prefect_server import WebhookReceiver, free_port

STACK = REPO / "deployments" / "stack.sh"
PORTS = ("POSTGRES_PORT", "PREFECT_PORT", "MLFLOW_PORT", "SERVE_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT",
         "PUSHGATEWAY_PORT", "DASK_SCHEDULER_PORT", "DASK_DASHBOARD_PORT")
SERVICES = ("prefect-server", "mlflow", "alertmanager", "prometheus", "pushgateway", "dask-scheduler",
            "dask-worker-1", "worker", "serve")
ROUTING_KEY = "stack-test-routing-key"
FACTOR = 60  # the shipped rules and routing on a clock this much faster (tests/fixtures/monitoring.py)

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]


def _need_packages() -> None:
    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    missing = [name for name, ok in (("postgresql", bool(pg)), ("prometheus", shutil.which("prometheus")),
                                     ("prometheus-alertmanager", shutil.which("prometheus-alertmanager")),
                                     ("prometheus-pushgateway", shutil.which("prometheus-pushgateway"))) if not ok]
    if missing:
        message = f"not installed: {', '.join(missing)} (Debian packages; .ci/run installs them)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@dataclass
class Stack:
    state: Path
    env: dict[str, str]
    receiver: WebhookReceiver
    up_seconds: float

    def port(self, name: str) -> int:
        return int(self.env[name])

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.port(port_name)}"

    def sh(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["bash", str(STACK), command], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"stack.sh {command}: {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def secret(self, name: str) -> str:
        return (self.state / "secrets" / name).read_text().strip()

    def pid(self, name: str) -> int:
        return int((self.state / "run" / f"{name}.pid").read_text())

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in (self.state / "log").glob("*.log"))


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _need_packages()
    # Not under pytest's private temporary folder: as root, the cluster belongs to the `postgres` account,
    # which must reach it.
    state = Path(tempfile.mkdtemp(prefix="lvm-stack-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "LVM_"))}
    env.update({name: str(free_port()) for name in PORTS})
    with WebhookReceiver() as receiver:
        # docker/prometheus/'s rules and Alertmanager routing, as shipped but 60 times faster, paging the receiver.
        (state / "rules.yml").write_text(yaml.safe_dump(rules_on_a_faster_clock(FACTOR)))
        am = alertmanager_on_a_faster_clock({"LVM_ALERT_ROUTING_KEY": ROUTING_KEY, "LVM_ALERT_WEBHOOK_URL": receiver.url},
                                            FACTOR)
        (state / "alertmanager.yml").write_text(yaml.safe_dump(am))
        env.update(LVM_STACK_RULES=str(state / "rules.yml"), LVM_STACK_ALERTMANAGER_CONFIG=str(state / "alertmanager.yml"),
                   LVM_STACK_SCRAPE_INTERVAL="1s")
        env.update(LVM_STACK_DIR=str(state), DASK_WORKERS="1", HF_HUB_OFFLINE="1",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", LVM_STACK_DEPLOYMENTS="watch-snapshots",
                   LVM_ALERT_WEBHOOK_URL=receiver.url, LVM_ALERT_ROUTING_KEY=ROUTING_KEY,
                   PREFECT_WORKER_QUERY_SECONDS="2")
        stack = Stack(state, env, receiver, 0.0)
        stack.sh("init-secrets")
        started = time.monotonic()
        try:
            stack.sh("up")
            stack.up_seconds = time.monotonic() - started
            yield stack
        finally:
            subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, timeout=120)
            shutil.rmtree(state, ignore_errors=True)


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _listening_pids(pids: set[int]) -> set[tuple[str, int, int]]:
    return {(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _group(pid: int) -> set[int]:
    return {p.pid for p in psutil.process_iter() if _pgid(p.pid) == pid}


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_up_starts_everything_on_loopback_and_is_idempotent(stack: Stack) -> None:
    print(f"stack up: {stack.up_seconds:.0f} s")
    status = stack.sh("status").stdout
    for name in ("postgres", "prefect-server", "mlflow", "alertmanager", "prometheus", "pushgateway", "dask-scheduler"):
        assert any(line.startswith(name) and line.rstrip().endswith("up") for line in status.splitlines()), status
    pids = {pid for name in SERVICES for pid in _group(stack.pid(name))}
    pg_pid = int((stack.state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    bound = _listening(pids | {pg_pid})
    assert {port for _, port in bound} >= {stack.port(p) for p in PORTS if p != "SERVE_PORT"}
    wide = {(ip, port, " ".join(psutil.Process(pid).cmdline()[:3])) for ip, port, pid in _listening_pids(pids | {pg_pid})
            if ip != "127.0.0.1"}
    assert not wide, f"listening beyond loopback: {wide}"
    before = {name: stack.pid(name) for name in SERVICES}
    again = stack.sh("up").stdout
    assert "started" not in again.replace("already running", ""), again
    assert {name: stack.pid(name) for name in SERVICES} == before


def test_prometheus_scrapes_the_stack_and_a_down_service_pages_through_alertmanager(stack: Stack) -> None:
    """No champion yet, so `lvm serve` does not answer: the shipped LvmServeDown rule fires and Alertmanager pages."""
    prom = stack.url("PROMETHEUS_PORT")
    deadline = time.monotonic() + 90
    page: dict[str, Any] | None = None
    while time.monotonic() < deadline and page is None:
        page = next((r.json() for r in stack.receiver.requests if "LvmServeDown" in r.body.decode()), None)
        time.sleep(1)
    assert page is not None, f"no LvmServeDown page: {[r.body[:300] for r in stack.receiver.requests]}"
    assert page["routing_key"] == ROUTING_KEY and page["event_action"] == "trigger"
    up = httpx.get(f"{prom}/api/v1/query", params={"query": "up"}, timeout=10).json()["data"]["result"]
    health = {r["metric"]["job"]: r["value"][1] for r in up}
    assert health == {"lvm-serve": "0", "pushgateway": "1", "dask-scheduler": "1", "prometheus": "1"}, health
    # The service is down for want of a champion, not of access: its account (password from a file) reads the registry.
    deadline = time.monotonic() + 90
    while "error:" not in (serve_log := (stack.state / "log" / "serve.log").read_text(errors="replace")):
        assert time.monotonic() < deadline, f"lvm serve said nothing: {serve_log[-2000:]}"
        time.sleep(1)
    assert "no registered model named 'lvm-amn'" in serve_log and "not authenticated" not in serve_log, serve_log[-2000:]


# --- the registry -------------------------------------------------------------------------------------


def _api(stack: Stack, method: str, path: str, auth: tuple[str, str] | None, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.url('MLFLOW_PORT')}/api/2.0/mlflow{path}", auth=auth, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def registered(stack: Stack) -> dict[str, Any]:
    """A model registered by the pipeline's account: experiment, run, version 1 (with a gate tag), operator's alias."""
    pipeline = ("lvm-pipeline", stack.secret("LVM_REGISTRY_PIPELINE_PASSWORD"))
    exp = _api(stack, "POST", "/experiments/create", pipeline, json={"name": "stack-test"})
    assert exp.status_code == 200, exp.text
    run = _api(stack, "POST", "/runs/create", pipeline, json={"experiment_id": exp.json()["experiment_id"]})
    assert run.status_code == 200, run.text
    info = run.json()["run"]["info"]
    assert _api(stack, "POST", "/registered-models/create", pipeline, json={"name": "lvm-stack"}).status_code == 200
    mv = _api(stack, "POST", "/model-versions/create", pipeline,
              json={"name": "lvm-stack", "source": f"{info['artifact_uri']}/model", "run_id": info["run_id"]})
    assert mv.status_code == 200, mv.text
    tag = _api(stack, "POST", "/model-versions/set-tag", pipeline,
               json={"name": "lvm-stack", "version": "1", "key": "gate", "value": "passed"})
    assert tag.status_code == 200, tag.text
    operator = ("lvm-operator", stack.secret("LVM_REGISTRY_OPERATOR_PASSWORD"))
    alias = _api(stack, "POST", "/registered-models/alias", operator,
                 json={"name": "lvm-stack", "alias": "champion", "version": "1"})
    assert alias.status_code == 200, alias.text  # the operator may: the refusals below are about the account
    return {"run_id": info["run_id"], "experiment_id": exp.json()["experiment_id"]}


WRITES = [
    ("POST", "/registered-models/set-tag", {"name": "lvm-stack", "key": "lvm.rollout", "value": "hijack"}),
    ("POST", "/registered-models/alias", {"name": "lvm-stack", "alias": "champion", "version": "1"}),
    ("DELETE", "/registered-models/alias", {"name": "lvm-stack", "alias": "champion"}),
    ("POST", "/model-versions/set-tag", {"name": "lvm-stack", "version": "1", "key": "gate", "value": "forged"}),
]


def test_anonymous_and_service_accounts_cannot_write_the_registry(stack: Stack, registered: dict[str, Any]) -> None:
    service = ("lvm-service", stack.secret("LVM_REGISTRY_SERVICE_PASSWORD"))
    new_version = ("POST", "/model-versions/create", {"name": "lvm-stack", "run_id": registered["run_id"],
                                                       "source": "mlflow-artifacts:/forged/model"})
    for auth, expected in ((None, 401), (service, 403)):
        for method, path, body in [*WRITES, new_version]:
            kwargs = {"params": body} if method == "DELETE" else {"json": body}
            resp = _api(stack, method, path, auth, **kwargs)
            assert resp.status_code == expected, (auth and auth[0], method, path, resp.status_code, resp.text[:200])
    # The service reads what it serves.
    got = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-stack"})
    assert got.status_code == 200 and got.json()["registered_model"]["aliases"] == [{"alias": "champion", "version": "1"}]
    versions = _api(stack, "GET", "/model-versions/search", service, params={"filter": "name='lvm-stack'"})
    assert [v["version"] for v in versions.json()["model_versions"]] == ["1"]


def test_wrong_password_is_a_401_and_never_logged(stack: Stack, registered: dict[str, Any]) -> None:
    wrong = "wrong-password-7f3a9c2e1b"
    resp = _api(stack, "GET", "/registered-models/get", ("lvm-service", wrong), params={"name": "lvm-stack"})
    assert resp.status_code == 401
    logs = stack.logs()
    assert wrong not in logs
    for name in ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "LVM_REGISTRY_PIPELINE_PASSWORD",
                 "LVM_REGISTRY_SERVICE_PASSWORD", "LVM_REGISTRY_OPERATOR_PASSWORD", "LVM_SERVE_TOKEN"):
        assert stack.secret(name) not in logs, f"{name} appears in a log"


# --- Prefect on PostgreSQL ----------------------------------------------------------------------------


def _prefect(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    resp = httpx.request(method, f"{stack.url('PREFECT_PORT')}/api{path}", timeout=30, **kwargs)
    resp.raise_for_status()
    return resp.json() if resp.content else None


def _final(stack: Stack, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _prefect(stack, "GET", f"/flow_runs/{run_id}")
        if (run.get("state") or {}).get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    worker_log = (stack.state / "log" / "worker.log").read_text(errors="replace")[-3000:]
    raise AssertionError(f"flow run {run_id} not final after {timeout:.0f} s\n{worker_log}")


@pytest.fixture(scope="module")
def failed_run(stack: Stack) -> dict[str, Any]:
    """A watch-snapshots run started through the API, on a source that does not exist: it fails on the worker."""
    found = _prefect(stack, "POST", "/deployments/filter", json={"deployments": {"name": {"any_": ["watch-snapshots"]}}})
    assert len(found) == 1
    run = _prefect(stack, "POST", f"/deployments/{found[0]['id']}/create_flow_run",
                   json={"parameters": {"source": str(stack.state / "no-such-index")}})
    return _final(stack, run["id"], timeout=240)


def test_deployment_run_through_the_api_fails_on_the_worker_and_pages(stack: Stack, failed_run: dict[str, Any]) -> None:
    assert failed_run["state"]["type"] == "FAILED", failed_run["state"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pages = [r.json() for r in stack.receiver.requests]
        if any(failed_run["id"] in str(p) for p in pages):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"no page for flow run {failed_run['id']}: {stack.receiver.requests}")
    page = next(p for p in pages if failed_run["id"] in str(p))
    assert page["routing_key"] == ROUTING_KEY and page["event_action"] == "trigger"


def test_postgres_killed_and_restarted_loses_no_run_and_no_registry_state(
    stack: Stack, registered: dict[str, Any], failed_run: dict[str, Any]
) -> None:
    pidfile = stack.state / "postgres" / "data" / "postmaster.pid"
    postmaster = int(pidfile.read_text().split()[0])
    children = psutil.Process(postmaster).children(recursive=True)
    os.kill(postmaster, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(postmaster)], timeout=10)
    psutil.wait_procs(children, timeout=10)
    # The database is gone: the registry cannot answer (no stale success).
    service = ("lvm-service", stack.secret("LVM_REGISTRY_SERVICE_PASSWORD"))
    during = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-stack"})
    assert during.status_code >= 500 or during.status_code == 401, during.status_code
    out = stack.sh("up").stdout
    assert "postgres: started" in out and "mlflow: already running" in out, out
    # Prefect and MLflow reconnect by themselves; nothing written before the crash is lost.
    deadline = time.monotonic() + 120
    while True:
        try:
            got = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-stack"})
            run = _prefect(stack, "GET", f"/flow_runs/{failed_run['id']}")
            if got.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "registry or Prefect API not back after PostgreSQL restarted"
        time.sleep(2)
    assert got.json()["registered_model"]["aliases"] == [{"alias": "champion", "version": "1"}]
    mv = _api(stack, "GET", "/model-versions/get", service, params={"name": "lvm-stack", "version": "1"}).json()
    assert {t["key"]: t["value"] for t in mv["model_version"]["tags"]} == {"gate": "passed"}
    assert run["state"]["type"] == "FAILED"


def test_mlflow_killed_then_restarted_leaves_no_version_without_its_gate_outcome(
    stack: Stack, registered: dict[str, Any]
) -> None:
    pipeline = ("lvm-pipeline", stack.secret("LVM_REGISTRY_PIPELINE_PASSWORD"))
    group = _group(stack.pid("mlflow"))
    os.killpg(stack.pid("mlflow"), signal.SIGKILL)
    psutil.wait_procs([psutil.Process(p) for p in group if psutil.pid_exists(p)], timeout=10)
    # A registration while the server is gone fails at once; nothing is half-written.
    with pytest.raises(httpx.TransportError):
        _api(stack, "POST", "/model-versions/create", pipeline,
             json={"name": "lvm-stack", "source": "mlflow-artifacts:/x/model", "run_id": registered["run_id"]})
    out = stack.sh("up").stdout
    assert "mlflow: started" in out and "prefect-server: already running" in out, out
    versions = _api(stack, "GET", "/model-versions/search", pipeline, params={"filter": "name='lvm-stack'"}).json()
    assert [(v["version"], {t["key"]: t["value"] for t in v.get("tags", [])}) for v in versions["model_versions"]] == [
        ("1", {"gate": "passed"})]


def test_down_stops_what_up_started_and_nothing_else(stack: Stack) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        groups = {name: _group(stack.pid(name)) for name in SERVICES}
        stack.sh("down", timeout=120)
        left = {name: [p for p in pids if psutil.pid_exists(p)] for name, pids in groups.items()}
        assert not any(left.values()), left
        assert not (stack.state / "postgres" / "data" / "postmaster.pid").exists()
        assert bystander.poll() is None
        assert "stopped" in stack.sh("status").stdout
    finally:
        bystander.kill()
        bystander.wait()
