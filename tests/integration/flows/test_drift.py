"""The drift flow and `lvm monitor-drift` on a real built dataset: served contexts of two replicas, one
incident per drift episode at a webhook, no verdict on too few sessions, scores pushed to a Pushgateway, the
reference read from a running service."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lvm_core.io.vectors import l2_normalize
from tests.fixtures.prefect_server import WebhookReceiver

MIN_GROUPS = 5  # the small dataset has 11 train + val articles; the monitor's default is 10


@pytest.fixture
def reference_train_and_val(monkeypatch) -> None:
    """The small dataset's val split has 2 articles, too few for any verdict: these tests of the flow's
    mechanics read train + val windows as the reference (the rates on held-out articles are tested in
    tests/integration/test_drift_real_data.py)."""
    from lvm_core.drift import samples

    real = samples.load_reference_sample

    def train_and_val(root, splits=("val",), *args, **kwargs):
        return real(root, ("train", "val") if tuple(splits) == ("val",) else splits, *args, **kwargs)

    monkeypatch.setattr(samples, "load_reference_sample", train_and_val)


def write_windows(folder, contexts: np.ndarray, clients: list[str], monkeypatch, replicas: int = 2) -> None:
    """The served contexts as the service writes them: each context under its client key, the requests spread
    over `replicas` replicas (one contexts-<replica>.npy each) of one shared folder."""
    from lvm_core.io.context_window_file import REPLICA_ENV
    from lvm_core.serving.window import ContextWindow

    for old in folder.glob("*.npy"):
        old.unlink()
    for r in range(replicas):
        monkeypatch.setenv(REPLICA_ENV, f"serve-{r}")
        w = ContextWindow(folder, capacity=len(contexts))
        for i in range(r, len(contexts), replicas):
            w.add(contexts[i : i + 1], client=clients[i])
        w.flush()


def served(small_dataset, n_random_clients: int = 12) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Served traffic: readers of the dataset's own train articles (one client each), random unit vectors
    from `n_random_clients` clients, and three clients only."""
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import gather

    ds = load_dataset(small_dataset)
    seqs = ds.sequences["train"]
    own, _ = gather(ds.vectors, seqs)
    own_clients = [f"reader-{a}" for a in seqs.article_ids]
    rng = np.random.default_rng(0)
    noise = l2_normalize(rng.standard_normal((120, *own.shape[1:])), dtype=None).astype(np.float32)
    return {"own": (own, own_clients), "random": (noise, [f"bot-{i % n_random_clients}" for i in range(120)]),
            "few": (own[:60], [f"reader-{i % 3}" for i in range(60)])}


def test_one_incident_per_drift_episode(small_dataset, prefect_harness, webhook_receiver: WebhookReceiver,  # noqa: F811
                                        reference_train_and_val, monkeypatch, tmp_path) -> None:
    """Hourly checks of one service's window folder (two replicas): the first drifted check triggers, later
    ones stay quiet, a check without enough sessions changes nothing, the first clean check resolves."""
    from flows.drift import DriftDetectedError, drift_dedup_key, drift_episode_variable, monitor_drift
    from lvm_core.runtime.environment import ALERT_URL_ENV

    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    traffic = served(small_dataset)
    folder = tmp_path / "served"

    def check(kind: str) -> dict:
        write_windows(folder, *traffic[kind], monkeypatch)
        out = monitor_drift(reference_dataset=str(small_dataset), current=str(folder), min_groups=MIN_GROUPS,
                            n_permutations=200)
        print(kind, {k: out[k] for k in ("verdict", "auc", "mmd_p_value", "n_reference_groups",
                                         "n_current_groups", "alert", "episode")})
        return out

    ok = check("own")
    assert ok["verdict"] == "no drift" and ok["alert"] is None and ok["episode"] is None
    assert ok["n_current_groups"] == 9 and ok["n_reference_groups"] == 11  # both replicas' files read
    first = check("random")
    assert first["verdict"] == "drift" and first["alert"] == "trigger" and first["episode"] == "opened"
    again = check("random")
    assert again["drifted"] and again["alert"] is None and again["episode"] == "ongoing"
    few = check("few")
    assert few["verdict"] == "insufficient data" and few["auc"] is None and few["alert"] is None
    assert few["episode"] == "ongoing" and "fewer than 5" in few["reasons"][0]
    over = check("own")
    assert over["verdict"] == "no drift" and over["alert"] == "resolve" and over["episode"] == "resolved"
    assert check("own")["alert"] is None

    trigger, resolve = (r.json() for r in webhook_receiver.wait_for(2, timeout=10))
    assert len(webhook_receiver.requests) == 2  # one incident for the whole episode
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == drift_dedup_key(str(folder))
    assert trigger["payload"]["severity"] == "warning" and "drifted from" in trigger["payload"]["summary"]
    assert trigger["payload"]["custom_details"]["drift"]["verdict"] == "drift"
    from prefect.variables import Variable

    assert Variable.get(drift_episode_variable(str(folder))) is None  # no episode left open

    write_windows(folder, *traffic["random"], monkeypatch)
    state = monitor_drift(reference_dataset=str(small_dataset), current=str(folder), min_groups=MIN_GROUPS,
                          n_permutations=200, fail_on_drift=True, return_state=True)
    assert state.is_failed()
    with pytest.raises(DriftDetectedError):
        state.result()
    Variable.unset(drift_episode_variable(str(folder)))


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


def test_monitor_drift_command(small_dataset, prefect_harness, reference_train_and_val, monkeypatch,
                               tmp_path) -> None:
    """`lvm monitor-drift`: scores beside thresholds; exit 0 / 1 / 3 on no drift / drift / insufficient data;
    scores pushed to the Pushgateway, a lost push does not fail the check, and bad input is one line."""
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.cli.drift import INSUFFICIENT_EXIT
    from flows.drift import CURRENT_ENV, PUSHGATEWAY_ENV
    from lvm_core.runtime.environment import ALERT_URL_ENV

    monkeypatch.delenv(ALERT_URL_ENV, raising=False)
    monkeypatch.delenv(CURRENT_ENV, raising=False)
    traffic = served(small_dataset)
    for kind in traffic:
        write_windows(tmp_path / kind, *traffic[kind], monkeypatch)
    runner = CliRunner()
    base = ["monitor-drift", "--dataset", str(small_dataset), "--min-groups", str(MIN_GROUPS)]

    gateway = _Recorder()
    monkeypatch.setenv(PUSHGATEWAY_ENV, gateway.url)
    try:
        ok = runner.invoke(app, [*base, "--current", str(tmp_path / "own")])
        few = runner.invoke(app, [*base, "--current", str(tmp_path / "few" / "contexts-*.npy")])
    finally:
        gateway.close()
    print(ok.output, few.output)
    assert ok.exit_code == 0, ok.output
    assert "domain-classifier ROC-AUC" in ok.output and "> 0.75" in ok.output and "< 0.01" in ok.output
    assert "no drift" in ok.output and "pushed to Prometheus: yes" in ok.output
    assert "11 reference articles vs 9 current" in ok.output
    assert few.exit_code == INSUFFICIENT_EXIT and "insufficient data" in few.output and "no alert" in few.output
    (method, path, body, _), (_, _, few_body, _) = [r for r in gateway.requests if r[0] == "PUT"]  # pushes
    assert any(r[0] == "GET" and r[1] == "/api/v1/metrics" for r in gateway.requests)  # then old groups retired
    assert method == "PUT" and path == f"/metrics/job/lvm_drift/reference_dataset/{small_dataset.name}"
    text = body.decode()
    assert f'lvm_drift_auc{{features="mean_last",model="{small_dataset.name}",reference_dataset="{small_dataset.name}"}}' in text
    assert "lvm_drift_drifted{" in text and "} 0.0" in text.split("lvm_drift_drifted{")[1].splitlines()[0]
    few_text = few_body.decode()
    assert "lvm_drift_auc{" not in few_text and "lvm_drift_insufficient_data{" in few_text
    assert "} 1.0" in few_text.split("lvm_drift_insufficient_data{")[1].splitlines()[0]

    monkeypatch.setenv(PUSHGATEWAY_ENV, "http://127.0.0.1:9")  # nothing listens: logged, not fatal
    monkeypatch.setenv(CURRENT_ENV, str(tmp_path / "random"))  # the worker's default `current`
    drifted = runner.invoke(app, base)
    print(drifted.output)
    assert drifted.exit_code == 1, drifted.output
    assert "drift:" in drifted.output and "AUC" in drifted.output and "pushed to Prometheus: no" in drifted.output

    monkeypatch.delenv(CURRENT_ENV)
    for args, message in (
        (base, "no served contexts to check"),
        ([*base, "--current", str(tmp_path / "own"), "--service", "http://127.0.0.1:9"], "exactly one of"),
        ([*base, "--current", str(tmp_path / "missing.npy")], "no such .npy file"),
        ([*base, "--current", str(tmp_path / "own"), "--threshold-auc", "1.5"], "threshold-auc"),
    ):
        bad = runner.invoke(app, args)
        assert bad.exit_code not in (0, INSUFFICIENT_EXIT) and message in bad.output, (args, bad.output)


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
