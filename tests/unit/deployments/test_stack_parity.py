"""docker/compose.yaml and deployments/stack.sh describe the same platform: services, ports and settings.

`stack.sh describe` prints what `up` would start (services, ports, the flows' environment, the Prefect
server's settings) without starting anything; compose is parsed as YAML. Hosts differ by design (compose's
service names are this machine's loopback), and paths (compose's volumes are folders of the stack's state);
everything else must match, so a port, a setting or a service added to one and not the other fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deployments.stack.render import render_alertmanager, render_prometheus
from tests.fixtures.paths import REPO

STACK = REPO / "deployments" / "stack.sh"
COMPOSE = REPO / "docker" / "compose.yaml"
# Compose-only: the GPU worker runs under `--profile gpu` (this machine kind has no GPU).
COMPOSE_ONLY = {"dask-gpu-worker"}
# Settings whose value is a path: compose's volumes are folders under the stack's state folder.
PATH_SETTINGS = {"LVM_DATA_DIR", "LVM_REPO_DIR", "LVM_CACHE_DIR", "LVM_LOCAL_DATA_DIR", "LVM_SERVED_CONTEXTS",
                 "PREFECT_HOME"}
# Secrets: compose passes the value, the stack a file holding it (lvm_core/tracking/auth.py reads <NAME>_FILE).
SECRET_FILES = {"LVM_SERVE_TOKEN": "LVM_SERVE_TOKEN_FILE"}


def describe(**env: str) -> dict[str, Any]:
    """`stack.sh describe` parsed: services (name -> ports), lvm / prefect-server env, bind address, args."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("LVM_", "PREFECT_", "MLFLOW_"))
               and not k.endswith("_PORT")}
    out = subprocess.run(["bash", str(STACK), "describe"], env=run_env | env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    result: dict[str, Any] = {"services": {}, "lvm.env": {}, "prefect-server.env": {}, "args": {}}
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "service":
            name, *ports = rest.split()
            result["services"][name] = ports
        elif kind.endswith(".env"):
            key, _, value = rest.partition("=")
            result[kind][key] = value
        elif kind.endswith(".args"):
            result["args"][kind.removesuffix(".args")] = rest.split()
        elif kind == "bind":
            result["bind"] = rest
    return result


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return describe()


def _default(value: str) -> str:
    """A compose value with `${VAR:-default}` / `${VAR:?message}` reduced to its default ('' for required)."""
    return re.sub(r"\$\{\w+(?::-([^}]*)|:\?[^}]*)?\}", lambda m: m[1] or "", str(value))


def _same_setting(key: str, compose_value: str, stack_value: str) -> None:
    if key in PATH_SETTINGS:
        return
    if "://" in compose_value:
        c, s = urlsplit(compose_value), urlsplit(stack_value)
        assert (c.scheme, c.port, c.path, c.username) == (s.scheme, s.port, s.path, s.username), (key, compose_value, stack_value)
        assert s.hostname in {"127.0.0.1", "localhost"}, (key, stack_value)
    else:
        assert compose_value == stack_value, (key, compose_value, stack_value)


def _published(service: dict[str, Any]) -> set[str]:
    return {str(p).split(":")[0] for p in service.get("ports", [])}


def test_same_services(compose, stack) -> None:
    assert set(compose["services"]) - COMPOSE_ONLY == set(stack["services"])


def test_same_ports(compose, stack) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name in COMPOSE_ONLY:
            continue
        assert _published(service) <= set(stack["services"][name]), name
    # Ports compose uses inside its network: Postgres (the server's URL) and the Dask scheduler (its command).
    pg = urlsplit(_default(services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]))
    assert stack["services"]["postgres"] == [str(pg.port)]
    sched = services["dask-scheduler"]["command"]
    assert sched[sched.index("--port") + 1] in stack["services"]["dask-scheduler"]
    assert stack["services"]["dask-worker"] == [f"x{services['dask-worker']['deploy']['replicas']}"]


def test_same_flow_settings(compose, stack) -> None:
    compose_env = {k: _default(v) for k, v in compose["x-lvm-env"].items()}
    stack_env = dict(stack["lvm.env"])
    for name, file_name in SECRET_FILES.items():
        assert file_name in stack_env and name not in stack_env, f"the stack passes {name} as a file"
        stack_env[name] = compose_env[name]
        del stack_env[file_name]
    assert set(compose_env) == set(stack_env)
    for key, value in compose_env.items():
        _same_setting(key, value, stack_env[key])


def test_same_prefect_server_settings(compose, stack) -> None:
    compose_env = {k: _default(v) for k, v in compose["services"]["prefect-server"]["environment"].items()}
    stack_env = stack["prefect-server.env"]
    assert set(compose_env) == set(stack_env)
    for key, value in compose_env.items():
        # The stack's database URL carries no password (the server reads PGPASSFILE); the password is not compared.
        _same_setting(key, value, stack_env[key])


def test_same_mlflow_and_dask_arguments(compose, stack) -> None:
    mlflow = compose["services"]["mlflow"]["command"]
    args = stack["args"]["mlflow"]
    for flag in ("--port", "--backend-store-uri"):
        c, s = mlflow[mlflow.index(flag) + 1], args[args.index(flag) + 1]
        if flag == "--backend-store-uri":  # same server and database; the stack names its driver, no password
            c = _default(c).replace("postgresql://", "postgresql+psycopg://")
        _same_setting(flag, c, s)
    worker = compose["services"]["dask-worker"]["command"]
    assert stack["args"]["dask-worker"] == worker


def test_binds_to_loopback_unless_told(tmp_path) -> None:
    assert describe()["bind"] == "127.0.0.1"
    told = describe(LVM_STACK_HOST="0.0.0.0", LVM_STACK_DIR=str(tmp_path))
    assert told["bind"] == "0.0.0.0"
    # Clients still reach the services through loopback.
    assert urlsplit(told["lvm.env"]["PREFECT_API_URL"]).hostname == "127.0.0.1"


def test_prometheus_targets_map_to_stack_services() -> None:
    config = yaml.safe_load((REPO / "docker" / "prometheus" / "prometheus.yml").read_text())
    targets = {"serve:8000": "h:1", "pushgateway:9091": "h:2", "dask-scheduler:8787": "h:3",
               "alertmanager:9093": "h:4", "localhost:9090": "h:5"}
    rendered = render_prometheus(config, targets, REPO / "alerts.yml")
    scraped = {t for job in rendered["scrape_configs"] for s in job["static_configs"] for t in s["targets"]}
    assert scraped == {"h:1", "h:2", "h:3", "h:5"}
    # A target compose gains that the stack cannot map is an error, not a silently missing scrape.
    with pytest.raises(SystemExit, match="no service in the stack"):
        render_prometheus(config, {k: v for k, v in targets.items() if k != "serve:8000"}, REPO / "alerts.yml")


def test_alertmanager_rendered_with_compose_defaults() -> None:
    template = (REPO / "docker" / "prometheus" / "alertmanager.yml").read_text()
    text = render_alertmanager(template, {"LVM_ALERT_ROUTING_KEY": "key-1"})
    assert "@LVM_" not in text
    assert "key-1" in text and "https://events.pagerduty.com/v2/enqueue" in text
