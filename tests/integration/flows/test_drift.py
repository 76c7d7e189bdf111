"""The drift flow and `lvm monitor-drift` on a real built dataset: alerts to a webhook, scores pushed to a
Pushgateway, the reference read from a running service."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_core.io.vectors import l2_normalize
from tests.fixtures.prefect_server import WebhookReceiver


def test_flow_on_a_built_dataset(small_dataset, prefect_harness, webhook_receiver: WebhookReceiver,  # noqa: F811
                                 monkeypatch, tmp_path) -> None:
    from flows.drift import DriftDetectedError, drift_dedup_key, monitor_drift
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather
    from lvm_core.runtime.environment import ALERT_URL_ENV

    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    ds = load_dataset(small_dataset)
    own, _ = gather(ds.vectors, ds.sequences["train"])
    np.save(tmp_path / "own.npy", own)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "random.npy", l2_normalize(rng.standard_normal((300, *own.shape[1:])), dtype=None).astype(np.float32))

    # (a) the dataset's own training contexts: no drift, the open incident (if any) is resolved
    ok = monitor_drift(reference_dataset=str(small_dataset), current=str(tmp_path / "own.npy"))
    print("own train contexts:", {k: ok[k] for k in ("auc", "mmd_p_value", "n_reference", "n_current")})
    assert not ok["drifted"] and ok["auc"] < 0.65 and ok["mmd_p_value"] > 0.05
    assert ok["alert"] == "resolve"
    [resolve] = webhook_receiver.wait_for(1, timeout=10)
    assert resolve.json()["event_action"] == "resolve"

    # (b) random unit vectors: drift, the trigger reaches the receiver; with fail_on_drift the run fails
    bad = monitor_drift(reference_dataset=str(small_dataset), current=str(tmp_path / "random.npy"))
    print("random unit vectors:", {k: bad[k] for k in ("auc", "mmd_p_value", "n_reference", "n_current")})
    assert bad["drifted"] and bad["auc"] > 0.9 and bad["mmd_p_value"] < 0.01 and bad["alert"] == "trigger"
    trigger = webhook_receiver.wait_for(2, timeout=10)[1].json()
    assert trigger["event_action"] == "trigger" and trigger["payload"]["severity"] == "warning"
    assert trigger["dedup_key"] == drift_dedup_key(small_dataset.name, str(tmp_path / "random.npy"))
    assert resolve.json()["dedup_key"] == drift_dedup_key(small_dataset.name, str(tmp_path / "own.npy"))
    assert trigger["payload"]["custom_details"]["drift"]["drifted"] is True
    assert "drifted" in trigger["payload"]["summary"]

    state = monitor_drift(reference_dataset=str(small_dataset), current=str(tmp_path / "random.npy"),
                          fail_on_drift=True, return_state=True)
    assert state.is_failed()
    with pytest.raises(DriftDetectedError):
        state.result()


class _Recorder:
    """A loopback HTTP endpoint that records requests and answers with a fixed JSON body (a stand-in for a
    Pushgateway or a service's /v1/models in these unit tests)."""

    def __init__(self, answer: dict | None = None, status: int = 200) -> None:
        import http.server
        import threading

        self.requests: list[tuple[str, str, bytes, dict]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append((self.command, self.path, body, dict(self.headers)))
                out = json.dumps(answer or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_PUT = do_POST = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_monitor_drift_command(small_dataset, prefect_harness, monkeypatch, tmp_path) -> None:
    """`lvm monitor-drift`: scores beside thresholds, exit 0 / 1 on no drift / drift, scores pushed to the
    Pushgateway, a lost push does not fail the check, and bad input is one line with exit 1."""
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.drift import CURRENT_ENV, PUSHGATEWAY_ENV
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather
    from lvm_core.runtime.environment import ALERT_URL_ENV

    monkeypatch.delenv(ALERT_URL_ENV, raising=False)
    monkeypatch.delenv(CURRENT_ENV, raising=False)
    ds = load_dataset(small_dataset)
    own, _ = gather(ds.vectors, ds.sequences["train"])
    np.save(tmp_path / "own.npy", own)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "random.npy", l2_normalize(rng.standard_normal((300, *own.shape[1:])), dtype=None).astype(np.float32))
    runner = CliRunner()
    base = ["monitor-drift", "--dataset", str(small_dataset), "--window", "500"]

    gateway = _Recorder()
    monkeypatch.setenv(PUSHGATEWAY_ENV, gateway.url)
    try:
        ok = runner.invoke(app, [*base, "--current", str(tmp_path / "own.npy")])
    finally:
        gateway.close()
    print(ok.output)
    assert ok.exit_code == 0, ok.output
    assert "domain-classifier ROC-AUC" in ok.output and "> 0.75" in ok.output and "< 0.01" in ok.output
    assert "no drift" in ok.output and "pushed to Prometheus: yes" in ok.output
    [(method, path, body, _)] = gateway.requests
    assert method == "PUT" and path == f"/metrics/job/lvm_drift/reference_dataset/{small_dataset.name}"
    text = body.decode()
    assert f'lvm_drift_auc{{features="mean_last",model="{small_dataset.name}",reference_dataset="{small_dataset.name}"}}' in text
    assert "lvm_drift_drifted{" in text and "} 0.0" in text.split("lvm_drift_drifted{")[1].splitlines()[0]

    monkeypatch.setenv(PUSHGATEWAY_ENV, "http://127.0.0.1:9")  # nothing listens: logged, not fatal
    monkeypatch.setenv(CURRENT_ENV, str(tmp_path / "random.npy"))  # the worker's default `current`
    drifted = runner.invoke(app, base)
    print(drifted.output)
    assert drifted.exit_code == 1, drifted.output
    assert "drift:" in drifted.output and "AUC" in drifted.output and "pushed to Prometheus: no" in drifted.output

    monkeypatch.delenv(CURRENT_ENV)
    for args, message in (
        (base, "no served contexts to check"),
        ([*base, "--current", str(tmp_path / "own.npy"), "--service", "http://127.0.0.1:9"], "exactly one of"),
        ([*base, "--current", str(tmp_path / "missing.npy")], "no such .npy file"),
        ([*base, "--current", str(tmp_path / "own.npy"), "--threshold-auc", "1.5"], "threshold-auc"),
    ):
        bad = runner.invoke(app, args)
        assert bad.exit_code != 0 and message in bad.output, (args, bad.output)


def test_reference_from_a_running_service(monkeypatch) -> None:
    """The model a service answers with (largest share) is looked up with the service's token."""
    from flows.drift import SERVE_TOKEN_ENV, served_model

    monkeypatch.setenv(SERVE_TOKEN_ENV, "tok")
    service = _Recorder({"serving": [{"name": "lvm-amn", "version": 3, "share": 0.8},
                                     {"name": "lvm-amn", "version": 4, "share": 0.2}]})
    try:
        assert served_model(service.url) == "models:/lvm-amn/3"
        assert service.requests[0][1] == "/v1/models" and service.requests[0][3]["Authorization"] == "Bearer tok"
    finally:
        service.close()
    for answer, status, message in (({"serving": []}, 200, "serves no registered model"),
                                    ({"detail": "no"}, 401, "token refused")):
        stub = _Recorder(answer, status)
        try:
            with pytest.raises(ValueError, match=message):
                served_model(stub.url)
        finally:
            stub.close()
    with pytest.raises(ValueError, match="not reachable"):
        served_model("http://127.0.0.1:9")
