"""Machines that share only the data folder: each keeps its SQLite cache on its own disk (LVM_CACHE_DIR), and
another machine reuses the shards they left in the shared work folder, not their caches.

Two Dask worker processes stand for two machines: the same data folder, a local cache folder each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvm_core.contracts.build_options import BuildOptions
from lvm_core.contracts.layout import MANIFEST_FILE
from tests.fixtures.builds import SHARDED_BUILD_ARTICLES, SHARDED_BUILD_OPTIONS

pytestmark = pytest.mark.slow




def _build(dump: Path, data_dir: Path, runner=None) -> dict:
    from flows.build_dataset import build_dataset

    flow = build_dataset if runner is None else build_dataset.with_options(task_runner=runner)
    path = flow(source=str(dump), data_dir=str(data_dir), limit_articles=SHARDED_BUILD_ARTICLES,
                options=BuildOptions(**SHARDED_BUILD_OPTIONS))
    return json.loads((Path(path) / MANIFEST_FILE).read_text())


@pytest.fixture
def two_machines(tmp_path: Path, prefect_harness) -> Iterator[tuple[str, dict[str, Path]]]:
    """A cluster of two worker processes with a local cache folder each (as `LVM_CACHE_DIR` on two machines)."""
    from distributed import LocalCluster, Nanny
    from prefect.settings import PREFECT_API_URL

    caches = {name: tmp_path / f"local-{name}" for name in ("a", "b")}
    with LocalCluster(n_workers=0, processes=True, threads_per_worker=1, dashboard_address=":0", host="127.0.0.1") as local:
        for name, cache in caches.items():
            env = {"LVM_CACHE_DIR": str(cache), "PREFECT_API_URL": str(PREFECT_API_URL.value()), "HF_HUB_OFFLINE": "1",
                   "LVM_TEST_SESSION": os.environ["LVM_TEST_SESSION"]}
            local.worker_spec[name] = {"cls": Nanny, "options": {"nthreads": 1, "name": name, "env": env}}
        local.sync(local._correct_state)
        local.wait_for_workers(2)
        yield local.scheduler_address, caches


def test_shared_data_folder_local_caches_and_reuse_from_shared_work(two_machines, dump: Path, tmp_path: Path,
                                                                    monkeypatch):
    from flows.infra.runners import shard_task_runner

    address, caches = two_machines
    shared = tmp_path / "shared"
    first = _build(dump, shared, runner=shard_task_runner(address=address))
    assert first["shards"]["embed"]["reused"] == 0 and first["embedding"]["n_encoded"] > 0
    assert not list(shared.glob("cache/embeddings/*/*")), "a SQLite cache was written on the shared folder"
    assert [db for c in caches.values() for db in c.glob("embeddings/*/vectors.sqlite")]
    # a third machine, its own empty cache: every shard comes from the shared work folder, nothing is encoded
    monkeypatch.setenv("LVM_CACHE_DIR", str(tmp_path / "local-c"))
    again = _build(dump, shared)
    embed = again["shards"]["embed"]
    assert embed["n"] > 1 and embed["reused"] == embed["n"] and again["embedding"]["n_encoded"] == 0
    assert not list((tmp_path / "local-c").glob("embeddings/*/vectors.sqlite"))
    assert again["content_hash"] == first["content_hash"]
