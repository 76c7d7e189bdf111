"""Retiring Pushgateway groups: the groups a drift monitor left for a retired reference are deleted, the current
one is kept, and a gateway that cannot be reached is an OSError (what the flow's push already handles).

The gateway here is a small in-test HTTP server with the Pushgateway's URL scheme (`/metrics/job/<job>` then
label/value pairs, `@base64` values) and its group listing (`GET /api/v1/metrics`); the pushes come from
prometheus_client's own `push_to_gateway`, as the drift flow sends them.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from lvm_core.io.pushgateway import delete_group, pushed_groups, retire_groups

JOB = "lvm_drift"


class FakeGateway:
    """Groups keyed by their labels (job included), as the Pushgateway keeps them."""

    def __init__(self) -> None:
        self.groups: dict[tuple[tuple[str, str], ...], bytes] = {}
        self.requests: list[tuple[str, str]] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _group(self) -> tuple[tuple[str, str], ...]:
                parts = self.path.split("/")[2:]  # after /metrics
                labels = {}
                for name, value in zip(parts[::2], parts[1::2], strict=True):
                    if name.endswith("@base64"):
                        name, value = name[:-7], base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
                    labels[name] = value
                return tuple(sorted(labels.items()))

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:  # noqa: N802 (http.server naming)
                gateway.requests.append(("PUT", self.path))
                gateway.groups[self._group()] = self.rfile.read(int(self.headers["Content-Length"]))
                self._answer(200)

            def do_DELETE(self) -> None:  # noqa: N802
                gateway.requests.append(("DELETE", self.path))
                gateway.groups.pop(self._group(), None)
                self._answer(202)

            def do_GET(self) -> None:  # noqa: N802
                gateway.requests.append(("GET", self.path))
                if self.path != "/api/v1/metrics":
                    self._answer(404)
                    return
                data = [{"labels": dict(key), "push_time_seconds": {}} for key in gateway.groups]
                self._answer(200, json.dumps({"status": "success", "data": data}).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"127.0.0.1:{self.server.server_address[1]}"  # as LVM_PUSHGATEWAY_URL may be written, no scheme


@pytest.fixture()
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def push(url: str, job: str, dataset: str) -> None:
    """What monitor_drift pushes: one group per reference dataset."""
    reg = CollectorRegistry()
    Gauge("lvm_drift_last_run_timestamp_seconds", "t", ["reference_dataset"], registry=reg).labels(dataset).set(1)
    push_to_gateway(url, job=job, grouping_key={"reference_dataset": dataset}, registry=reg, timeout=5)


def test_retiring_keeps_the_current_reference_and_deletes_the_rest(gateway: FakeGateway) -> None:
    for dataset in ("enwiki-a", "enwiki/b with slash", "enwiki-c"):
        push(gateway.url, JOB, dataset)
    push(gateway.url, "another_job", "enwiki-a")  # another job's groups are not this job's business
    assert sorted(g["reference_dataset"] for g in pushed_groups(gateway.url, JOB)) == [
        "enwiki-a", "enwiki-c", "enwiki/b with slash"]

    retired = retire_groups(f"http://{gateway.url}/", JOB, keep={"reference_dataset": "enwiki-c"})

    assert sorted(r["reference_dataset"] for r in retired) == ["enwiki-a", "enwiki/b with slash"]
    assert pushed_groups(gateway.url, JOB) == [{"reference_dataset": "enwiki-c"}]
    assert pushed_groups(gateway.url, "another_job") == [{"reference_dataset": "enwiki-a"}]
    assert retire_groups(gateway.url, JOB, keep={"reference_dataset": "enwiki-c"}) == []  # nothing left to retire


def test_deleting_a_group_that_is_gone_is_fine(gateway: FakeGateway) -> None:
    delete_group(gateway.url, JOB, {"reference_dataset": "never-pushed"})
    assert ("DELETE", f"/metrics/job/{JOB}/reference_dataset/never-pushed") in gateway.requests


def test_an_unreachable_gateway_is_an_oserror(gateway: FakeGateway) -> None:
    url = gateway.url
    gateway.server.shutdown()
    gateway.server.server_close()
    with pytest.raises(OSError):
        retire_groups(url, JOB, keep={"reference_dataset": "enwiki-a"}, timeout=2)
