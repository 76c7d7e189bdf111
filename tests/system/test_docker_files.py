"""Static checks of docker/: the compose file's wiring, the Dockerfiles' syntax and inputs, and the
monitoring configuration (Prometheus scrape config and alert rules, Alertmanager to PagerDuty).

No Docker engine is needed; `docker compose config` runs too when the compose client is installed.
`promtool` / `amtool` (Debian: `apt-get install prometheus prometheus-alertmanager`) check the monitoring
files, run the alert rules' unit tests (docker/prometheus/alerts_test.yml) and test the Alertmanager routes;
without them those tests skip, except in CI (`CI=true`, .ci/run installs them), where they fail.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lvm_core.runtime.environment import FLOW_RUN_HEARTBEAT_S
from tests.fixtures.monitoring import in_ci, render_alertmanager, tool
from tests.fixtures.paths import REPO

dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="pip install dockerfile-parse")

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}
PROMETHEUS = DOCKER / "prometheus"
EXPECTED_SERVICES = {
    "postgres", "prefect-server", "mlflow", "setup", "worker", "dask-scheduler", "dask-worker", "dask-gpu-worker",
    "serve", "pushgateway", "prometheus", "alertmanager",
}
EXPECTED_ALERTS = {
    "LvmServeDown", "LvmServeHighP99Latency", "LvmServeErrorRate", "LvmServeModelLoadFailures",
    "LvmOnlineCosineDrop", "LvmServeMemoryHigh", "LvmDriftDetected", "LvmDriftMonitorStale", "LvmDaskWorkersMissing",
}
# `critical` pages at any hour, `warning` in business hours, `info` never (Alertmanager's null receiver).
SEVERITIES = {"critical", "warning", "info"}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
REQUIRED = "<required>"


def interpolate(value: str) -> str:
    """Compose-style `${VAR:-default}` with every variable unset (the file's own defaults); a required
    `${VAR:?message}` reads as REQUIRED."""
    def sub(m: re.Match[str]) -> str:
        if m["op"] and m["op"].endswith("?"):
            return REQUIRED
        return (m["arg"] or "") if m["op"] else ""

    return _INTERPOLATION.sub(sub, value)


def pyproject_pin(name: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", dep.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"pyproject.toml does not pin {name}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port"""
    out = {}
    for spec in service.get("ports") or []:
        host, _, container = str(spec).rpartition(":")
        out[int(container)] = int(host)
    return out


def test_services_and_images(compose) -> None:
    services = compose["services"]
    assert set(services) == EXPECTED_SERVICES
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: neither image nor build"
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: dockerfile missing"
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{pyproject_pin('prefect')}-python3.11"
    assert services["worker"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["mlflow"]["build"]["dockerfile"] == "mlflow.Dockerfile"
    assert services["postgres"]["image"].startswith("postgres:")


def test_environment_points_at_services(compose) -> None:
    services = compose["services"]
    prefect_env = env_of(services["prefect-server"])
    db = urlsplit(prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert db.scheme == "postgresql+asyncpg" and db.hostname == "postgres" and db.port == 5432
    pg_env = env_of(services["postgres"])
    assert db.username == pg_env["POSTGRES_USER"] and db.password == pg_env["POSTGRES_PASSWORD"]
    assert db.path == f"/{pg_env['POSTGRES_DB']}"
    assert prefect_env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert published_ports(services["prefect-server"]) == {4200: 4200}
    assert "4200" in services["prefect-server"]["command"]

    mlflow_cmd = [str(a) for a in services["mlflow"]["command"]]
    backend = urlsplit(interpolate(mlflow_cmd[mlflow_cmd.index("--backend-store-uri") + 1]))
    assert backend.scheme == "postgresql" and backend.hostname == "postgres" and backend.path == "/mlflow"
    # The init script creates the second database the MLflow URI names.
    init_sql = (DOCKER / "postgres-init" / "01-databases.sql").read_text()
    assert re.search(r"CREATE DATABASE mlflow\b", init_sql)
    assert mlflow_cmd[mlflow_cmd.index("--artifacts-destination") + 1] == "/mlartifacts"
    mlflow_port = int(mlflow_cmd[mlflow_cmd.index("--port") + 1])
    allowed = mlflow_cmd[mlflow_cmd.index("--allowed-hosts") + 1].split(",")

    for name in ("worker", "setup"):
        env = env_of(services[name])
        api = urlsplit(env["PREFECT_API_URL"])
        assert api.hostname == "prefect-server" and api.port == 4200 and api.path == "/api", name
        tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
        assert tracking.hostname == "mlflow" and tracking.port == mlflow_port, name
        assert any(fnmatch.fnmatch(tracking.netloc, pattern) for pattern in allowed), "MLflow would refuse the Host header"
        assert env["LVM_DATA_DIR"] == "/data" and env["HF_HUB_OFFLINE"] == "1"
        assert env["LVM_REPO_DIR"] == "/opt/lvm"
        assert {"LVM_SNAPSHOT_SOURCE", "LVM_ALERT_WEBHOOK_URL", "LVM_ALERT_ROUTING_KEY"} <= set(env)
        # Flow runs beat as often as setup's zombie window assumes; the window itself is a setting.
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(FLOW_RUN_HEARTBEAT_S) and "LVM_ZOMBIE_WINDOW_SECONDS" in env, name


def test_prefect_server_keeps_concurrency_leases_on_a_volume(compose) -> None:
    """Leases in files under PREFECT_HOME, on a named volume: a restarted server still knows every held
    slot, and its repossessor (left on) frees those whose holder died."""
    server = compose["services"]["prefect-server"]
    env = env_of(server)
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect.server.concurrency.lease_storage.filesystem"
    assert env.get("PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED", "true").lower() in {"true", "1"}
    home = env["PREFECT_HOME"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in server.get("volumes") or []}
    assert home in mounts and not mounts[home].startswith((".", "/")), "PREFECT_HOME must be a named volume"
    assert "--no-services" not in server["command"]


def test_volumes_healthchecks_and_dependencies(compose) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        for spec in svc.get("volumes") or []:
            source = str(spec).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount source {source} missing"
            else:
                used.add(source)
                assert source in declared, f"{name}: volume {source} not declared"
    assert used == declared, f"declared but unused volumes: {declared - used}"
    assert any(str(v).endswith(":/data") for v in services["worker"]["volumes"])
    assert any(str(v).startswith("postgres-data:") for v in services["postgres"]["volumes"])

    for name, svc in services.items():
        check = svc.get("healthcheck")
        if check:
            assert isinstance(check["test"], list) and check["test"][0] in {"CMD", "CMD-SHELL"}, name
    for name in ("postgres", "prefect-server", "mlflow"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck"

    for name, svc in services.items():
        for target, cond in (svc.get("depends_on") or {}).items():
            assert target in services and target != name, f"{name} depends on unknown {target}"
            condition = cond["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, which has no check"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is a one-shot job"
    assert set(services["worker"]["depends_on"]) == {"prefect-server", "mlflow", "setup", "dask-scheduler"}
    assert _no_dependency_cycle(services)


def _no_dependency_cycle(services: dict[str, Any]) -> bool:
    state: dict[str, int] = {}

    def visit(node: str) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"depends_on cycle through {node}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in services[node].get("depends_on") or {}:
            visit(dep)
        state[node] = 2

    for name in services:
        visit(name)
    return True


# --- Dockerfiles -------------------------------------------------------------------------------------


def parse(path: Path) -> list[dict[str, Any]]:
    parser = dockerfile_parse.DockerfileParser(path=str(path))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.exists():
        return []
    lines = [line.strip() for line in ignore.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize(("dockerfile", "context"), [("Dockerfile", REPO), ("mlflow.Dockerfile", DOCKER)])
def test_dockerfile_syntax(dockerfile: str, context: Path) -> None:
    path = DOCKER / dockerfile
    instructions = parse(path)
    leading = [i["instruction"] for i in instructions]
    first_non_arg = next(i for i in leading if i != "ARG")
    assert first_non_arg == "FROM", f"{dockerfile}: first instruction is {first_non_arg}"
    assert set(leading) <= KNOWN_INSTRUCTIONS, f"{dockerfile}: unknown {set(leading) - KNOWN_INSTRUCTIONS}"
    assert instructions[0]["value"] == "python:3.11-slim"
    ignored = dockerignore_patterns(path)
    for ins in instructions:
        if ins["instruction"] in {"COPY", "ADD"}:
            parts = [p for p in ins["value"].split() if not p.startswith("--")]
            assert len(parts) >= 2, f"{dockerfile}:{ins['startline'] + 1}: COPY needs source and destination"
            for src in parts[:-1]:
                assert (context / src).exists(), f"{dockerfile}: COPY source {src} missing from {context}"
                assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), f"{src} is excluded by .dockerignore"
        if ins["instruction"] in {"CMD", "ENTRYPOINT"}:
            value = json.loads(ins["value"])  # exec (JSON) form: signals reach the process
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1] not in {"root", "0"}, f"{dockerfile}: must end as a non-root user"


def test_worker_image_contents() -> None:
    instructions = parse(DOCKER / "Dockerfile")
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    torch_pin = pyproject_pin("torch")
    torch_runs = [r for r in runs if "torch==" in r]
    assert torch_runs and f"torch=={torch_pin}" in torch_runs[0]
    assert "download.pytorch.org/whl/cpu" in torch_runs[0]
    assert runs.index(torch_runs[0]) < runs.index(next(r for r in runs if r.startswith("pip install .")))
    env = " ".join(i["value"] for i in instructions if i["instruction"] == "ENV")
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env) and re.search(r"\bLVM_REPO_DIR=/opt/lvm\b", env)
    assert re.search(rf"\bPREFECT_FLOWS_HEARTBEAT_FREQUENCY={FLOW_RUN_HEARTBEAT_S}\b", env)  # ad-hoc runs in the image beat too
    entry = json.loads(next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT"))
    assert entry[:3] == ["prefect", "worker", "start"]
    pool = entry[entry.index("--pool") + 1]
    prefect_yaml = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["work_pool"]["name"] for d in prefect_yaml["deployments"]} == {pool}
    # The packages the image installs are the ones the project declares.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {i["value"].split()[0] for i in instructions if i["instruction"] == "COPY"}
    assert {p.rstrip("*") for p in packages} <= copied


def test_mlflow_image_pins_match_project() -> None:
    runs = " ".join(i["value"] for i in parse(DOCKER / "mlflow.Dockerfile") if i["instruction"] == "RUN")
    assert f"mlflow=={pyproject_pin('mlflow')}" in runs
    assert "psycopg2" in runs


def test_docker_compose_config_when_client_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker client not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    env = {**os.environ, "LVM_SERVE_TOKEN": "compose-config-check"}
    proc = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr


# --- serving, Dask and monitoring services -----------------------------------------------------------


def _command(service: dict[str, Any]) -> list[str]:
    return [str(a) for a in (service.get("entrypoint") or []) + (service.get("command") or [])]


def test_serve_listens_on_all_interfaces_only_with_a_required_token(compose) -> None:
    services = compose["services"]
    serve = services["serve"]
    cmd = _command(serve)
    assert cmd[:2] == ["lvm", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = int(cmd[cmd.index("--port") + 1])
    assert published_ports(serve) == {port: port}
    # ${LVM_SERVE_TOKEN:?...}: compose refuses to start anything without a token.
    assert env_of(serve)["LVM_SERVE_TOKEN"] == REQUIRED
    assert serve["build"]["dockerfile"] == "docker/Dockerfile"
    assert "readyz" in " ".join(serve["healthcheck"]["test"])
    # The drift monitor on the worker asks this service which model it serves, with the same token.
    worker_env = env_of(services["worker"])
    assert urlsplit(worker_env["LVM_SERVE_URL"]).netloc == f"serve:{port}"
    assert worker_env["LVM_SERVE_TOKEN"] == REQUIRED


def test_dask_cluster_and_builds_pointed_at_it(compose) -> None:
    services = compose["services"]
    scheduler, workers = services["dask-scheduler"], services["dask-worker"]
    sched_cmd = _command(scheduler)
    assert sched_cmd[:2] == ["dask", "scheduler"]
    address = f"tcp://dask-scheduler:{sched_cmd[sched_cmd.index('--port') + 1]}"
    worker_cmd = _command(workers)
    assert worker_cmd[:3] == ["dask", "worker", address]
    assert workers["deploy"]["replicas"] == 2
    for svc in (scheduler, workers):  # the project's code where tasks run
        assert svc["build"]["dockerfile"] == "docker/Dockerfile" and svc["image"] == services["worker"]["image"]
    assert any(str(v) == "lvm-data:/data" for v in workers["volumes"]), "tasks pass paths under /data"
    # The Prefect worker's flow runs (builds) reach the scheduler through LVM_DASK_ADDRESS.
    assert env_of(services["worker"])["LVM_DASK_ADDRESS"] == address
    assert workers["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    # Each host's caches on its own disk, never on the shared data folder; GPU workers declare their resource.
    gpu = services["dask-gpu-worker"]
    for svc in (services["worker"], workers, gpu):
        assert env_of(svc)["LVM_CACHE_DIR"] == "/cache" and "lvm-cache:/cache" in svc["volumes"]
    assert _command(gpu)[:3] == ["dask", "worker", address] and gpu["profiles"] == ["gpu"]
    assert _command(gpu)[_command(gpu).index("--resources") + 1] == "GPU=1"
    assert "LVM_EMBED_RESOURCES" in env_of(services["worker"])


def test_prometheus_scrapes_compose_services(compose) -> None:
    services = compose["services"]
    prom = services["prometheus"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prom["volumes"]}
    assert (DOCKER / mounts["/etc/prometheus"]).resolve() == PROMETHEUS
    config_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    assert config_path == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), rule_file
    jobs = {}
    for job in config["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host, port = target.rsplit(":", 1)
            jobs[job["job_name"]] = (host, int(port))
            assert host == "localhost" or host in services, f"{job['job_name']}: {host} is not a compose service"
    assert jobs["lvm-serve"] == ("serve", int(_command(services["serve"])[_command(services["serve"]).index("--port") + 1]))
    assert jobs["pushgateway"][0] == "pushgateway" and jobs["dask-scheduler"][0] == "dask-scheduler"
    # The drift flow pushes where Prometheus scrapes.
    push = urlsplit(env_of(services["worker"])["LVM_PUSHGATEWAY_URL"])
    assert (push.hostname, push.port) == jobs["pushgateway"]
    assert next(j for j in config["scrape_configs"] if j["job_name"] == "pushgateway")["honor_labels"] is True


def rule_problems(path: Path) -> list[str]:
    """What is wrong with an alert rule file, without promtool: structure, labels, and PromQL brackets."""
    problems = []
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list) or not groups:
        return ["no rule groups"]
    for group in groups:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record") or "?"
            expr = str(rule.get("expr", "")).strip()
            if not expr:
                problems.append(f"{name}: no expr")
            depth = 0
            for ch in re.sub(r'"[^"]*"', "", expr):
                depth += {"(": 1, "{": 1, "[": 1, ")": -1, "}": -1, "]": -1}.get(ch, 0)
                if depth < 0:
                    break
            if depth != 0:
                problems.append(f"{name}: unbalanced brackets in expr")
            if "record" in rule:
                continue
            if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
                problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
            if not (rule.get("annotations") or {}).get("summary"):
                problems.append(f"{name}: no summary annotation")
            if "for" in rule and not re.fullmatch(r"\d+[smhd]", str(rule["for"])):
                problems.append(f"{name}: bad 'for' duration {rule['for']!r}")
    return problems


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    """promtool's answer; skips without promtool (fails in CI)."""
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_monitoring_tools_skip_only_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where CI=true a missing promtool / amtool / prometheus / alertmanager fails the test that needs it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI must run the monitoring tests"):
        tool("promtool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        tool("amtool")


def test_alert_rules_are_valid_and_fire_on_what_they_catch() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert names == EXPECTED_ALERTS
    assert rule_problems(PROMETHEUS / "alerts.yml") == []
    tested = {t["alertname"] for case in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert tested == EXPECTED_ALERTS, f"rules without a firing test: {EXPECTED_ALERTS - tested}"
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = _promtool("test", "rules", "alerts_test.yml")
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_a_broken_rule_file_is_refused(tmp_path: Path) -> None:
    good = (PROMETHEUS / "alerts.yml").read_text()
    broken = tmp_path / "alerts.yml"
    broken.write_text(good.replace("expr: up{job=\"lvm-serve\"} == 0", "expr: up{job=\"lvm-serve\" == 0", 1))
    assert broken.read_text() != good
    assert any("unbalanced" in p for p in rule_problems(broken))
    unlabelled = tmp_path / "unlabelled.yml"
    unlabelled.write_text(good.replace("labels:\n          severity: critical", "labels:\n          severity: page", 1))
    assert any("severity" in p for p in rule_problems(unlabelled))
    checked = _promtool("check", "rules", str(broken), cwd=tmp_path)
    assert checked.returncode != 0 and "alerts.yml" in checked.stdout + checked.stderr


def test_alertmanager_pages_pagerduty_with_the_platform_routing_key(compose, tmp_path: Path) -> None:
    am = compose["services"]["alertmanager"]
    env = env_of(am)
    assert urlsplit(env["LVM_ALERT_WEBHOOK_URL"]).path == "/v2/enqueue"  # Events API v2 by default
    rendered = render_alertmanager({"LVM_ALERT_ROUTING_KEY": "R0UTING", "LVM_ALERT_WEBHOOK_URL": "https://pd.example/v2/enqueue"})
    assert "@" not in re.sub(r"#.*", "", rendered), "a placeholder was left unrendered"
    config = yaml.safe_load(rendered)
    [receiver] = [r for r in config["receivers"] if r["name"] == config["route"]["receiver"]]
    [pd] = receiver["pagerduty_configs"]
    assert pd["routing_key"] == "R0UTING" and pd["url"] == "https://pd.example/v2/enqueue" and pd["send_resolved"]
    # Prometheus sends its alerts to this Alertmanager.
    prom_config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = [t for a in prom_config["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    port = published_ports(am)
    assert targets == [f"alertmanager:{next(iter(port))}"]
    amtool = tool("amtool")
    (tmp_path / "am.yml").write_text(rendered)
    proc = subprocess.run([amtool, "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_routes_by_its_severity(tmp_path: Path) -> None:
    """`amtool config routes test` on each rule's labels: critical and warning reach PagerDuty, info nobody.

    The drift flow pages drift itself, so LvmDriftDetected (info) must not page a second time."""
    rendered = render_alertmanager({"LVM_ALERT_ROUTING_KEY": "R0UTING", "LVM_ALERT_WEBHOOK_URL": "https://pd.example/v2/enqueue"})
    config = yaml.safe_load(rendered)
    null = [r for r in config["receivers"] if not any(k.endswith("_configs") for k in r)]
    assert [r["name"] for r in null] == ["null"]
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"]: r["labels"]["severity"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["LvmDriftDetected"] == "info" and alerts["LvmDriftMonitorStale"] == "warning"
    (tmp_path / "am.yml").write_text(rendered)
    amtool = tool("amtool")
    for name, severity in sorted(alerts.items()):
        proc = subprocess.run([amtool, "config", "routes", "test", f"--config.file={tmp_path / 'am.yml'}",
                               f"alertname={name}", f"severity={severity}"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.split() == (["null"] if severity == "info" else ["pagerduty"]), (name, proc.stdout)
