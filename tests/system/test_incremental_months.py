"""Two consecutive monthly snapshots through `lvm build`: the second month copies the chunks and vectors of its
unchanged articles from the first month's dataset and equals a `--cold` build of it (same content hash); killed
mid-build it reruns to that dataset; `lvm gc` keeps every work folder while a build runs and, afterwards, removes
them without breaking a published dataset; a previous dataset with another chunker is refused in one line and
nothing is published.

Snapshots: the sample's first 10 articles (month 1, enwiki-20260101), then the same with 2 edited, 1 removed and
2 added (month 2, enwiki-20260201), as JSONL (tests/fixtures/months.py); chunks of 80-160 words, encoded by the
named `hash-test` encoder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lvm_core.contracts.layout import DatasetPaths, datasets_root
from tests.fixtures.builds import SMALL_BUILD_THRESHOLDS
from tests.fixtures.month_articles import Months, two_months
from tests.fixtures.paths import REPO
from tests.fixtures.prefect_server import seed_prefect_db
from tests.fixtures.processes import end_session

pytestmark = pytest.mark.slow

MONTH1, MONTH2 = "enwiki-20260101", "enwiki-20260201"
# Parity on a few articles means nothing. The subject is what a month reuses, not the encoding: the named test
# encoder (its own fingerprint, through the same embed steps and cache); README's walkthrough uses the real one.
THRESHOLDS = [x for name, value in SMALL_BUILD_THRESHOLDS.items() for x in ("--threshold", f"{name}={value}")]
OPTIONS = ["--min-words", "80", "--max-words", "160", "--encoder", "hash-test", *THRESHOLDS]
MARKER_TIMEOUT_S = 600  # server start and ingest on a busy 2-core machine


def _lvm(*args: str) -> tuple[int, str]:
    from flows.cli import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def _build(data_dir: Path, source: Path, snapshot_id: str, *extra: str) -> tuple[int, str]:
    return _lvm("build", "--source", str(source), "--snapshot-id", snapshot_id, "--data-dir", str(data_dir),
                *OPTIONS, *extra)


def _manifest(data_dir: Path, dataset_id: str) -> dict:
    return json.loads(DatasetPaths(datasets_root(data_dir) / dataset_id).manifest.read_text())




def _hung_build(root: Path, months: Months) -> subprocess.Popen:
    """Month 2's `lvm build` in its own session, stopped inside its first chunk shard (`hang@chunk`)."""
    seed_prefect_db(root / "prefect" / "prefect.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LVM_FAULT"))}
    env.update(PREFECT_HOME=str(root / "prefect"), PYTHONPATH=str(REPO), LVM_NO_PROGRESS="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               LVM_FAULT_INJECT="hang@chunk", LVM_FAULT_MARKER=str(root / "fault-marker"))
    args = ["build", "--source", str(months.second), "--snapshot-id", MONTH2, "--data-dir", str(root / "data"),
            *OPTIONS]
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                            stdout=(root / "hung.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def months_built(prefect_harness, tmp_path_factory) -> dict:
    """Month 1 built; month 2 hung in its chunk step while `lvm gc` runs, killed, built again, then --cold."""
    root = tmp_path_factory.mktemp("months")
    data_dir = root / "data"
    months = two_months(root / "snapshots", n=10)
    out: dict = {"root": root, "data_dir": data_dir, "months": months}
    out["month1"] = _build(data_dir, months.first, MONTH1)
    assert out["month1"][0] == 0, out["month1"][1]
    hung = _hung_build(root, months)
    try:
        deadline = time.monotonic() + MARKER_TIMEOUT_S
        while not (root / "fault-marker").exists():
            assert hung.poll() is None, (root / "hung.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the build did not reach its chunk step"
            time.sleep(0.5)
        out["work_while_running"] = sorted(p.name for p in (data_dir / "work").iterdir())
        out["gc_while_running"] = _lvm("gc", "--data-dir", str(data_dir))
        out["work_after_gc"] = sorted(p.name for p in (data_dir / "work").iterdir())
    finally:
        os.killpg(hung.pid, signal.SIGKILL)  # a killed incremental build, as an OOM kill leaves it
        hung.wait()
        end_session(hung.pid)
    out["published_after_kill"] = (datasets_root(data_dir) / MONTH2).exists()
    out["month2"] = _build(data_dir, months.second, MONTH2)
    assert out["month2"][0] == 0, out["month2"][1]
    out["incremental"] = _manifest(data_dir, MONTH2)
    out["cold"] = _build(data_dir, months.second, MONTH2, "--cold")
    assert out["cold"][0] == 0, out["cold"][1]
    out["cold_manifest"] = _manifest(data_dir, MONTH2)
    return out


def test_gc_keeps_the_work_of_a_running_build(months_built: dict):
    code, output = months_built["gc_while_running"]
    assert code == 0 and "a build is running" in output, output
    assert months_built["work_after_gc"] == months_built["work_while_running"]
    assert any(n.startswith("chunk-") for n in months_built["work_while_running"])
    assert not months_built["published_after_kill"]


def test_unchanged_articles_are_neither_chunked_nor_encoded_again(months_built: dict):
    months: Months = months_built["months"]
    m = months_built["incremental"]
    reuse = m["lineage"]["reuse"]
    assert reuse["previous_dataset"] == MONTH1 and reuse["cold"] is False
    assert reuse["articles_reused"] == len(months.unchanged) == 7
    assert reuse["articles_chunked"] == len(months.edited) + len(months.added) == 4
    first = pq.read_table(DatasetPaths(datasets_root(months_built["data_dir"]) / MONTH1).chunks,
                          columns=["article_id"]).column("article_id").to_numpy()
    assert reuse["chunks_reused"] == int(np.isin(first, months.unchanged).sum()) > 0
    assert reuse["chunks_reused"] + reuse["chunks_chunked"] == m["counts"]["chunks"]
    emb = m["embedding"]
    assert emb["n_copied"] == reuse["vectors_copied"] == reuse["chunks_reused"]  # not looked up, not encoded
    assert emb["n_reused"] + emb["n_encoded"] <= reuse["chunks_chunked"]
    assert m["counts"]["articles"] == 11 and m["lineage"]["previous_dataset"] == MONTH1


def test_incremental_month_equals_a_cold_build(months_built: dict):
    inc, cold = months_built["incremental"], months_built["cold_manifest"]
    assert cold["content_hash"] == inc["content_hash"]
    reuse = cold["lineage"]["reuse"]
    assert reuse["previous_dataset"] is None and reuse["cold"] is True and reuse["articles_reused"] == 0
    assert cold["embedding"]["n_copied"] == 0 and cold["embedding"]["n_encoded"] == 0  # the cache is still read
    assert all(cold["shards"][s]["reused"] == 0 for s in ("ingest", "chunk", "embed"))  # nothing from work/
    assert "reused from" in months_built["cold"][1]


def test_gc_after_the_builds_leaves_published_datasets_whole(months_built: dict):
    from lvm_core.contracts.manifest import read_manifest
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.build.publish import content_hash

    data_dir = months_built["data_dir"]
    code, output = _lvm("gc", "--data-dir", str(data_dir))
    assert code == 0 and "a build is running" not in output, output
    assert [p.name for p in (data_dir / "work").iterdir()] == [".lock"]
    assert int(output.strip().splitlines()[-1]) > 0  # bytes freed
    for dataset_id in (MONTH1, MONTH2):
        root = datasets_root(data_dir) / dataset_id
        manifest = read_manifest(DatasetPaths(root).manifest)
        assert content_hash(manifest, root) == manifest.content_hash
        assert load_dataset(root).manifest.counts.chunks == manifest.counts.chunks


def test_previous_dataset_with_another_chunker_is_refused_in_one_line(months_built: dict):
    data_dir = months_built["data_dir"]
    ready = (datasets_root(data_dir) / MONTH2 / "READY").read_text()
    code, output = _build(data_dir, months_built["months"].second, MONTH2, "--min-words", "60")
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "--cold" in errors[0] and "min_words 80 here 60" in errors[0], output
    assert (datasets_root(data_dir) / MONTH2 / "READY").read_text() == ready
    assert not list(datasets_root(data_dir).glob(".staging-*")) and not (datasets_root(data_dir) / "_failed").exists()
