"""Embed shards routed by Dask worker resources: only the worker that declares them runs them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect import flow, task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local cluster of two in-process workers, one of which declares GPU=1 (as `dask worker --resources GPU=1`)."""
    from distributed import LocalCluster, Worker

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0",
                      protocol="tcp://", host="127.0.0.1") as local:
        local.worker_spec["gpu"] = {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}, "name": "gpu"}}
        local.sync(local._correct_state)
        local.wait_for_workers(2)
        yield local.scheduler_address


@task
def where(shard: int) -> str:
    """Which worker ran this shard."""
    from distributed import get_worker

    return str(get_worker().name)


@flow
def placed(n: int) -> list[str]:
    from flows.infra.runners import embed_placement

    with embed_placement():
        futures = where.map(range(n))
    return [f.result() for f in futures]


def test_embed_shards_run_only_on_the_worker_declaring_the_resources(cluster: str, prefect_harness):
    from flows.infra.runners import shard_task_runner

    assert placed.with_options(task_runner=shard_task_runner(address=cluster, resources="GPU=1"))(6) == ["gpu"] * 6
    # without resources both workers take shards
    assert set(placed.with_options(task_runner=shard_task_runner(address=cluster))(12)) <= {"gpu", "0"}


def test_a_cluster_without_a_worker_declaring_the_resources_is_refused(cluster: str, prefect_harness):
    from flows.infra.runners import ClusterSetupError, shard_task_runner

    with pytest.raises(ClusterSetupError, match=r"no worker of the Dask cluster \(2 worker\(s\)\) declares .*TPU=1"):
        placed.with_options(task_runner=shard_task_runner(address=cluster, resources="TPU=1"))(2)
