"""Machines that share only a work store given by URL: each keeps its own data folder (LVM_LOCAL_DATA_DIR,
with its SQLite cache), finished shards travel through the store, and the dataset is the in-process build's.

Two Dask worker processes stand for two machines: a local data folder each, none of them the coordinator's;
the only folder they share is the `file://` URL. A later build on a fresh coordinator folder takes every
shard from the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lvm_core.data.build.store import STORED_MARKER
from tests.fixtures.cluster import sharded_build, worker_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def two_machines(tmp_path: Path, prefect_harness) -> Iterator[tuple[str, dict[str, Path]]]:
    """A cluster of two worker processes, each with its own local data folder (as on two machines)."""
    local_dirs = {name: tmp_path / f"machine-{name}" for name in ("a", "b")}
    with worker_cluster({name: {"LVM_LOCAL_DATA_DIR": str(folder)} for name, folder in local_dirs.items()}) as address:
        yield address, local_dirs


def _stored(store: Path, step: str) -> set[str]:
    return {p.parent.name for p in (store / "work").glob(f"{step}-*/{STORED_MARKER}")}


def _made(folder: Path, step: str) -> set[str]:
    return {p.parent.name for p in (folder / "work").glob(f"{step}-*/done.json")}


def test_workers_sharing_only_a_url_build_the_in_process_dataset(two_machines, dump: Path, tmp_path: Path,
                                                                  monkeypatch):
    from flows.infra.runners import shard_task_runner

    address, machines = two_machines
    plain = sharded_build(dump, tmp_path / "plain")
    store = tmp_path / "store"
    url = f"file://{store}"
    coordinator = tmp_path / "coordinator"
    shared = sharded_build(dump, coordinator, runner=shard_task_runner(address=address), work_url=url)
    assert shared["content_hash"] == plain["content_hash"]
    assert shared["shards"]["embed"]["reused"] == 0 and shared["embedding"]["n_encoded"] > 0
    # every shard was made on a machine's own folder and went through the store; none in the coordinator's
    for step in ("ingest", "chunk", "embed"):
        stored = _stored(store, step)
        made = set().union(*(_made(m, step) for m in machines.values()))
        assert stored and made and made <= stored, step
    assert _stored(store, "embed") <= _made(coordinator, "embed")  # assemble fetched them from the store
    assert [db for m in machines.values() for db in m.glob("cache/embeddings/*/vectors.sqlite")]
    assert not list(coordinator.glob("cache/embeddings/*/vectors.sqlite")), "the coordinator encoded"
    assert not list(store.rglob("*.sqlite")), "a SQLite cache went to the store"
    assert (store / "datasets" / shared["dataset_id"] / STORED_MARKER).is_file()

    # a fresh coordinator folder and cache: every shard is taken from the store, nothing encoded again
    monkeypatch.setenv("LVM_WORK_URL", url)
    again = sharded_build(dump, tmp_path / "fresh")
    for step in ("ingest", "chunk", "embed"):
        assert again["shards"][step]["reused"] == again["shards"][step]["n"] > 1, step
    assert again["embedding"]["n_encoded"] == 0 and again["content_hash"] == plain["content_hash"]
