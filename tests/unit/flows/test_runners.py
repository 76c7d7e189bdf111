"""Choosing where shards run: a remote cluster needs a Prefect API its workers reach; embed resources need a cluster."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.infra.runners import ClusterSetupError, SharedApiDaskTaskRunner, parse_resources, shard_task_runner

REMOTE = "tcp://203.0.113.7:8786"  # TEST-NET-3: never this machine


@pytest.mark.parametrize("api", [None, "http://127.0.0.1:4200/api", "http://localhost:4200/api"])
def test_a_remote_cluster_without_a_reachable_prefect_api_is_refused_at_once(api):
    settings = {"updates": {PREFECT_API_URL: api}} if api else {"restore_defaults": {PREFECT_API_URL}}
    with temporary_settings(**settings), pytest.raises(ClusterSetupError) as err:
        shard_task_runner(address=REMOTE)
    msg = str(err.value)
    assert REMOTE in msg and "another machine" in msg and "PREFECT_API_URL" in msg and "\n" not in msg
    assert (api or "no PREFECT_API_URL") in msg
    assert err.value.permanent and err.value.user_facing


def test_a_remote_cluster_with_a_reachable_api_or_a_local_cluster_is_accepted():
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect-server:4200/api"}):
        assert isinstance(shard_task_runner(address=REMOTE), SharedApiDaskTaskRunner)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # the temporary API is reachable on this machine
        assert isinstance(shard_task_runner(address="tcp://127.0.0.1:8786"), SharedApiDaskTaskRunner)


def test_embed_resources_are_parsed_and_kept_on_the_flows_copy_of_the_runner(monkeypatch):
    assert parse_resources("GPU=1, MEM=4e9") == {"GPU": 1.0, "MEM": 4e9}
    assert parse_resources("") is None and parse_resources(None) is None
    for bad in ("GPU", "GPU=x", "=1", "GPU=0"):
        with pytest.raises(ValueError, match="expected NAME=AMOUNT"):
            parse_resources(bad)
    runner = shard_task_runner(address="tcp://127.0.0.1:8786", resources="GPU=1")
    assert runner.duplicate().embed_resources == {"GPU": 1.0}  # type: ignore[attr-defined]
    monkeypatch.setenv("LVM_EMBED_RESOURCES", "GPU=1")
    with pytest.raises(ValueError, match="need an existing Dask cluster"):
        shard_task_runner()
    with pytest.raises(ValueError, match="need an existing Dask cluster"):
        shard_task_runner(workers=2)
    assert shard_task_runner(address="tcp://127.0.0.1:8786").embed_resources == {"GPU": 1.0}  # type: ignore[attr-defined]
