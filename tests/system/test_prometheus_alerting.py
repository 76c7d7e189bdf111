"""The alerting path for real: a real Prometheus scrapes a real `lvm serve` app (uvicorn on loopback), the
service answers 5xx, and the page reaches a PagerDuty-like webhook through a real Alertmanager; and
LvmServeDown's inhibit rule silences the alerts that the service's rules produce for the same instance.

The rules and routing are docker/prometheus/'s, rendered as compose renders them, on a clock 60 times faster
(every `for:`, range and offset, scrape/evaluation interval and Alertmanager wait divided by 60: 5m -> 5s);
expressions, thresholds, labels and receivers are the shipped ones. The 5xx come from a real fault: a model
folder whose weights are NaN (a corrupted weights file), which the service refuses to answer with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

from tests.fixtures.model_records import CTX, DIM, FP, tiny_model
from tests.fixtures.monitoring import (
    PROMETHEUS_DIR,
    alertmanager,
    alertmanager_on_a_faster_clock,
    faster,
    prometheus,
    rules_on_a_faster_clock,
    tool,
)
from tests.fixtures.prefect_server import WebhookReceiver
from tests.fixtures.serving import serve_app, wait_until
from tests.fixtures.vectors import random_unit

pytestmark = pytest.mark.slow

FACTOR = 60  # one shipped minute is one second here
ROUTING_KEY = "test-routing-key"
TOKEN = "alerting-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _pages(receiver: WebhookReceiver, alertname: str) -> list[dict[str, Any]]:
    """PagerDuty events Alertmanager sent for `alertname` (its name is in the event's custom details)."""
    events = [r.json() for r in receiver.requests]
    return [e for e in events if e["payload"]["custom_details"].get("alertname") == alertname]


def _prometheus_config(serve_target: str, alertmanager_target: str) -> dict[str, Any]:
    """docker/prometheus/prometheus.yml with the service and the Alertmanager on loopback, scraped every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=faster("1m", FACTOR), scrape_timeout="900ms",
                            evaluation_interval=faster("1m", FACTOR))
    config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager_target]}]}]
    [serve_job] = [job for job in config["scrape_configs"] if job["job_name"] == "lvm-serve"]
    serve_job["static_configs"] = [{"targets": [serve_target]}]
    config["scrape_configs"] = [serve_job]  # the other targets (Pushgateway, Dask) do not run here
    return config


@pytest.fixture()
def broken_model(tmp_path: Path) -> Path:
    """A model folder whose weights are all NaN: it loads, and every prediction is refused with a 500."""
    from lvm_core.models.loader import save_model_dir

    model, config = tiny_model(0)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return save_model_dir(model, config, FP, tmp_path / "nan-model")


@pytest.fixture()
def service(broken_model: Path, tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    from lvm_core.serving.app import create_app
    from lvm_core.serving.settings import ServeSettings

    app = create_app(str(broken_model), tmp_path / "data", settings=ServeSettings(token=TOKEN, access_log=False))
    with serve_app(app) as client:
        yield client, str(client.base_url).removeprefix("http://").rstrip("/")


def test_5xx_from_the_service_pages_through_prometheus_and_alertmanager(service, webhook_receiver, tmp_path: Path):
    client, target = service
    started = time.monotonic()
    am_config = alertmanager_on_a_faster_clock({"LVM_ALERT_ROUTING_KEY": ROUTING_KEY,
                                                "LVM_ALERT_WEBHOOK_URL": webhook_receiver.url}, FACTOR)
    with alertmanager(am_config, tmp_path / "am") as am, \
            prometheus(_prometheus_config(target, am.url.removeprefix("http://")), rules_on_a_faster_clock(FACTOR),
                       tmp_path / "prom") as prom:
        wait_until(lambda: _target_up(prom.url), timeout=15, what="Prometheus scraping the service")
        stack_ready = time.monotonic()

        stop = threading.Event()
        first_error: list[float] = []

        def traffic() -> None:  # a client that keeps asking; every prediction fails on the broken model
            x = random_unit(0, 1, CTX, DIM).tolist()
            with httpx.Client(base_url=str(client.base_url), headers=AUTH, timeout=10) as c:
                while not stop.is_set():
                    try:
                        if c.post("/v1/predict", json={"contexts": x}).status_code >= 500 and not first_error:
                            first_error.append(time.monotonic())
                        c.get("/v1/models")
                    except httpx.HTTPError:  # a slow answer on a busy machine: keep asking
                        pass
                    stop.wait(0.05)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            deadline = time.monotonic() + 30
            while not _pages(webhook_receiver, "LvmServeErrorRate") and time.monotonic() < deadline:
                webhook_receiver.wait_for(len(webhook_receiver.requests) + 1, timeout=0.5)
            paged = time.monotonic()
        finally:
            stop.set()
            sender.join(10)
        pages = _pages(webhook_receiver, "LvmServeErrorRate")
        assert pages, (f"no page within 30 s; alerts: {httpx.get(f'{prom.url}/api/v1/alerts').text}\n"
                       f"{am.log_tail()}")
        alerts = httpx.get(f"{am.url}/api/v2/alerts", params={"filter": 'alertname="LvmServeErrorRate"'}).json()

    page = pages[0]
    assert page["routing_key"] == ROUTING_KEY and page["event_action"] == "trigger"
    assert page["payload"]["severity"] == "critical"
    assert f"lvm serve {target} answers" in page["payload"]["summary"]
    # The alert keeps job and instance (what LvmServeDown's inhibit rule matches on).
    assert [(a["labels"]["job"], a["labels"]["instance"]) for a in alerts] == [("lvm-serve", target)]
    print(f"stack ready {stack_ready - started:.1f}s after start; first 5xx to page "
          f"{paged - first_error[0]:.1f}s (shipped timings: 5 min rate window, 5 min for:, 30 s group wait)")


def _target_up(prom_url: str) -> bool:
    result = httpx.get(f"{prom_url}/api/v1/query", params={"query": 'up{job="lvm-serve"}'}).json()["data"]["result"]
    return bool(result) and result[0]["value"][1] == "1"


def _rule_test_labels() -> dict[str, list[dict[str, str]]]:
    """alertname -> the label sets alerts_test.yml shows its rule producing (promtool checks them)."""
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    out: dict[str, list[dict[str, str]]] = {}
    for case in tests:
        for check in case["alert_rule_test"]:
            for alert in check.get("exp_alerts") or []:
                out.setdefault(check["alertname"], []).append({k: str(v) for k, v in alert["exp_labels"].items()})
    return out


def test_service_down_inhibits_the_other_alerts_of_that_instance_only(webhook_receiver, tmp_path: Path):
    tool("promtool")  # the label sets below are the ones promtool shows the rules producing
    produced = _rule_test_labels()
    down = next(ls for ls in produced["LvmServeDown"] if ls["instance"] == "serve:8000")
    inhibited = {name: next(ls for ls in produced[name] if ls.get("instance") == "serve:8000")
                 for name in ("LvmServeHighP99Latency", "LvmServeErrorRate", "LvmServeModelLoadFailures",
                              "LvmServeMemoryHigh")}
    not_inhibited = {"LvmServeErrorRate": next(ls for ls in produced["LvmServeErrorRate"]
                                               if ls["instance"] == "serve-2:8000"),
                     "LvmOnlineCosineDrop": produced["LvmOnlineCosineDrop"][0]}

    def alert(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"labels": {"alertname": name, **labels}, "annotations": {"summary": f"{name} test"}}

    config = alertmanager_on_a_faster_clock({"LVM_ALERT_ROUTING_KEY": ROUTING_KEY,
                                             "LVM_ALERT_WEBHOOK_URL": webhook_receiver.url}, FACTOR)
    with alertmanager(config, tmp_path / "am") as am:
        assert httpx.post(f"{am.url}/api/v2/alerts", json=[alert("LvmServeDown", down)]).status_code == 200
        wait_until(lambda: len(httpx.get(f"{am.url}/api/v2/alerts").json()) == 1, timeout=10, what="the source alert")
        others = [alert(n, ls) for n, ls in inhibited.items()] + [alert(n, ls) for n, ls in not_inhibited.items()]
        assert httpx.post(f"{am.url}/api/v2/alerts", json=others).status_code == 200

        def states() -> dict[tuple[str, str], str]:
            return {(a["labels"]["alertname"], a["labels"].get("instance", "")): a["status"]["state"]
                    for a in httpx.get(f"{am.url}/api/v2/alerts").json()}

        wait_until(lambda: len(states()) == 1 + len(others), timeout=10, what="all alerts received")
        wait_until(lambda: sum(s == "suppressed" for s in states().values()) == len(inhibited), timeout=10,
                   what=f"the inhibition of {sorted(inhibited)} (states: {states()})")
        got = states()
        assert {k for k, s in got.items() if s == "suppressed"} == {(n, "serve:8000") for n in inhibited}
        # What reaches PagerDuty: the outage, the other instance's errors and the model-level cosine drop.
        expected = {"LvmServeDown", "LvmServeErrorRate", "LvmOnlineCosineDrop"}
        wait_until(lambda: {r.json()["payload"]["custom_details"]["alertname"] for r in webhook_receiver.requests}
                   >= expected, timeout=15, what="the pages that are not inhibited")
        time.sleep(1.5)  # past a further group wait: nothing inhibited arrives late
        sent = [(r.json()["payload"]["custom_details"]["alertname"], r.json()["payload"]["summary"])
                for r in webhook_receiver.requests]
    assert sorted(name for name, _ in sent) == sorted(expected), sent
    error_pages = [r.json() for r in webhook_receiver.requests
                   if r.json()["payload"]["custom_details"]["alertname"] == "LvmServeErrorRate"]
    assert [p["dedup_key"] for p in error_pages] and all(p["payload"]["severity"] == "critical" for p in error_pages)
