"""The benchmarks' own bookkeeping: stage times read from a build's log, and the incremental benchmark's
checks failing with a message on the builds they exist to catch."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.bench_incremental import _checks
from bench.buildrun import BuildRun, _stage_peaks, stage_times

LOG = """\
23:59:58.000 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8047
23:59:59.000 | INFO    | Flow run 'build-x' - Beginning flow run 'build-x' for flow 'build_dataset'
23:59:59.200 | INFO    | Task run 'resolve-source-/tmp/d/enwiki-20260101-pages.xml.bz2' - Finished in state Completed()
23:59:59.300 | INFO    | Task run 'clean-abandoned-builds-10e' - Finished in state Completed()
23:59:59.500 | INFO    | Task run 'plan-shards-enwiki-20260101' - Finished in state Completed()
00:00:02.000 | INFO    | Task run 'ingest-enwiki-20260101-0' - ingest shard 1/2
00:00:03.000 | INFO    | Task run 'ingest-enwiki-20260101-0' - Finished in state Completed()
00:00:04.500 | INFO    | Task run 'ingest-enwiki-20260101-1' - Finished in state Completed()
00:00:05.000 | INFO    | Task run 'dedup-enwiki-20260101' - Finished in state Completed()
00:00:09.000 | INFO    | Task run 'analyse-enwiki-20260101' - Finished in state Completed()
00:00:10.000 | INFO    | Flow run 'build-x' - Finished in state Completed()
"""


def test_stage_times_run_from_the_end_of_the_stage_before_across_midnight() -> None:
    flow, stages = stage_times(LOG, "enwiki-20260101")
    assert flow == pytest.approx(11.0)
    assert stages == pytest.approx({"resolve-source": 0.2, "clean-abandoned-builds": 0.1, "plan-shards": 0.2,
                                    "ingest": 5.0, "dedup": 0.5, "analyse": 4.0})


def test_stage_peaks_take_the_polled_rss_within_each_stage() -> None:
    start = time.mktime((2026, 1, 1, 23, 59, 58, 0, 0, -1))  # local time, as the log's stamps
    samples = [(start + 1.0, 100 * 1024), (start + 4.0, 500 * 1024), (start + 9.0, 300 * 1024)]
    peaks = _stage_peaks(LOG, "enwiki-20260101", samples)
    assert peaks["ingest"] == 500 and peaks["analyse"] == 300 and peaks["dedup"] == 0


def _run(root: Path, splits: dict[int, str], content_hash: str, lineage: dict | None, reused: int = 0) -> BuildRun:
    root.mkdir(parents=True)
    pq.write_table(pa.table({"article_id": list(splits), "split": list(splits.values())}), root / "splits.parquet")
    manifest = {"counts": {"chunks": 10}, "content_hash": content_hash, "lineage": lineage,
                "embedding": {"n_reused": reused}}
    return BuildRun(root, manifest, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_incremental_checks_name_missing_lineage_moved_splits_and_other_datasets(tmp_path) -> None:
    lineage = {"reuse": {}, "split_registry": {}}
    month1 = _run(tmp_path / "m1", {1: "train", 2: "test", 3: "val"}, "h1", None)
    good = _run(tmp_path / "inc", {1: "train", 2: "test", 4: "ood"}, "h2", {**lineage, "cold": False}, reused=9)
    cold = _run(tmp_path / "cold", {1: "train", 2: "test", 4: "ood"}, "h2", {**lineage, "cold": True})
    assert _checks(month1, good, cold, cold) == []
    # a cold build from an empty cache may differ in its vectors' last bits: only the cached one must be equal
    fresh = _run(tmp_path / "fresh", {1: "train", 2: "test", 4: "ood"}, "h9", {**lineage, "cold": True})
    assert _checks(month1, good, fresh, cold) == []
    warm_lineage = {"reuse": {"vectors_copied": 2, "articles_reused": 1}, "split_registry": {}, "cold": False}
    warm = _run(tmp_path / "warm", {1: "train", 2: "test", 4: "ood"}, "h2", warm_lineage, reused=3)
    assert _checks(month1, good, warm, cold) == [
        "the cold build took 3 articles/vectors from the previous dataset; it must take none",
        "lineage['cold'] of the cold build does not say it was cold",
    ]

    bare = _run(tmp_path / "bare", {1: "train", 2: "val"}, "h3", None)
    problems = _checks(month1, bare, cold, cold)
    assert any("no lineage['reuse']" in p for p in problems)
    assert any("no lineage['split_registry']" in p for p in problems)
    assert any("content_hash differs" in p for p in problems)
    assert any("1 article(s) changed split" in p and "[2]" in p for p in problems)
    assert any("different splits" in p for p in problems)
