"""Drift of served contexts: the two tests on synthetic samples, and the flow on a real built dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from prefect_server import WebhookReceiver

from lvm_core.drift import (
    context_features,
    domain_classifier_auc,
    drift_report,
    load_current_contexts,
    mmd_permutation_test,
)

D, CTX = 32, 4


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _contexts(rng: np.random.Generator, n: int, center: np.ndarray, spread: float = 0.5) -> np.ndarray:
    """Contexts (n, CTX, D) of unit vectors: each context scattered around its own topic near `center`."""
    topic = _unit(center + spread * rng.standard_normal((n, 1, D)))
    return _unit(topic + 0.3 * rng.standard_normal((n, CTX, D))).astype(np.float32)


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    c1, c2 = _unit(rng.standard_normal(D)), _unit(rng.standard_normal(D))
    return {"reference": _contexts(rng, 500, c1), "same": _contexts(rng, 300, c1), "shifted": _contexts(rng, 300, c2)}


def test_context_features_mean_and_last() -> None:
    rng = np.random.default_rng(0)
    c = _unit(rng.standard_normal((5, CTX, D)))
    rows = context_features(c)
    assert rows.shape == (5, 2 * D)
    np.testing.assert_allclose(np.linalg.norm(rows[:, :D], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(rows[:, D:], c[:, -1, :], rtol=1e-6)
    assert context_features(c, "mean").shape == context_features(c, "last").shape == (5, D)
    with pytest.raises(ValueError, match=r"\(n, ctx, D\)"):
        context_features(c[0])
    bad = c.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        context_features(bad)


def test_same_distribution_is_not_drift(samples) -> None:
    report = drift_report(samples["reference"], samples["same"])
    print("same:", report.summary())
    assert 0.35 < report.auc < 0.65
    assert report.mmd_p_value > 0.05
    assert not report.drifted and report.reasons == []
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()


def test_shifted_distribution_is_drift(samples) -> None:
    report = drift_report(samples["reference"], samples["shifted"])
    print("shifted:", report.summary())
    assert report.auc > 0.75
    assert report.mmd_p_value < 0.01
    assert report.drifted and len(report.reasons) == 2
    assert report.n_reference == 500 and report.n_current == 300


def test_tests_separately_and_their_limits(samples) -> None:
    ref = context_features(samples["reference"])
    shifted = context_features(samples["shifted"])
    assert domain_classifier_auc(ref, ref[::-1].copy(), seed=1) < 0.65  # identical rows: nothing to learn
    res = mmd_permutation_test(ref, shifted, n_permutations=50, max_rows=100)
    assert (res.n_reference, res.n_current) == (100, 100)  # subsampled to max_rows per side
    assert res.p_value == pytest.approx(1 / 51)  # smallest possible p-value
    assert res.bandwidth > 0 and res.mmd2 > 0
    # a difference in spread only: same mean direction, much wider scatter; MMD sees it
    rng = np.random.default_rng(3)
    center = _unit(rng.standard_normal(D))
    narrow = context_features(_contexts(rng, 300, center, spread=0.2))
    wide = context_features(_contexts(rng, 300, center, spread=2.0))
    assert mmd_permutation_test(narrow, wide).p_value < 0.01
    with pytest.raises(ValueError, match="features"):
        domain_classifier_auc(ref, shifted[:, :D])


def test_load_current_contexts_from_npy(tmp_path) -> None:
    rng = np.random.default_rng(0)
    c = _unit(rng.standard_normal((50, CTX, D))).astype(np.float32)
    np.save(tmp_path / "window.npy", c)
    got = load_current_contexts(tmp_path / "window.npy", max_windows=20)
    assert got.shape == (20, CTX, D) and got.dtype == np.float32
    np.save(tmp_path / "flat.npy", c[:, 0, :])
    with pytest.raises(ValueError, match=r"\(n, ctx, D\)"):
        load_current_contexts(tmp_path / "flat.npy")
    with pytest.raises(FileNotFoundError) as missing:
        load_current_contexts(tmp_path / "missing.npy")

    # A path that is not there is not retried (three retries with backoff made `lvm monitor-drift` take ~15 s
    # to say so); a failure that may pass is.
    from prefect.states import Failed

    from tasks.common import is_transient

    assert not is_transient(None, None, Failed(data=missing.value))
    assert is_transient(None, None, Failed(data=ConnectionResetError("the service went away")))


def test_flow_on_a_built_dataset(small_dataset, prefect_harness, webhook_receiver: WebhookReceiver,  # noqa: F811
                                 monkeypatch, tmp_path) -> None:
    from flows.drift import DriftDetectedError, drift_dedup_key, monitor_drift
    from flows.hooks import ALERT_URL_ENV
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather

    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    ds = load_dataset(small_dataset)
    own, _ = gather(ds.vectors, ds.sequences["train"])
    np.save(tmp_path / "own.npy", own)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "random.npy", _unit(rng.standard_normal((300, *own.shape[1:]))).astype(np.float32))

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
    from flows.hooks import ALERT_URL_ENV
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather

    monkeypatch.delenv(ALERT_URL_ENV, raising=False)
    monkeypatch.delenv(CURRENT_ENV, raising=False)
    ds = load_dataset(small_dataset)
    own, _ = gather(ds.vectors, ds.sequences["train"])
    np.save(tmp_path / "own.npy", own)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "random.npy", _unit(rng.standard_normal((300, *own.shape[1:]))).astype(np.float32))
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
