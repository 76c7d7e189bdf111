"""Staged rollout: the pure decision and routing, then the flow against a real uvicorn service — a worse
challenger is rolled back automatically (and the webhook gets the alert), one that holds is promoted,
a version whose offline gates failed cannot be started, and the CLI's status / promote / abort."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from prefect_server import WebhookReceiver
from test_serving import mark_gates, serve_app, wait_until

from lvm_core.rollout.state import state_from_tags, read_state, TAG_STATUS, TAG_CHALLENGER, TAG_CHAMPION, TAG_SHARE, TAG_STEP, TAG_PLAN, TAG_STEP_STARTED_AT, RolloutError
from lvm_core.rollout.plan import start, check_plan
from lvm_core.rollout.routing import bucket
from lvm_core.rollout.decision import Thresholds, decide
from lvm_core.rollout.stats import VersionStats

NAME = "lvm-rollout-test"
REFRESH_S = 0.3


# --- the decision (pure) ---------------------------------------------------------------------------

T = Thresholds(min_requests=100, min_feedback=30, max_error_rate_increase=0.01, max_p99_ratio=1.5, p99_slack_s=0.01,
               max_cosine_drop=0.02)
CHAMP = VersionStats(1, requests=1900, errors=2, p99_latency_s=0.020, cosine_mean=0.55, cosine_count=400)


def _ch(**kw) -> VersionStats:
    base = dict(requests=100, errors=0, p99_latency_s=0.021, cosine_mean=0.55, cosine_count=30)
    return VersionStats(2, **{**base, **kw})


def test_decision_steps_then_promotes_a_challenger_that_holds():
    d = decide(CHAMP, _ch(), T, share=0.05)
    assert (d.action, d.share) == ("step", 0.2) and "step to 20%" in d.reason
    d = decide(CHAMP, _ch(), T, share=0.2)
    assert (d.action, d.share) == ("promote", 1.0)
    assert d.numbers["challenger"]["requests"] == 100 and d.numbers["thresholds"]["min_requests"] == 100


@pytest.mark.parametrize("kw, words", [
    (dict(cosine_mean=0.50), "online cosine 0.5000 vs champion 0.5500"),
    (dict(errors=5), "error rate 5.00%"),
    (dict(p99_latency_s=0.050), "p99 latency 50.0 ms vs champion 20.0 ms"),
])
def test_decision_rolls_back_a_worse_challenger_with_the_numbers(kw, words):
    d = decide(CHAMP, _ch(**kw), T, share=0.2)
    assert d.action == "rollback" and d.share == 0.0
    assert words in d.reason, d.reason


def test_decision_holds_until_both_sides_have_the_minimum_samples():
    d = decide(CHAMP, _ch(requests=99, cosine_count=29), T, share=0.05)
    assert d.action == "hold" and d.share == 0.05
    assert "requests 99/1900" in d.reason and "feedback 29/400" in d.reason
    # clearly worse but too few samples to judge: hold, never step
    assert decide(CHAMP, _ch(requests=20, errors=20), T, share=0.05).action == "hold"
    # without feedback required, cosine is not judged
    no_fb = Thresholds(min_requests=100, min_feedback=0)
    assert decide(CHAMP, _ch(cosine_count=0, cosine_mean=None), no_fb, share=0.05).action == "step"


def test_client_buckets_are_sticky_and_nested():
    keys = [f"user-{i}" for i in range(4000)]
    places = [bucket(k, "m/v7") for k in keys]
    assert places == [bucket(k, "m/v7") for k in keys]
    in5 = {k for k, p in zip(keys, places) if p < 0.05}
    in20 = {k for k, p in zip(keys, places) if p < 0.20}
    assert in5 <= in20 and 0.03 < len(in5) / 4000 < 0.07 and 0.17 < len(in20) / 4000 < 0.23
    assert [bucket(k, "m/v8") for k in keys[:50]] != places[:50]  # another rollout, another cohort


def test_plan_and_state_tags():
    assert check_plan([0.1, 0.5, 1]) == (0.1, 0.5, 1.0)
    for bad in ([0.2, 0.1, 1.0], [0.05, 0.2], [0, 1.0], []):
        with pytest.raises(ValueError, match="increasing shares"):
            check_plan(bad)
    st = state_from_tags("m", {TAG_STATUS: "active", TAG_CHALLENGER: "3",
                                       TAG_CHAMPION: "2", TAG_SHARE: "0.2", TAG_STEP: "1",
                                       TAG_PLAN: "[0.05, 0.2, 1.0]", TAG_STEP_STARTED_AT: "t"})
    assert st.active and st.share_of(3) == 0.2 and st.share_of(2) == pytest.approx(0.8) and st.window == "v3/step1/t"
    assert not state_from_tags("m", {}).active


# --- the flow against a real service ---------------------------------------------------------------


@pytest.fixture(scope="module")
def versions(small_dataset: Path, session_data_dir: Path, prefect_harness):
    """A champion and a challenger (tiny amn models, one epoch); gates recorded as passed."""
    from flows.train_model import train_model
    from lvm_core.tracking.setup import configure_tracking
    from lvm_core.tracking.promotion import promote

    out = []
    for lr in (1e-4, 1e-3):
        r = train_model(data=str(small_dataset), arch="amn", epochs=1, lr=lr, data_dir=str(session_data_dir),
                        registered_name=NAME, hidden=16, mlp_hidden=32)
        out.append(r["version"])
    configure_tracking(session_data_dir)
    for v in out:
        mark_gates(NAME, v, passed=True)
    promote(NAME, out[0])
    return out


@pytest.fixture(scope="module")
def service(versions, session_data_dir: Path):
    from lvm_core.serving.settings import ServeSettings
    from lvm_core.serving.app import create_app

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

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


FAST = Thresholds(min_requests=15, min_feedback=10, max_error_rate_increase=0.05, max_p99_ratio=20.0, p99_slack_s=2.0,
                  max_cosine_drop=0.2)


def test_worse_challenger_is_rolled_back_and_alerted(service, versions, session_data_dir: Path,
                                                     webhook_receiver: WebhookReceiver, monkeypatch):  # noqa: F811
    from flows.hooks import ALERT_URL_ENV
    from flows.rollout import rollout_dedup_key, staged_rollout
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
    from lvm_core.tracking.references import load_registered_model, current_champion
    from lvm_core.serving.holder import ModelHolder
    from lvm_core.serving.settings import ServeSettings
    from lvm_core.serving.app import create_app

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


def test_challenger_that_holds_is_promoted(service, versions, session_data_dir: Path):
    from flows.rollout import staged_rollout
    from lvm_core.tracking.promotion import rollback
    from lvm_core.tracking.references import current_champion

    client, app = service
    champion, challenger = versions  # the challenger rolled back above, started again
    with Traffic(str(client.base_url), champion, "same") as traffic:
        out = staged_rollout(name=NAME, challenger=challenger, service_urls=[str(client.base_url)], step_seconds=3,
                             check_seconds=0.5, plan=[0.5, 1.0], thresholds=FAST, data_dir=str(session_data_dir))
    assert not traffic.failures, traffic.failures[:3]
    assert out["outcome"] == "promoted", out["decisions"]
    assert out["decisions"][-1]["action"] == "promote" and traffic.seen.get(challenger, 0) > 0
    assert current_champion(NAME) == challenger and read_state(NAME).status == "promoted"
    wait_until(lambda: app.state.holder.current.model.version == challenger and app.state.holder.challenger is None,
               what="the service to serve the promoted challenger alone")
    rollback(NAME)  # back to the first champion for the next test
    wait_until(lambda: app.state.holder.current.model.version == champion, what="the rollback to be served")


def test_gate_failed_version_cannot_be_started(service, versions, session_data_dir: Path):
    from typer.testing import CliRunner

    from flows.cli import app as cli
    from lvm_core.tracking.setup import configure_tracking
    from lvm_core.tracking.tags import TAG_INCOMPLETE
    from lvm_core.tracking.references import current_champion

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
