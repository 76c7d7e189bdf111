"""Failure alerts: the in-flow hook posts a PagerDuty event to a local receiver, stays silent without a URL and
never masks the failure.

The automation's webhook body is checked without a server in tests/integration/deployments/test_setup.py, and
end to end (server event -> trigger -> webhook) against a real server in tests/system/test_prefect_server.py.
"""

from __future__ import annotations

import pytest

from tests.fixtures.prefect_server import WebhookReceiver, free_port

# isort: split
# (prefect_server puts the repository root on sys.path: `deployments` is not an installed package.)
from flows.infra.hooks import alert_on_failure, pagerduty_event
from lvm_core.runtime.environment import ALERT_URL_ENV, ROUTING_KEY_ENV


@pytest.fixture()
def prefect_api(prefect_harness):
    """The session's temporary Prefect API (conftest) for the tiny flows below."""
    return prefect_harness


def _failing_flow():
    from prefect import flow

    @flow(name="lvm-alert-probe", on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
    def lvm_alert_probe(reason: str) -> None:
        raise ValueError(f"deliberate failure: {reason}")

    return lvm_alert_probe


def test_failing_flow_posts_pagerduty_event(prefect_api, webhook_receiver: WebhookReceiver, monkeypatch) -> None:
    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    monkeypatch.setenv(ROUTING_KEY_ENV, "R0UTING-KEY")
    state = _failing_flow()(reason='quote " and\nnewline', return_state=True)
    assert state.is_failed()

    [request] = webhook_receiver.wait_for(1, timeout=30)
    assert request.path == "/v2/enqueue"
    assert request.headers["Content-Type"].startswith("application/json")
    event = request.json()
    flow_run_id = state.state_details.flow_run_id
    assert event == pagerduty_event(
        flow_name="lvm-alert-probe",
        flow_run_id=flow_run_id,
        flow_run_name=event["payload"]["custom_details"]["flow_run_name"],
        state_name="Failed",
        deployment=None,
        message=state.message,
        routing_key="R0UTING-KEY",
    )
    assert event["event_action"] == "trigger" and event["payload"]["severity"] == "error"
    assert event["dedup_key"] == f"prefect-flow-run-{flow_run_id}"
    assert "deliberate failure" in event["payload"]["custom_details"]["message"]
    assert len(webhook_receiver.wait_for(2, timeout=2)) == 1  # exactly one alert per failure


def test_hook_is_silent_without_url_and_never_masks_the_failure(prefect_api, webhook_receiver, monkeypatch) -> None:
    monkeypatch.delenv(ALERT_URL_ENV, raising=False)
    state = _failing_flow()(reason="no url", return_state=True)
    assert state.is_failed() and webhook_receiver.wait_for(1, timeout=2) == []

    # A receiver that is down: the alert is lost (logged) but the run still reports its own error.
    monkeypatch.setenv(ALERT_URL_ENV, f"http://127.0.0.1:{free_port()}/down")
    state = _failing_flow()(reason="receiver down", return_state=True)
    assert state.is_failed() and "deliberate failure: receiver down" in state.message


def test_successful_flow_sends_nothing(prefect_api, webhook_receiver, monkeypatch) -> None:
    from prefect import flow

    @flow(name="lvm-alert-ok", on_failure=[alert_on_failure])
    def ok() -> int:
        return 1

    monkeypatch.setenv(ALERT_URL_ENV, webhook_receiver.url)
    assert ok() == 1
    assert webhook_receiver.wait_for(1, timeout=2) == []
