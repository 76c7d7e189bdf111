"""The deployment setup: the alert automation's notification rendered and sent as the server's action would
(without a server), the automation file's shape, and bad config files refused."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from deployments.setup import ALERT_BLOCK_NAME, PAGERDUTY_FORM_TEMPLATE, alert_block, load_automations
from flows.infra.hooks import dedup_key, pagerduty_event
from tests.fixtures.prefect_server import WebhookReceiver


def _render_automation(flow_name: str, run_name: str, state_name: str, message: str, deployment_name: str | None):
    """Render the automation's subject/body exactly as the server's action does, from server objects."""
    from prefect.server.events.actions import JinjaTemplateAction
    from prefect.server.schemas.core import Deployment, Flow, FlowRun
    from prefect.server.schemas.states import State, StateType
    from prefect.server.utilities.user_templates import render_user_template

    JinjaTemplateAction._register_filters_if_needed()
    [automation] = load_automations(block_ids={f"custom-webhook/{ALERT_BLOCK_NAME}": uuid.uuid4()})
    [action] = automation.actions
    flow = Flow(name=flow_name)
    state_type = StateType.CRASHED if state_name == "Crashed" else StateType.FAILED
    flow_run = FlowRun(flow_id=flow.id, name=run_name, state=State(type=state_type, name=state_name, message=message))
    deployment = Deployment(name=deployment_name, flow_id=flow.id) if deployment_name else None
    context = {"flow": flow, "flow_run": flow_run, "deployment": deployment}

    async def render() -> tuple[str, str]:
        return await render_user_template(action.subject, context), await render_user_template(action.body, context)

    subject, body = asyncio.run(render())
    return flow_run, subject, body


@pytest.mark.parametrize(
    ("state_name", "deployment_name", "message"),
    [("Failed", "lvm-pipeline", 'Gate "val_cosine" failed:\n0.41 < 0.55'), ("Crashed", None, "")],
)
def test_automation_body_is_the_same_pagerduty_event(state_name, deployment_name, message) -> None:
    flow_run, subject, body = _render_automation("lvm_pipeline", "brave-otter", state_name, message, deployment_name)
    request = alert_block("http://127.0.0.1:9/unused", routing_key='key-with-"quote"')._build_request_args(body, subject)
    sent = json.loads(request["content"])
    assert sent == pagerduty_event(
        flow_name="lvm_pipeline",
        flow_run_id=flow_run.id,
        flow_run_name="brave-otter",
        state_name=state_name,
        deployment=deployment_name,
        message=message,
        routing_key='key-with-"quote"',
    )
    assert subject == f"LVM flow lvm_pipeline run brave-otter is {state_name}"
    assert request["headers"] == {"Content-Type": "application/json"}


def test_alert_block_delivers_to_receiver(webhook_receiver: WebhookReceiver) -> None:
    flow_run, subject, body = _render_automation("watch_snapshots", "calm-heron", "Failed", "no source", "watch-snapshots")
    alert_block(webhook_receiver.url, routing_key="abc123").notify(body=body, subject=subject)
    [request] = webhook_receiver.wait_for(1, timeout=10)
    event = request.json()
    assert event["routing_key"] == "abc123"
    assert event["dedup_key"] == dedup_key(flow_run.id)
    assert event["payload"]["custom_details"]["deployment"] == "watch-snapshots"


def test_automation_file_shape() -> None:
    [automation] = load_automations(block_ids={f"custom-webhook/{ALERT_BLOCK_NAME}": uuid.uuid4()})
    trigger = automation.trigger
    assert trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
    assert trigger.posture == "Reactive" and trigger.threshold == 1
    assert trigger.for_each == {"prefect.resource.id"}
    assert [a.type for a in automation.actions] == ["send-notification"]
    assert "{{routing_key}}" in PAGERDUTY_FORM_TEMPLATE and "{{body}}" in PAGERDUTY_FORM_TEMPLATE
    with pytest.raises(Exception, match="unknown block"):
        load_automations(block_ids={})


def test_setup_rejects_bad_config_files(tmp_path) -> None:
    from deployments.setup import SetupError, load_limits

    bad_limits = tmp_path / "limits.yaml"
    bad_limits.write_text("task_tags:\n  - tag: lvm-heavy-cpu\n    limit: many\n")
    with pytest.raises(SetupError, match=r"limits.yaml: task_tags\[0\] needs 'tag'"):
        load_limits(bad_limits)
    assert load_limits()["task_tags"] == [{"tag": "lvm-heavy-cpu", "limit": 1}]

    bad_automation = tmp_path / "automations.yaml"
    bad_automation.write_text(
        "automations:\n  - name: broken\n    trigger: {type: event, posture: Sideways}\n    actions: []\n"
    )
    with pytest.raises(SetupError, match="automation 'broken' is invalid"):
        load_automations(bad_automation)
    (tmp_path / "empty.yaml").write_text("automations: []\n")
    with pytest.raises(SetupError, match="non-empty 'automations' list"):
        load_automations(tmp_path / "empty.yaml")
