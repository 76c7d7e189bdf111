"""Test helpers: a real `prefect server start` on loopback, a process worker, and a webhook receiver.

Server and worker are process-wide singletons (started on first use, stopped when the session's fixtures
are torn down, before the conftest's check that no process outlives the tests), so the server tests and
the browser test share one server even though each test module imports the fixtures below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # `deployments` is run from the repository root (python -m deployments.setup), not installed.
    sys.path.insert(0, str(REPO))

PREFECT = str(Path(sys.executable).with_name("prefect"))
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- webhook receiver ----------------------------------------------------------------------------------


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers like PagerDuty (202)."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.requests.append(ReceivedRequest(self.path, dict(self.headers), body))
                    receiver._cond.notify_all()
                payload = b'{"status": "success", "message": "Event processed"}'
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2/enqueue"

    def wait_for(self, count: int, timeout: float) -> list[ReceivedRequest]:
        """Block until `count` requests arrived (or `timeout` passed); returns what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.requests)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


# --- Prefect server ------------------------------------------------------------------------------------


@dataclass
class PrefectServer:
    """A running server and the environment subprocesses need to talk to it."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    alert_receiver: WebhookReceiver | None = None
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None
    setup_output: str = ""
    deploy_output: str = ""

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def log_tail(self, path: Path | None = None, chars: int = 4000) -> str:
        path = path or self.log_path
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def run(self, args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command from the repo root with the server's environment."""
        proc = subprocess.run(args, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc


_TEMPLATE_LOCK = threading.Lock()


def seed_prefect_db(dest: Path) -> None:
    """Put an empty Prefect database, already at the latest migration, at `dest` (unless one is there).

    Migrating a new database costs each server start about 8 s on this machine; the session migrates one
    once and copies it. The server still checks the migrations on start, so a stale copy cannot pass.
    """
    if dest.exists():
        return
    with _TEMPLATE_LOCK:
        template = Path(os.environ["LVM_TEST_SESSION"]) / "prefect-migrated.db"  # conftest.SESSION_ENV, set first
        if not template.exists():
            work = template.with_suffix(".tmp")
            work.unlink(missing_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(PREFECT_HOME=str(template.parent / "prefect-template-home"),
                       PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{work}")
            subprocess.run([PREFECT, "server", "database", "upgrade", "-y"], env=env, check=True,
                           capture_output=True, timeout=300)
            work.rename(template)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)


def server_env(root: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
            # SQLite under a busy 2-core machine: wait for the write lock instead of answering 503.
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
            "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            # A run that finds its deployment's slot taken is scheduled again this much later (default 30 s).
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "3",
            # As deployments/start_local.sh and docker/compose.yaml: leases in files under PREFECT_HOME, so
            # they survive a server restart (the repossessor, on by default, frees expired ones) ...
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED": "true",
            # ... and flow runs beat every 30 s, so setup's zombie automation (default window 90 s) can
            # tell a dead run from a slow one.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LVM_REPO_DIR": str(REPO),
            "LVM_DATA_DIR": str(root / "lvm-data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'lvm-data' / 'mlflow.db'}",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def start_server(root: Path, timeout: float = 240.0, server_settings: dict[str, str] | None = None) -> PrefectServer:
    """`prefect server start` on a free loopback port; `server_settings` are extra PREFECT_* settings for it."""
    port = free_port()
    env = server_env(root, port)
    (root / "lvm-data").mkdir(parents=True, exist_ok=True)
    seed_prefect_db(root / "prefect.db")
    log_path = root / "server.log"
    server_only_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    # The UI is served by the same process; tell it where its API is (it defaults to port 4200).
    server_only_env.update(
        {
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            **(server_settings or {}),
        }
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,
            env=server_only_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = PrefectServer(root=root, port=port, process=process, log_path=log_path, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_process(process)
    raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s:\n{server.log_tail()}")


# --- processes ------------------------------------------------------------------------------------------
#
# A process worker starts each flow run in a session of its own (Prefect's isolated process group), so a
# signal to the worker's process group misses its flow runs: the helpers below walk /proc for descendants.


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"; comm may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), whatever session they run in."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass(frozen=True)
class ProcessRef:
    """A pid plus its start time, so a recycled pid is never mistaken for the process."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        stat = _proc_stat(pid)
        return None if stat is None else cls(pid, stat[2])

    def alive(self) -> bool:
        stat = _proc_stat(self.pid)
        return stat is not None and stat[2] == self.start and stat[1] not in {"Z", "X"}

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def process_tree(pid: int) -> list[ProcessRef]:
    return [ref for p in [pid, *descendants(pid)] if (ref := ProcessRef.of(p)) is not None]


def kill_tree(process: subprocess.Popen[bytes]) -> list[ProcessRef]:
    """SIGKILL a process and all its descendants at once, like a machine that lost power.

    The tree is frozen (SIGSTOP) before it is read again and killed, so no process forks or reparents
    in between. Returns what was killed; the caller's `process` is reaped.
    """
    tree = process_tree(process.pid)
    for ref in tree:
        ref.signal(signal.SIGSTOP)
    tree = process_tree(process.pid) + [ref for ref in tree if ref.pid != process.pid]
    tree = list(dict.fromkeys(tree))
    for ref in tree:
        ref.signal(signal.SIGKILL)
    process.wait(10)
    deadline = time.monotonic() + 10
    while any(ref.alive() for ref in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    return tree


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 20.0) -> None:
    """Stop a process started in its own session, its children and any flow-run subprocesses below it."""
    if process is None or process.poll() is not None:
        return
    below = process_tree(process.pid)[1:]  # flow runs live in sessions of their own: note them now
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    # What outlived its parent (flow runs in sessions of their own): asked once more, then killed.
    for ref in below:
        ref.signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(ref.alive() for ref in below) and time.monotonic() < deadline:
        time.sleep(0.1)
    for ref in below:
        ref.signal(signal.SIGKILL)


_SERVER: PrefectServer | None = None


def _shutdown() -> None:
    global _SERVER
    if _SERVER is None:
        return
    stop_process(_SERVER.worker)
    stop_process(_SERVER.process)
    if _SERVER.alert_receiver is not None:
        _SERVER.alert_receiver.__exit__(None, None, None)
    if os.environ.get("LVM_KEEP_TEST_SERVER_DIR") is None:
        shutil.rmtree(_SERVER.root, ignore_errors=True)
    _SERVER = None


def _get_server(config: pytest.Config) -> PrefectServer:
    global _SERVER
    if _SERVER is None:
        root = Path(tempfile.mkdtemp(prefix="lvm-prefect-server-"))
        _SERVER = start_server(root)
        config.add_cleanup(_shutdown)
    return _SERVER


def _deploy(server: PrefectServer) -> None:
    """Work pool, alert block, limits, automations, then every deployment of prefect.yaml."""
    if server.setup_output:
        return
    receiver = WebhookReceiver().__enter__()
    server.alert_receiver = receiver
    server.env["LVM_ALERT_WEBHOOK_URL"] = receiver.url
    server.env["LVM_ALERT_ROUTING_KEY"] = "test-routing-key"
    setup = server.run([sys.executable, "-m", "deployments.setup"], timeout=300)
    # Automations (not the in-flow hook) must deliver the alert in these tests.
    del server.env["LVM_ALERT_WEBHOOK_URL"]
    deploy = server.run([PREFECT, "--no-prompt", "deploy", "--all"], timeout=600)
    server.setup_output, server.deploy_output = setup.stdout, deploy.stdout + deploy.stderr


WORKER_NAME = "lvm-test-worker"


def _start_worker(server: PrefectServer, timeout: float = 180.0) -> None:
    """Start the pool's process worker unless it runs; return once it has checked in with the server.

    A replacement for a killed worker reuses its name, whose record still says ONLINE: ready therefore
    means a worker heartbeat newer than this start.
    """
    if server.worker is not None and server.worker.poll() is None:
        return
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    n = len(list(server.root.glob("worker*.log")))
    server.worker_log = server.root / ("worker.log" if n == 0 else f"worker-{n + 1}.log")
    with open(server.worker_log, "wb") as log:
        server.worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "lvm-process", "--type", "process", "--name", WORKER_NAME],
            cwd=REPO,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Ready once the server lists the worker as online in the pool.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.worker.poll() is not None:
            raise RuntimeError(f"worker exited with {server.worker.returncode}:\n{server.log_tail(server.worker_log)}")
        resp = httpx.post(f"{server.api_url}/work_pools/lvm-process/workers/filter", json={}, timeout=5)
        if resp.status_code == 200 and any(
            w.get("name") == WORKER_NAME
            and w.get("status") == "ONLINE"
            and w.get("last_heartbeat_time")
            and dt.datetime.fromisoformat(w["last_heartbeat_time"]) >= started
            for w in resp.json()
        ):
            return
        time.sleep(2)
    raise RuntimeError(f"worker not online after {timeout:.0f} s:\n{server.log_tail(server.worker_log)}")


@pytest.fixture(scope="session")
def prefect_server(request: pytest.FixtureRequest) -> Iterator[PrefectServer]:
    """A real Prefect server (SQLite in a temp dir) on a free loopback port."""
    yield _get_server(request.config)
    _shutdown()  # every module's copy of this fixture ends the one server; the first one does it


@pytest.fixture(scope="session")
def deployed_server(prefect_server: PrefectServer) -> PrefectServer:
    """The server after `python -m deployments.setup` and `prefect deploy --all`, with a worker running.

    A test that kills the worker starts another with `restart_worker` before it ends.
    """
    _deploy(prefect_server)
    _start_worker(prefect_server)
    return prefect_server


def restart_worker(server: PrefectServer, timeout: float = 180.0) -> None:
    """Start a new worker in place of a dead one (nothing happens while the current one runs)."""
    _start_worker(server, timeout)


# --- API helpers ---------------------------------------------------------------------------------------


def api(server: PrefectServer, method: str, path: str, **kwargs: Any) -> Any:
    """One API call; like Prefect's own client, retry when the server says it is busy (429/502/503)."""
    for attempt in range(6):
        resp = httpx.request(method, f"{server.api_url}{path}", timeout=30, **kwargs)
        if resp.status_code not in (429, 502, 503) or attempt == 5:
            break
        time.sleep(0.5 * 2**attempt)
    resp.raise_for_status()
    return resp.json() if resp.content else None


def deployment_named(server: PrefectServer, deployment_name: str) -> dict[str, Any]:
    """The one deployment with this name (whatever its flow is called)."""
    found = api(server, "POST", "/deployments/filter", json={"deployments": {"name": {"any_": [deployment_name]}}, "limit": 5, "offset": 0})
    assert len(found) == 1, f"expected one deployment named {deployment_name!r}, found {len(found)}"
    return found[0]


def create_run(server: PrefectServer, deployment_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return api(server, "POST", f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})


def wait_for_final_state(server: PrefectServer, flow_run_id: str, timeout: float) -> dict[str, Any]:
    """Poll a flow run until it reaches a final state; its JSON (with `state`) is returned."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = api(server, "GET", f"/flow_runs/{flow_run_id}")
        state_type = (run.get("state") or {}).get("type")
        if state_type in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    raise AssertionError(
        f"flow run {flow_run_id} still {run.get('state_name')} after {timeout:.0f} s\n"
        f"worker log:\n{server.log_tail(server.worker_log) if server.worker_log else ''}"
    )


def flow_run_logs(server: PrefectServer, flow_run_id: str, limit: int = 200) -> str:
    logs = api(server, "POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": limit, "sort": "TIMESTAMP_ASC"})
    return "\n".join(f"{entry['level']} {entry['message']}" for entry in logs)
