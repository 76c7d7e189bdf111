"""deployments/stack.sh on real parts: PostgreSQL under Prefect and MLflow, MLflow's basic-auth registry, the
monitoring servers, Dask and a worker, started once for the module on free loopback ports in a temporary folder.

What it shows: `up` brings every service up and binds loopback only, `up` again changes nothing; the registry
refuses tag, alias and version writes to anonymous clients and to the service's account (a wrong password is a
401 that no log repeats); a deployment run started through the Prefect API on Postgres runs on the stack's
worker and its failure pages the webhook; with no champion served, the shipped LvmServeDown rule (on a faster
clock) pages through the stack's Prometheus and Alertmanager; `kill -9` of PostgreSQL and `up` again lose neither
Prefect's runs nor the registry's versions, tags and aliases; `kill -9` of MLflow makes a registration fail
without leaving a version, and `up` restarts only MLflow. Then the whole lifecycle: a pipeline deployment run
through the API (shards on the stack's Dask worker, training, evaluation, champion), `lvm serve` answering with it
under Prometheus, a staged-rollout deployment run under live traffic of a challenger that fails online (its 5xx
page through Alertmanager, the automatic rollback and its page), the drift-monitor deployment run; `kill -9` of
PostgreSQL while a run is Running (it ends, the registry keeps its state); and load on PostgreSQL (concurrent
pipeline runs, the UI's requests, alias reads). `down` stops what `up` started and nothing else.

Cost: one stack for the module; alone on 2 cores the file takes about 6 minutes, 4 of them the lifecycle (its
pipeline run, a cold encode of 10 articles unless the session's embedding cache holds them, about 2.5).

Outside CI a machine without PostgreSQL or the Prometheus packages skips; in CI (`CI=true`) it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import yaml

from tests.fixtures.builds import session_embedding_cache
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
                   PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   LVM_STACK_DEPLOYMENTS="watch-snapshots lvm-pipeline staged-rollout drift-monitor",
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
    _kill_postgres(stack)
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


# --- the whole lifecycle -------------------------------------------------------------------------------

# 10 articles: the smallest slice well clear of the data gates (tests/system/test_worker_crash.py); parity on its one
# or two held-out articles is noise, and a model trained one epoch on it is not meant to beat a baseline: the gates
# that judge quality are relaxed so that it may become champion, the ones that judge the data are not.
LIFECYCLE_BUILD = {"thresholds": {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}}
LIFECYCLE_GATES = {"min_test_cosine": 0.0, "min_ood_cosine": 0.0, "max_ood_test_gap": 1.0,
                   "must_beat_best_baseline": False}
# Every request of the traffic below is its own client; a step lasts seconds: low minimums (tests/unit/rollout:
# the statistics at the shipped ones).
LIFECYCLE_ROLLOUT = {"min_requests": 15, "min_feedback": 10, "min_clients": 10, "error_rate_margin": 0.05,
                     "cosine_margin": 0.2, "max_p99_ratio": 20.0, "p99_slack_s": 2.0}


def _deployment_run(stack: Stack, deployment: str, parameters: dict[str, Any]) -> str:
    found = _prefect(stack, "POST", "/deployments/filter", json={"deployments": {"name": {"any_": [deployment]}}})
    assert len(found) == 1, f"deployment {deployment!r} not on the stack"
    return str(_prefect(stack, "POST", f"/deployments/{found[0]['id']}/create_flow_run",
                        json={"parameters": parameters})["id"])


def _completed(stack: Stack, run_id: str, timeout: float) -> dict[str, Any]:
    run = _final(stack, run_id, timeout)
    if run["state"]["type"] != "COMPLETED":
        logs = _prefect(stack, "POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        text = "\n".join(entry["message"] for entry in logs)
        raise AssertionError(f"{run['name']}: {run['state']['name']}: {run['state'].get('message')}\n{text[-6000:]}")
    return run


class LiveTraffic:
    """Readers of the dataset's held-out articles (one client key per article) asking `lvm serve` for the next
    chunk and sending the true one back as feedback, until stopped; what each version answered is counted."""

    def __init__(self, stack: Stack, dataset: Path) -> None:
        from lvm_core.train.data import from_dataset

        data = from_dataset(dataset)
        self.vectors = np.asarray(data.vectors, dtype=np.float32)
        self.windows = [w for s in ("val", "test", "ood") if (w := data.sequences.get(s)) is not None and len(w)]
        self.url, self.token = stack.url("SERVE_PORT"), stack.secret("LVM_SERVE_TOKEN")
        self.stop = threading.Event()
        self.answers: dict[tuple[int, int], int] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        i = 0
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                w = self.windows[i % len(self.windows)]
                j = (i // len(self.windows)) % len(w)
                i += 1
                ctx = self.vectors[w.context_rows[j]]
                key = f"reader-{i}-article-{w.article_ids[j]}"
                try:
                    r = client.post("/v1/predict", json={"contexts": [ctx.tolist()]}, headers={"X-Client-Key": key})
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                version = r.json().get("version", -1) if r.headers.get("content-type", "").startswith("application/json") else -1
                self.answers[(r.status_code, version)] = self.answers.get((r.status_code, version), 0) + 1
                if r.status_code == 200:
                    target = self.vectors[w.target_rows[j]]
                    client.post("/v1/feedback", json={"prediction_id": r.json()["prediction_ids"][0],
                                                      "target": target.tolist()})
                time.sleep(0.05)  # ~15 readers' requests a second: enough for the canary, little CPU beside the suite

    def __enter__(self) -> LiveTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


CHALLENGER_SCRIPT = """
import sys

import torch

from lvm_core.tracking.model_logging import log_and_register_model
from lvm_core.tracking.references import load_registered_model
from lvm_core.tracking.setup import mlflow_client
from tests.fixtures.serving import mark_gates

model = load_registered_model(f"models:/lvm-amn/{sys.argv[1]}")
with torch.no_grad():
    for param in model.module.parameters():
        param.fill_(float("nan"))
client = mlflow_client()
experiment = client.get_experiment_by_name("stack-lifecycle") or client.get_experiment(
    client.create_experiment("stack-lifecycle"))
run = client.create_run(experiment.experiment_id, run_name="diverged")
info = log_and_register_model(model.module, model.config, model.fingerprint, "lvm-amn", run_id=run.info.run_id)
client.set_terminated(run.info.run_id)
mark_gates("lvm-amn", info.version, passed=True)
print(info.version)
"""


def _challenger_that_fails_online(stack: Stack, champion: int) -> int:
    """The champion's model with NaN weights (a diverged training), registered by the pipeline's account with its
    gates recorded as passed: the offline gates did not see it, the live canary must. In a process of its own, so
    this test process's MLflow settings (other tests' registries) stay as they are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "LVM_"))}
    env.update(MLFLOW_TRACKING_URI=stack.url("MLFLOW_PORT"), MLFLOW_TRACKING_USERNAME="lvm-pipeline",
               MLFLOW_TRACKING_PASSWORD=stack.secret("LVM_REGISTRY_PIPELINE_PASSWORD"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", CHALLENGER_SCRIPT, str(champion)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.strip().splitlines()[-1])


def _page(stack: Stack, text: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in list(stack.receiver.requests):
            if text in request.body.decode(errors="replace"):
                return dict(request.json())
        time.sleep(1)
    raise AssertionError(f"no page about {text!r}: {[r.body[:200] for r in stack.receiver.requests]}")


def _prometheus(stack: Stack, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{stack.url('PROMETHEUS_PORT')}/api/v1/query", params={"query": query}, timeout=10)
    return list(resp.json()["data"]["result"])


def test_the_whole_lifecycle_runs_on_the_stack(stack: Stack) -> None:
    """Pipeline deployment run through the API (build on the stack's Dask worker, training, evaluation, champion)
    -> `lvm serve` answers with it, scraped by Prometheus -> a staged rollout under live traffic of a challenger that
    fails online -> its 5xx page through Alertmanager and the canary rolls it back (and pages) -> the drift monitor
    runs on what the service received."""
    if (cache := session_embedding_cache()) is not None and not (stack.state / "cache" / "embeddings").exists():
        # The session's vectors of these articles (same encoder): the build's shards skip a cold encode.
        shutil.copytree(cache / "embeddings", stack.state / "cache" / "embeddings")
    started = time.monotonic()
    run_id = _deployment_run(stack, "lvm-pipeline", {
        "source": "sample", "limit_articles": 10, "epochs": 1, "build_options": LIFECYCLE_BUILD,
        "model_thresholds": LIFECYCLE_GATES})
    run = _completed(stack, run_id, timeout=600)
    print(f"pipeline run: {time.monotonic() - started:.0f} s")
    assert run["state"]["type"] == "COMPLETED"
    # The shards went to the stack's Dask cluster: its scheduler computed the build's tasks.
    dask_metrics = httpx.get(f"{stack.url('DASK_DASHBOARD_PORT')}/metrics", timeout=10).text
    computed = [line for line in dask_metrics.splitlines()
                if line.startswith("dask_scheduler_tasks_compute_seconds_total") and float(line.split()[-1]) > 0]
    assert computed, dask_metrics[-2000:]
    [dataset] = [p.parent for p in (stack.state / "data" / "datasets").glob("*/READY")]
    service = ("lvm-service", stack.secret("LVM_REGISTRY_SERVICE_PASSWORD"))
    model = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-amn"}).json()["registered_model"]
    champion = int({a["alias"]: a["version"] for a in model["aliases"]}["champion"])

    # `lvm serve` (retrying every 10 s until a champion exists) answers with it; Prometheus sees it up.
    headers = {"Authorization": f"Bearer {stack.secret('LVM_SERVE_TOKEN')}"}
    deadline = time.monotonic() + 120
    while True:
        try:
            models = httpx.get(f"{stack.url('SERVE_PORT')}/v1/models", headers=headers, timeout=5)
            if models.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (stack.state / "log" / "serve.log").read_text(errors="replace")[-3000:]
        time.sleep(1)
    assert models.json()["serving"][0]["version"] == champion

    challenger = _challenger_that_fails_online(stack, champion)
    with LiveTraffic(stack, dataset) as traffic:
        deadline = time.monotonic() + 60
        while not _prometheus(stack, 'up{job="lvm-serve"} == 1'):
            assert time.monotonic() < deadline, "Prometheus never scraped lvm serve"
            time.sleep(1)
        rollout_id = _deployment_run(stack, "staged-rollout", {
            "name": "lvm-amn", "challenger": challenger, "step_seconds": 60, "check_seconds": 1, "plan": [0.5, 1.0],
            "thresholds": LIFECYCLE_ROLLOUT})
        rollout = _completed(stack, rollout_id, timeout=300)
        # The challenger's 5xx: the shipped error-rate rule (faster clock) pages through Alertmanager.
        error_page = _page(stack, "LvmServeErrorRate", timeout=120)
        # The service writes its context window every 30 s: the drift monitor reads it.
        window = stack.state / "data" / "served"
        deadline = time.monotonic() + 60
        while not list(window.glob("*.npy")):
            assert time.monotonic() < deadline, f"no context window in {window}"
            time.sleep(1)
    assert traffic.answers.get((200, champion)) and traffic.answers.get((500, -1)), traffic.answers
    assert error_page["routing_key"] == ROUTING_KEY and error_page["event_action"] == "trigger"
    result = httpx.get(f"{stack.url('PREFECT_PORT')}/api/flow_runs/{rollout_id}", timeout=10).json()
    assert result["state"]["type"] == "COMPLETED", rollout
    rollback_page = _page(stack, f"lvm-amn v{challenger}", timeout=30)
    assert "rolled back" in rollback_page["payload"]["summary"], rollback_page
    from lvm_core.rollout.state import state_from_tags

    model = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-amn"}).json()["registered_model"]
    state = state_from_tags("lvm-amn", {t["key"]: t["value"] for t in model.get("tags", [])})  # as the registry holds it
    assert (state.status, state.share, state.challenger) == ("rolled_back", 0.0, challenger), state
    assert state.last_decision["action"] == "rollback" and "error rate" in state.last_decision["reason"], state
    assert {a["alias"]: int(a["version"]) for a in model["aliases"]}["champion"] == champion
    deadline = time.monotonic() + 60  # the service re-reads the registry every 10 s
    while True:
        after = httpx.get(f"{stack.url('SERVE_PORT')}/v1/models", headers=headers, timeout=5).json()
        if [m["version"] for m in after["serving"]] == [champion]:
            break
        assert time.monotonic() < deadline, after
        time.sleep(1)

    drift_id = _deployment_run(stack, "drift-monitor", {"model": f"models:/lvm-amn/{champion}"})
    _completed(stack, drift_id, timeout=300)
    # Its verdict reaches Prometheus through the Pushgateway.
    deadline = time.monotonic() + 30
    while not (verdict := _prometheus(stack, "lvm_drift_drifted")):
        assert time.monotonic() < deadline, "no drift verdict scraped from the Pushgateway"
        time.sleep(1)
    print(f"lifecycle: {time.monotonic() - started:.0f} s; answers {traffic.answers}; drift {verdict}")


def _kill_postgres(stack: Stack) -> None:
    """`kill -9` of the postmaster, then of what it leaves (a lost machine, not a shutdown)."""
    postmaster = int((stack.state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    children = psutil.Process(postmaster).children(recursive=True)
    os.kill(postmaster, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(postmaster)], timeout=10)
    psutil.wait_procs(children, timeout=10)


def test_postgres_killed_mid_run_the_run_ends_and_the_registry_keeps_its_state(stack: Stack) -> None:
    """A drift-monitor run is Running when PostgreSQL dies; `up` restarts it. The run either finishes (its API calls
    retried) or ends Crashed and pages; Prefect does not lose it and the registry keeps its champion and gates."""
    service = ("lvm-service", stack.secret("LVM_REGISTRY_SERVICE_PASSWORD"))
    before = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-amn"}).json()["registered_model"]
    run_id = _deployment_run(stack, "drift-monitor", {})
    deadline = time.monotonic() + 120
    while _prefect(stack, "GET", f"/flow_runs/{run_id}")["state"]["type"] != "RUNNING":
        assert time.monotonic() < deadline, "the drift run never started"
        time.sleep(0.2)
    _kill_postgres(stack)
    out = stack.sh("up").stdout
    assert "postgres: started" in out, out
    deadline = time.monotonic() + 120
    while True:  # Prefect's API is back once it reconnects
        try:
            run = _final(stack, run_id, timeout=300)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "Prefect's API did not come back after PostgreSQL restarted"
            time.sleep(2)
    assert run["state"]["type"] in ("COMPLETED", "CRASHED"), run["state"]
    if run["state"]["type"] == "CRASHED":
        _page(stack, run_id, timeout=120)
    after = _api(stack, "GET", "/registered-models/get", service, params={"name": "lvm-amn"}).json()["registered_model"]
    assert after["aliases"] == before["aliases"]
    print(f"drift run after PostgreSQL was killed mid-run: {run['state']['type']}")


def test_concurrent_runs_ui_requests_and_alias_reads_on_postgres(stack: Stack) -> None:
    """Load on the real database: four pipeline runs created at once (each fails on a source that is not there, so
    the failure automation must page for each) while a client makes the Prefect UI's requests (its polls of runs,
    deployments and work pools, and a custom-run form submission) and `lvm serve` re-reads its aliases: no 5xx,
    every run exactly once, every failure paged, the service unharmed."""
    from concurrent.futures import ThreadPoolExecutor

    [pipeline] = _prefect(stack, "POST", "/deployments/filter", json={"deployments": {"name": {"any_": ["lvm-pipeline"]}}})
    bad = {"source": str(stack.state / "no-such" / "enwiki-20240101-pages-articles.xml.bz2"), "limit_articles": 2}
    statuses: list[int] = []
    created: list[str] = []
    stop = threading.Event()

    def request(method: str, path: str, **kwargs: Any) -> Any:
        resp = httpx.request(method, f"{stack.url('PREFECT_PORT')}/api{path}", timeout=60, **kwargs)
        statuses.append(resp.status_code)
        return resp.json() if resp.status_code < 300 and resp.content else None

    def submit(i: int) -> None:
        run = request("POST", f"/deployments/{pipeline['id']}/create_flow_run", json={"parameters": bad})
        if run:
            created.append(run["id"])

    def ui() -> None:  # what an open dashboard and a custom-run form do meanwhile
        submitted = False
        while not stop.is_set():
            request("POST", "/flow_runs/filter", json={"limit": 50, "sort": "START_TIME_DESC"})
            request("POST", "/deployments/filter", json={"limit": 50})
            request("POST", "/work_pools/filter", json={})
            request("GET", f"/deployments/{pipeline['id']}")
            if not submitted:
                submit(-1)
                submitted = True
            time.sleep(0.5)

    started = time.monotonic()
    with ThreadPoolExecutor(5) as pool:
        browsing = pool.submit(ui)
        list(pool.map(submit, range(4)))
        try:
            deadline = time.monotonic() + 60
            while len(created) < 5 and time.monotonic() < deadline:  # the form's submission too
                time.sleep(0.2)
            runs = [_final(stack, run_id, timeout=420) for run_id in list(created)]
        finally:
            stop.set()
            browsing.result()
    assert len(created) == 5 and len(set(created)) == 5, created
    assert [code for code in statuses if code >= 500] == [], sorted(set(statuses))
    assert all(code < 300 for code in statuses), sorted(set(statuses))
    assert [r["state"]["type"] for r in runs] == ["FAILED"] * 5
    listed = request("POST", "/flow_runs/filter", json={"flow_runs": {"id": {"any_": created}}, "limit": 50})
    assert sorted(r["id"] for r in listed) == sorted(created)  # none lost, none twice
    for run_id in created:
        _page(stack, run_id, timeout=120)
    headers = {"Authorization": f"Bearer {stack.secret('LVM_SERVE_TOKEN')}"}
    assert httpx.get(f"{stack.url('SERVE_PORT')}/v1/models", headers=headers, timeout=10).status_code == 200
    metrics = httpx.get(f"{stack.url('SERVE_PORT')}/metrics", headers=headers, timeout=10).text
    failures = [line for line in metrics.splitlines() if line.startswith("lvm_serve_model_load_failures_total")]
    assert failures and all(float(line.split()[-1]) == 0 for line in failures), failures
    print(f"load: {len(statuses)} API requests, 5 runs in {time.monotonic() - started:.0f} s")


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
