"""The sharded build: shards on Dask give the dataset of the default runner, a killed worker loses and
duplicates nothing, a corrupt shard is named and publishes nothing, a rerun redoes only missing shards.

Source: the sample as a multistream dump (40 pages per bz2 stream, with its index), cut into one source
shard per stream, its first 10 articles in article files of 3.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lvm_core.contracts.build_options import BuildOptions
from lvm_core.contracts.layout import MANIFEST_FILE, READY_MARKER, DatasetPaths, datasets_root
from tests.fixtures.builds import SHARDED_BUILD_ARTICLES, SHARDED_BUILD_OPTIONS

pytestmark = pytest.mark.slow




def _build(dump: Path, data_dir: Path, runner=None, **kw):
    from flows.build_dataset import build_dataset

    flow = build_dataset if runner is None else build_dataset.with_options(task_runner=runner)
    return flow(source=str(dump), data_dir=str(data_dir), limit_articles=SHARDED_BUILD_ARTICLES,
                options=BuildOptions(**SHARDED_BUILD_OPTIONS), **kw)


def _manifest(path: Path | str) -> dict:
    return json.loads((Path(path) / MANIFEST_FILE).read_text())


@pytest.fixture(scope="module")
def default_build(prefect_harness, dump: Path, tmp_path_factory, request) -> dict:
    """A default-runner build that fails at its second embed shard, then the rerun that completes it."""
    from lvm_core.data.build.embed import embed_shard_step

    data_dir = tmp_path_factory.mktemp("default")
    real = embed_shard_step
    calls: list[str] = []

    def fail_after_first(chunks_file, *args, **kwargs):
        calls.append(chunks_file)
        if len(calls) > 1:
            raise ValueError(f"{chunks_file}: simulated failure")
        return real(chunks_file, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr("tasks.dataset.embed_shard_step", fail_after_first)
    try:
        with pytest.raises(ValueError, match="simulated failure"):
            _build(dump, data_dir)
    finally:
        mp.undo()
    root = datasets_root(data_dir)
    published = [p for p in root.iterdir() if not p.name.startswith((".", "_"))] if root.exists() else []
    path = _build(dump, data_dir)
    return {"data_dir": data_dir, "path": Path(path), "failed_published": published, "first_shard": calls[0]}


def test_rerun_after_a_failure_redoes_only_missing_shards(default_build: dict):
    assert default_build["failed_published"] == []
    m = _manifest(default_build["path"])
    shards = m["shards"]
    assert shards["n"] >= 3 and shards["ingest"]["n"] == shards["n"]
    assert shards["chunk"]["n"] == shards["embed"]["n"] >= 3
    # nothing parsed or chunked again; of the embed shards only the one finished before the failure is kept
    assert shards["ingest"]["reused"] == shards["ingest"]["n"]
    assert shards["chunk"]["reused"] == shards["chunk"]["n"]
    assert shards["embed"]["reused"] == 1
    first = shards["embed"]["per_shard"][0]
    assert m["embedding"]["n_total"] == m["counts"]["chunks"] == shards["chunk"]["chunks"]
    assert m["embedding"]["n_reused"] >= first and m["embedding"]["n_encoded"] <= m["counts"]["chunks"] - first
    assert m["counts"]["articles"] == SHARDED_BUILD_ARTICLES == shards["articles"]["articles"]


def test_sharded_build_keeps_source_order_and_first_n(default_build: dict, dump: Path):
    import pyarrow.parquet as pq

    from lvm_core.data.ingest.sources import read_articles

    expected = [a.article_id for a in read_articles(dump, limit=SHARDED_BUILD_ARTICLES)]
    got = pq.read_table(DatasetPaths(default_build["path"]).articles).column("article_id").to_pylist()
    assert got == expected


def test_dask_build_with_a_worker_killed_mid_embed_equals_the_default_build(default_build: dict, dump: Path, tmp_path):
    """`--workers 2` (a local cluster the runner starts) with one worker SIGKILLed while it embeds a shard: the
    shard is redone on another worker, and the dataset is the default runner's, vector for vector."""
    from distributed import Client, Scheduler
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.infra.runners import shard_task_runner

    killed: list[tuple[str, int]] = []
    stop = threading.Event()

    def kill_an_embedding_worker() -> None:
        while not stop.is_set() and not (schedulers := [s for s in Scheduler._instances if s.status.name == "running"]):
            time.sleep(0.05)  # the runner's local cluster runs its scheduler in this process
        if stop.is_set():
            return
        with Client(schedulers[0].address, set_as_default=False) as client:
            while not stop.is_set():
                busy = [w for w, keys in client.processing().items() if any("embed" in str(k) for k in keys)]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append((busy[0], pid))
                    return
                time.sleep(0.05)

    watcher = threading.Thread(target=kill_an_embedding_worker, daemon=True)
    watcher.start()
    try:
        state = _build(dump, tmp_path / "dask", runner=shard_task_runner(workers=2), return_state=True)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed during the embed map"
    path = Path(state.result())
    ref, got = _manifest(default_build["path"]), _manifest(path)
    assert got["shards"]["embed"]["reused"] == 0 and got["embedding"]["n_encoded"] > 0  # really encoded there
    assert got["counts"] == ref["counts"] and got["shards"]["embed"]["per_shard"] == ref["shards"]["embed"]["per_shard"]
    assert got["content_hash"] == ref["content_hash"]
    a = np.load(DatasetPaths(path).embeddings)
    b = np.load(DatasetPaths(default_build["path"]).embeddings)
    assert np.array_equal(a, b)
    # The workers' task runs are in the flow's API (a worker with a temporary API of its own hides them),
    # the restarted worker's too.
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    embeds = [r for r in runs if r.name.startswith("embed-")]
    assert len(embeds) == got["shards"]["embed"]["n"] and all(r.state.is_completed() for r in embeds), [
        (r.name, r.state.type) for r in embeds]


def test_corrupt_shard_is_named_and_nothing_is_published(default_build: dict, dump: Path, tmp_path):
    import bz2

    good = default_build["path"]
    good_ready = (good / READY_MARKER).read_text()
    index = dump.with_name(dump.name.replace(".xml.bz2", "-index.txt.bz2"))
    with bz2.open(index, "rt") as fh:
        offsets = sorted({int(line.split(":", 1)[0]) for line in fh})
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / dump.name
    data = bytearray(dump.read_bytes())
    start = offsets[2]  # the third stream, i.e. source shard 3
    data[start + 100:start + 400] = b"\0" * 300
    bad.write_bytes(bytes(data))
    (bad_dir / index.name).write_bytes(index.read_bytes())

    from lvm_core.data.ingest.shards.plan import ShardError

    with pytest.raises(ShardError) as failed:
        _build(bad, default_build["data_dir"])
    message = str(failed.value).splitlines()[0]
    assert "shard 3/" in message and bad.name in message, message
    assert (good / READY_MARKER).read_text() == good_ready
    root = datasets_root(default_build["data_dir"])
    assert [p.name for p in root.iterdir() if not p.name.startswith((".", "_"))] == [good.name]
    assert not list(root.glob(".staging-*"))
