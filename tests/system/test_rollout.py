"""Staged rollout against a real uvicorn service: a worse challenger is rolled back automatically (and the
webhook gets the alert), one that holds is promoted, a version whose offline gates failed cannot be started,
and the CLI's status / promote / abort. The pure decision and routing: tests/unit/rollout/."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from lvm_core.rollout.decision import Thresholds
from lvm_core.rollout.plan import start
from lvm_core.rollout.state import (
    RolloutError,
    read_state,
)
from tests.fixtures.prefect_server import WebhookReceiver
from tests.fixtures.serving import mark_gates, serve_app, train_versions, wait_until

NAME = "lvm-rollout-test"
REFRESH_S = 0.3


# --- the flow against a real service ---------------------------------------------------------------


@pytest.fixture(scope="module")
def versions(small_dataset: Path, session_data_dir: Path, prefect_harness):
    """A champion and a challenger (tiny amn models, one epoch); gates recorded as passed."""
    from lvm_core.tracking.promotion import promote
    from lvm_core.tracking.setup import configure_tracking

    out = train_versions(small_dataset, session_data_dir, NAME, lrs=(1e-4, 1e-3), hidden=16, mlp_hidden=32)
    configure_tracking(session_data_dir)
    for v in out:
        mark_gates(NAME, v, passed=True)
    promote(NAME, out[0])
    return out


@pytest.fixture(scope="module")
def service(versions, session_data_dir: Path):
    from lvm_core.serving.app import create_app
    from lvm_core.serving.settings import ServeSettings

    app = create_app(f"models:/{NAME}@champion", session_data_dir, refresh_s=REFRESH_S,
                     settings=ServeSettings(token=""))
    with serve_app(app) as client:
        yield client, app


class Traffic:
    """Clients with keys sending predictions and feedback until stopped. The true next chunk is made up so
    that the champion's predictions look right (target = its prediction) and the challenger's `quality`."""

    def __init__(self, base_url: str, champion: int, challenger_quality: str):
        self.base_url, self.champion, self.quality = base_url, champion, challenger_quality
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.seen: dict[int, int] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        rng = np.random.default_rng(0)
        i = 0
        with httpx.Client(base_url=self.base_url, timeout=30) as c:
            dims = c.get("/v1/models").json()["serving"][0]
            ctx, dim = dims["context_len"], dims["dim"]
            while not self.stop.is_set():
                i += 1
                x = rng.standard_normal((1, ctx, dim))
                x /= np.linalg.norm(x, axis=-1, keepdims=True)
                r = c.post("/v1/predict", json={"contexts": x.tolist()}, headers={"X-Client-Key": f"c{i}"})
                if r.status_code != 200:
                    self.failures.append(r.text[:200])
                    continue
                body = r.json()
                self.seen[body["version"]] = self.seen.get(body["version"], 0) + 1
                pred = np.asarray(body["predictions"][0])
                if body["version"] == self.champion or self.quality == "same":
                    target = pred
                else:  # unrelated to the prediction: cosine ≈ 0
                    target = rng.standard_normal(dim)
                    target /= np.linalg.norm(target)
                c.post("/v1/feedback", json={"prediction_id": body["prediction_ids"][0], "target": target.tolist()})

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


# every request of the traffic above is its own client (a new key each time) and a step lasts seconds, so the
# minimums are low and the margins wide: these tests are about the plumbing (tests/unit/rollout: the statistics)
FAST = Thresholds(min_requests=15, min_feedback=10, min_clients=10, error_rate_margin=0.5, cosine_margin=0.2,
                  max_p99_ratio=20.0, p99_slack_s=2.0)


def test_worse_challenger_is_rolled_back_and_alerted(service, versions, session_data_dir: Path,
                                                     webhook_receiver: WebhookReceiver, monkeypatch):  # noqa: F811
    from flows.rollout import rollout_dedup_key, staged_rollout
    from lvm_core.runtime.environment import ALERT_URL_ENV
    from lvm_core.tracking.references import current_champion

    client, app = service
    champion, challenger = versions
    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    with Traffic(str(client.base_url), champion, "worse") as traffic:
        out = staged_rollout(name=NAME, challenger=challenger, service_urls=[str(client.base_url)], step_seconds=60,
                             check_seconds=0.5, plan=[0.5, 1.0], thresholds=FAST, data_dir=str(session_data_dir))
    assert not traffic.failures, traffic.failures[:3]
    assert out["outcome"] == "rolled_back" and out["champion"] == champion
    last = out["decisions"][-1]
    assert last["action"] == "rollback" and "online cosine" in last["reason"]
    assert last["numbers"]["challenger"]["cosine_mean"] < 0.5 < last["numbers"]["champion"]["cosine_mean"]
    state = read_state(NAME)
    assert (state.status, state.share) == ("rolled_back", 0.0) and state.last_decision["action"] == "rollback"
    assert current_champion(NAME) == champion
    [alert] = webhook_receiver.wait_for(1, timeout=10)
    event = alert.json()
    assert event["dedup_key"] == rollout_dedup_key(NAME, challenger) and event["event_action"] == "trigger"
    assert "rolled back" in event["payload"]["summary"] and "online cosine" in event["payload"]["summary"]
    wait_until(lambda: app.state.holder.challenger is None, what="the service to drop the challenger")


def test_challenger_that_fails_on_predict_is_rolled_back(versions, session_data_dir: Path):
    """A challenger whose predictions raise (here a model whose forward pass breaks) answers 500s: rolled back."""
    import dataclasses

    from flows.rollout import staged_rollout
    from lvm_core.models.loader import LoadedModel
    from lvm_core.serving.app import create_app
    from lvm_core.serving.holder import ModelHolder
    from lvm_core.serving.settings import ServeSettings
    from lvm_core.tracking.references import current_champion, load_registered_model

    champion, challenger = versions

    class Broken(LoadedModel):
        def predict(self, ctx, batch_size: int = 4096):
            raise RuntimeError("forward pass broke")

    def loader(ref: str, **kw):
        m = load_registered_model(ref, **kw)
        return Broken(**{f.name: getattr(m, f.name) for f in dataclasses.fields(m)}) if m.version == challenger else m

    holder = ModelHolder(f"models:/{NAME}@champion", session_data_dir, refresh_s=REFRESH_S, loader=loader)
    app = create_app(holder=holder, settings=ServeSettings(token=""))
    with serve_app(app) as client, Traffic(str(client.base_url), champion, "same") as traffic:
        out = staged_rollout(name=NAME, challenger=challenger, service_urls=[str(client.base_url)], step_seconds=60,
                             check_seconds=0.5, plan=[0.5, 1.0], thresholds=FAST, data_dir=str(session_data_dir))
    assert out["outcome"] == "rolled_back" and current_champion(NAME) == champion
    assert "error rate" in out["decisions"][-1]["reason"], out["decisions"][-1]
    assert traffic.failures and traffic.seen.get(challenger, 0) == 0
    stats = out["decisions"][-1]["numbers"]["challenger"]
    assert stats["errors"] == stats["requests"] > 0


def test_a_dead_rollout_flow_gives_traffic_back_then_the_next_run_alerts_and_promotes_one_that_holds(
        service, versions, session_data_dir: Path, webhook_receiver: WebhookReceiver, monkeypatch):
    """A rollout whose flow died (started, lease never renewed): the service stops routing the challenger once the
    lease is past; the next rollout run ends it as expired, alerts, and then promotes a challenger that holds."""
    from flows.rollout import staged_rollout
    from lvm_core.runtime.environment import ALERT_URL_ENV
    from lvm_core.tracking.promotion import rollback
    from lvm_core.tracking.references import current_champion

    client, app = service
    champion, challenger = versions  # the challenger rolled back above, started again
    start(NAME, challenger, [0.5, 1.0], owner="a flow that dies", lease_seconds=2.0)
    wait_until(lambda: app.state.holder.challenger_share() == 0.5, what="the challenger to get its share")
    wait_until(lambda: app.state.holder.challenger_share() == 0.0, what="the lease to run out", timeout=20)
    answered = {client.post("/v1/predict", json={"contexts": _contexts(app)}, headers={"X-Client-Key": f"k{i}"}
                            ).json()["version"] for i in range(30)}
    assert answered == {champion} and read_state(NAME).status == "active"  # still recorded as active, not routed

    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    with Traffic(str(client.base_url), champion, "same") as traffic:
        out = staged_rollout(name=NAME, challenger=challenger, service_urls=[str(client.base_url)], step_seconds=3,
                             check_seconds=0.5, plan=[0.5, 1.0], thresholds=FAST, data_dir=str(session_data_dir))
    [alert] = webhook_receiver.wait_for(1, timeout=10)
    assert "stopped renewing its lease" in alert.json()["payload"]["summary"]
    assert not traffic.failures, traffic.failures[:3]
    assert out["outcome"] == "promoted", out["decisions"]
    last = out["decisions"][-1]
    assert last["action"] == "promote" and traffic.seen.get(challenger, 0) > 0
    assert last["numbers"]["tests"]["online_cosine"]["verdict"] == "non_inferior"
    assert current_champion(NAME) == challenger and read_state(NAME).status == "promoted"
    wait_until(lambda: app.state.holder.current.model.version == challenger and app.state.holder.challenger is None,
               what="the service to serve the promoted challenger alone")
    rollback(NAME)  # back to the first champion for the next test
    wait_until(lambda: app.state.holder.current.model.version == champion, what="the rollback to be served")


def _contexts(app) -> list:
    served = app.state.holder.current.model
    x = np.random.default_rng(1).standard_normal((1, served.context_len, served.dim))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).tolist()


def test_two_starts_at_once_exactly_one_wins(service, versions, session_data_dir: Path):
    from lvm_core.rollout.plan import abort
    from lvm_core.tracking.setup import configure_tracking

    configure_tracking(session_data_dir)
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def go(owner: str) -> None:
        barrier.wait()
        try:
            start(NAME, versions[1], owner=owner)
            results[owner] = "won"
        except RolloutError as exc:
            results[owner] = f"lost: {exc}"

    threads = [threading.Thread(target=go, args=(f"starter-{i}",)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(v.split(":")[0] for v in results.values()) == ["lost", "won"], results
    winner = next(k for k, v in results.items() if v == "won")
    state = read_state(NAME)
    assert state.active and state.owner == winner
    abort(NAME, "end of the start race")


def test_tags_are_not_enough_to_serve_a_version_whose_gates_failed(service, versions, session_data_dir: Path):
    """A gate-failed version written into the rollout tags by hand is never routed; an alias moved by hand to one
    is not followed; promote and rollback refuse during an active rollout unless it is aborted."""
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from flows.cli import app as cli
    from lvm_core.rollout.state import TAG_LEASE_UNTIL, TAG_SHARE, TAG_STATUS, later, write_tags
    from lvm_core.tracking.promotion import RolloutActiveError, promote
    from lvm_core.tracking.references import current_champion
    from lvm_core.tracking.setup import configure_tracking
    from lvm_core.tracking.tags import ALIAS_CHAMPION, TAG_FORCED

    client, app = service
    champion, bad = versions
    configure_tracking(session_data_dir)
    start(NAME, bad)  # a legitimate start, then the gates of the challenger fail afterwards
    mark_gates(NAME, bad, passed=False, failed="test_cosine")
    write_tags(NAME, [(TAG_SHARE, "1.0"), (TAG_LEASE_UNTIL, later(600)), (TAG_STATUS, "active")])
    try:
        wait_until(lambda: app.state.holder.challenger_blocked is not None, what="the service to re-read the tags")
        answered = {client.post("/v1/predict", json={"contexts": _contexts(app)}, headers={"X-Client-Key": f"k{i}"}
                                ).json()["version"] for i in range(30)}
        assert answered == {champion}
        assert "failed gates test_cosine" in client.get("/v1/models").json()["challenger_blocked"]

        with pytest.raises(RolloutActiveError, match="abort it first"):
            promote(NAME, champion)
        res = CliRunner().invoke(cli, ["promote", "--version", str(champion), "--name", NAME, "--abort-rollout",
                                       "--data-dir", str(session_data_dir)])
        assert res.exit_code == 0 and "aborted" in res.output, res.output
        assert read_state(NAME).status == "aborted" and current_champion(NAME) == champion

        MlflowClient().set_registered_model_alias(NAME, ALIAS_CHAMPION, str(bad))  # by hand, past every check
        wait_until(lambda: "may not serve" in (app.state.holder.last_error or ""), what="the refusal of the alias")
        assert app.state.holder.current.model.version == champion
        assert MlflowClient().get_model_version(NAME, str(bad)).tags.get(TAG_FORCED) is None
    finally:
        MlflowClient().set_registered_model_alias(NAME, ALIAS_CHAMPION, str(champion))
        mark_gates(NAME, bad, passed=True)


def test_a_service_that_stays_unreachable_is_rolled_back_after_the_tolerated_outage(versions, session_data_dir):
    from flows.rollout import staged_rollout

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = staged_rollout(name=NAME, challenger=versions[1], service_urls=[dead], step_seconds=30, check_seconds=0.5,
                         plan=[0.5, 1.0], thresholds=FAST, data_dir=str(session_data_dir), service_outage_seconds=2.0)
    assert out["outcome"] == "rolled_back" and "unreachable" in out["decisions"][-1]["reason"]
    assert read_state(NAME).status == "rolled_back"


def test_gate_failed_version_cannot_be_started(service, versions, session_data_dir: Path):
    from typer.testing import CliRunner

    from flows.cli import app as cli
    from lvm_core.tracking.references import current_champion
    from lvm_core.tracking.setup import configure_tracking
    from lvm_core.tracking.tags import TAG_INCOMPLETE

    bad = versions[1]
    configure_tracking(session_data_dir)
    mark_gates(NAME, bad, passed=False, failed="test_cosine,beats_best_baseline")
    try:
        with pytest.raises(RolloutError, match="failed gates beats_best_baseline, test_cosine"):
            start(NAME, bad)
        res = CliRunner().invoke(cli, ["rollout", "start", "--version", str(bad), "--name", NAME,
                                       "--data-dir", str(session_data_dir), "--step-seconds", "1"])
        assert res.exit_code == 1
        assert f"{NAME} v{bad} cannot be rolled out: failed gates" in res.output
        assert len([ln for ln in res.output.splitlines() if "error:" in ln]) == 1
    finally:
        mark_gates(NAME, bad, passed=True)
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag(NAME, str(bad), TAG_INCOMPLETE, "killed")
    try:
        with pytest.raises(RolloutError, match="incomplete training run"):
            start(NAME, bad)
    finally:
        MlflowClient().delete_model_version_tag(NAME, str(bad), TAG_INCOMPLETE)
    with pytest.raises(RolloutError, match="already the champion"):
        start(NAME, current_champion(NAME))
    assert not read_state(NAME).active


def test_cli_status_promote_and_abort(service, versions, session_data_dir: Path):
    from typer.testing import CliRunner

    from flows.cli import app as cli
    from lvm_core.tracking.setup import configure_tracking

    client, app = service
    runner = CliRunner()
    dd = ["--name", NAME, "--data-dir", str(session_data_dir)]
    configure_tracking(session_data_dir)
    start(NAME, versions[1])
    res = runner.invoke(cli, ["rollout", "status", *dd])
    assert res.exit_code == 0 and "active" in res.output and "5%" in res.output
    res = runner.invoke(cli, ["rollout", "promote", *dd])
    assert res.exit_code == 0 and "20%" in res.output, res.output
    wait_until(lambda: app.state.holder.challenger_share() == 0.2, what="the 20% step by hand")
    res = runner.invoke(cli, ["rollout", "abort", *dd, "--reason", "seen enough"])
    assert res.exit_code == 0 and "aborted" in res.output and "seen enough" in res.output
    wait_until(lambda: app.state.holder.challenger is None, what="the abort to be served")
    res = runner.invoke(cli, ["rollout", "abort", *dd])
    assert res.exit_code == 1 and "no active rollout" in res.output
