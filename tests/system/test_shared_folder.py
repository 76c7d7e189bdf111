"""Machines that share only the data folder: each keeps its SQLite cache on its own disk (LVM_CACHE_DIR), and
another machine reuses the shards they left in the shared work folder, not their caches.

Two Dask worker processes stand for two machines: the same data folder, a local cache folder each.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cluster import sharded_build, worker_cluster

pytestmark = pytest.mark.slow




@pytest.fixture
def two_machines(tmp_path: Path, prefect_harness) -> Iterator[tuple[str, dict[str, Path]]]:
    """A cluster of two worker processes with a local cache folder each (as `LVM_CACHE_DIR` on two machines)."""
    caches = {name: tmp_path / f"local-{name}" for name in ("a", "b")}
    with worker_cluster({name: {"LVM_CACHE_DIR": str(folder)} for name, folder in caches.items()}) as address:
        yield address, caches


def test_shared_data_folder_local_caches_and_reuse_from_shared_work(two_machines, dump: Path, tmp_path: Path,
                                                                    monkeypatch):
    from flows.infra.runners import shard_task_runner

    address, caches = two_machines
    shared = tmp_path / "shared"
    first = sharded_build(dump, shared, runner=shard_task_runner(address=address))
    assert first["shards"]["embed"]["reused"] == 0 and first["embedding"]["n_encoded"] > 0
    assert not list(shared.glob("cache/embeddings/*/*")), "a SQLite cache was written on the shared folder"
    assert [db for c in caches.values() for db in c.glob("embeddings/*/vectors.sqlite")]
    # a third machine, its own empty cache: every shard comes from the shared work folder, nothing is encoded
    # (the published dataset goes first, else the build would return it as it is: same inputs, same build key)
    shutil.rmtree(shared / "datasets")
    monkeypatch.setenv("LVM_CACHE_DIR", str(tmp_path / "local-c"))
    again = sharded_build(dump, shared)
    embed = again["shards"]["embed"]
    assert embed["n"] > 1 and embed["reused"] == embed["n"] and again["embedding"]["n_encoded"] == 0
    assert not list((tmp_path / "local-c").glob("embeddings/*/vectors.sqlite"))
    assert again["content_hash"] == first["content_hash"]
