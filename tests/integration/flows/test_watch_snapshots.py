"""The watch flow against the session's temporary Prefect API: one pipeline run per new snapshot, never twice."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lvm_core.contracts.layout import WATCH_STATE_FILE
from lvm_core.snapshots.state import BuiltSnapshots
from tests.fixtures.snapshots import add_dump_folder, dump_name


@pytest.fixture(scope="module")
def prefect_api(prefect_harness):
    """The session's temporary Prefect API with a stand-in pipeline deployment to trigger."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("lvm-test-pipeline")
        deployment_id = client.create_deployment(flow_id=flow_id, name=f"pipeline-{uuid.uuid4().hex[:8]}")
        name = client.read_deployment(deployment_id).name
    return {"deployment": f"lvm-test-pipeline/{name}", "deployment_id": deployment_id}


def _runs_of(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=100,
        )


def test_watch_flow_triggers_exactly_once_per_new_snapshot(tmp_path: Path, prefect_api) -> None:
    from prefect.artifacts import Artifact

    from flows.watch_snapshots import ARTIFACT_KEY, watch_snapshots

    index, data_dir = tmp_path / "enwiki", tmp_path / "data"
    add_dump_folder(index, "20240501")
    add_dump_folder(index, "20240601")
    add_dump_folder(index, "20240701", status="in-progress")
    kwargs = dict(source=str(index), data_dir=str(data_dir), deployment_name=prefect_api["deployment"], limit_articles=8)

    dry = watch_snapshots(**kwargs, dry_run=True)
    assert dry.would_trigger == ["enwiki-20240601"] and dry.triggered == []
    assert _runs_of(prefect_api["deployment_id"]) == []
    assert not (data_dir / WATCH_STATE_FILE).exists()

    report = watch_snapshots(**kwargs)
    assert [t.snapshot_id for t in report.triggered] == ["enwiki-20240601"]
    runs = _runs_of(prefect_api["deployment_id"])
    assert len(runs) == 1
    assert runs[0].parameters == {
        "source": str(index / "20240601" / dump_name("20240601")),
        "snapshot_id": "enwiki-20240601",
        "data_dir": str(data_dir),
        "limit_articles": 8,
    }
    assert str(runs[0].id) == report.triggered[0].flow_run_id
    assert "snapshot:enwiki-20240601" in runs[0].tags
    state = BuiltSnapshots.load(data_dir)
    assert state.triggered["enwiki-20240601"].flow_run_id == str(runs[0].id)

    again = watch_snapshots(**kwargs)
    assert again.triggered == [] and again.already_triggered == ["enwiki-20240601"]
    assert len(_runs_of(prefect_api["deployment_id"])) == 1

    add_dump_folder(index, "20240801")
    newer = watch_snapshots(**kwargs)
    assert [t.snapshot_id for t in newer.triggered] == ["enwiki-20240801"]
    assert len(_runs_of(prefect_api["deployment_id"])) == 2

    artifact = Artifact.get(ARTIFACT_KEY)
    assert artifact is not None and artifact.type == "markdown"
    markdown = artifact.data
    assert "enwiki-20240801" in markdown and "triggered (flow run" in markdown
    assert "articlesdump: in-progress" in markdown


def test_watch_flow_without_source_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.watch_snapshots import resolve_watch_source

    monkeypatch.delenv("LVM_SNAPSHOT_SOURCE", raising=False)
    with pytest.raises(ValueError, match="LVM_SNAPSHOT_SOURCE"):
        resolve_watch_source(None)
    monkeypatch.setenv("LVM_SNAPSHOT_SOURCE", "/dumps/enwiki")
    assert resolve_watch_source(None) == "/dumps/enwiki"
    assert resolve_watch_source("/other") == "/other"
