"""Two consecutive monthly dumps through `lvm build`: the second month cleans only the edited and the new page
(counted in its manifest) and its articles.parquet is the one a `--cold` build of the same dump writes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lvm_core.contracts.layout import DatasetPaths, dataset_dir
from tests.fixtures.builds import SMALL_BUILD_THRESHOLDS
from tests.fixtures.months import write_months

pytestmark = pytest.mark.slow

THRESHOLDS = [arg for name, value in SMALL_BUILD_THRESHOLDS.items() for arg in ("--threshold", f"{name}={value}")]
# The subject is the ingest, not the encoding: the named test encoder (its own fingerprint, the same embed steps).
ENCODER = ["--encoder", "hash-test"]


def _build(data_dir: Path, source: Path, snapshot_id: str, *extra: str) -> dict:
    from flows.cli import app

    result = CliRunner().invoke(app, ["build", "--source", str(source), "--data-dir", str(data_dir),
                                      "--snapshot-id", snapshot_id, *ENCODER, *THRESHOLDS, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(DatasetPaths(dataset_dir(data_dir, snapshot_id)).manifest.read_text())


def test_second_month_cleans_only_changed_pages_and_equals_a_cold_build(tmp_path: Path, prefect_harness):
    months = write_months(tmp_path / "dumps", pages=80)
    data = tmp_path / "data"
    first = _build(data, months.first, "enwiki-20260101")
    n_first = first["counts"]["articles"]
    assert first["cleaner"] == "wikitext-1"
    assert first["lineage"]["reuse"]["ingest"]["articles_cleaned"] == n_first
    assert first["lineage"]["reuse"]["ingest"]["articles_reused"] == 0

    second = _build(data, months.second, "enwiki-20260201")
    counts = second["lineage"]["reuse"]["ingest"]
    assert counts["articles_cleaned"] == 2  # the edited page and the added one
    assert counts["articles_reused"] == n_first - 1
    assert counts["previous_dataset"] == "enwiki-20260101"
    assert counts["previous_content_hash"] == first["content_hash"]
    articles = DatasetPaths(dataset_dir(data, "enwiki-20260201")).articles
    incremental = articles.read_bytes()
    ids = pq.read_table(articles, columns=["article_id"]).column(0).to_pylist()
    assert months.edited_id in ids and months.added_id in ids and len(ids) == n_first + 1

    cold = _build(data, months.second, "enwiki-20260201", "--cold")
    assert cold["lineage"]["reuse"]["ingest"]["articles_cleaned"] == n_first + 1
    assert cold["lineage"]["reuse"]["ingest"]["articles_reused"] == 0
    assert articles.read_bytes() == incremental
