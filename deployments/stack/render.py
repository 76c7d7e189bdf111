"""Render docker/prometheus/'s Prometheus and Alertmanager files for deployments/stack.sh.

Compose reaches services by name (`serve:8000`); on one machine they listen on this host's ports. Every
target of prometheus.yml must map to a stack service: a target compose adds and the stack lacks is an error
here, not a silently missing scrape. Alertmanager's `@VAR@` placeholders are filled as compose's `sed` does,
with compose's defaults. `LVM_STACK_RULES` / `LVM_STACK_ALERTMANAGER_CONFIG` / `LVM_STACK_SCRAPE_INTERVAL`
replace the shipped rules, Alertmanager file and intervals (the system tests run them on a faster clock).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def compose_defaults(service: str, compose: Path = COMPOSE) -> dict[str, str]:
    """`${VAR:-default}` defaults of one compose service's environment."""
    env = yaml.safe_load(compose.read_text())["services"][service].get("environment") or {}
    out = {}
    for value in env.values():
        match = re.fullmatch(r"\$\{(\w+):-(.*)\}", str(value))
        if match:
            out[match[1]] = match[2]
    return out


def render_alertmanager(template: str, env: Mapping[str, str], compose: Path = COMPOSE) -> str:
    """alertmanager.yml with compose's `@VAR@` placeholders filled from `env`, else compose's defaults."""
    values = compose_defaults("alertmanager", compose) | {k: v for k, v in env.items() if v}

    def fill(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise SystemExit(f"alertmanager.yml: no value for @{match[1]}@")
        return values[match[1]]

    return re.sub(r"@(\w+)@", fill, template)


def render_prometheus(config: dict[str, Any], targets: Mapping[str, str], rules: Path,
                      scrape_interval: str | None = None) -> dict[str, Any]:
    """prometheus.yml with compose's `service:port` targets replaced by `targets` and the rule file absolute."""
    def mapped(target: str) -> str:
        if target not in targets:
            raise SystemExit(f"prometheus.yml: target {target!r} has no service in the stack")
        return targets[target]

    for am in config.get("alerting", {}).get("alertmanagers", []):
        for static in am.get("static_configs", []):
            static["targets"] = [mapped(t) for t in static["targets"]]
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            static["targets"] = [mapped(t) for t in static["targets"]]
    config["rule_files"] = [str(rules)]
    if scrape_interval:
        config["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval)
        config["global"]["scrape_timeout"] = scrape_interval if scrape_interval.endswith("ms") else "1s"
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.stack.render", description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--prometheus-dir", type=Path, required=True)
    for name in ("serve", "pushgateway", "dask-dashboard", "alertmanager", "prometheus"):
        parser.add_argument(f"--{name}-port", type=int, required=True)
    args = parser.parse_args(argv)
    run = args.state / "run"
    host = args.host
    targets = {
        "serve:8000": f"{host}:{args.serve_port}",
        "pushgateway:9091": f"{host}:{args.pushgateway_port}",
        "dask-scheduler:8787": f"{host}:{args.dask_dashboard_port}",
        "alertmanager:9093": f"{host}:{args.alertmanager_port}",
        "localhost:9090": f"{host}:{args.prometheus_port}",
    }
    rules = Path(os.environ.get("LVM_STACK_RULES") or args.prometheus_dir / "alerts.yml").resolve()
    config = yaml.safe_load((args.prometheus_dir / "prometheus.yml").read_text())
    rendered = render_prometheus(config, targets, rules, os.environ.get("LVM_STACK_SCRAPE_INTERVAL"))
    (run / "prometheus.yml").write_text(yaml.safe_dump(rendered, sort_keys=False))
    am_file = os.environ.get("LVM_STACK_ALERTMANAGER_CONFIG")
    template = Path(am_file or args.prometheus_dir / "alertmanager.yml").read_text()
    (run / "alertmanager.yml").write_text(render_alertmanager(template, os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
