"""The build flow end to end on a slice of the real sample: published folder, manifest, gates, cache,
and bad input that must leave the last good dataset untouched."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lvm_core.contracts.build_options import BuildOptions
from lvm_core.contracts.layout import MANIFEST_FILE, READY_MARKER, DatasetPaths, datasets_root
from tests.fixtures.builds import SMALL_BUILD_ARTICLES, SMALL_BUILD_THRESHOLDS

pytestmark = pytest.mark.slow


def test_small_build_is_published_with_manifest_and_passing_gates(small_dataset: Path):
    paths = DatasetPaths(small_dataset)
    assert paths.ready.exists()
    m = json.loads(paths.manifest.read_text())
    assert m["counts"]["articles"] == SMALL_BUILD_ARTICLES
    chunks = pq.read_table(paths.chunks)
    assert m["counts"]["chunks"] == chunks.num_rows > 200
    vectors = np.load(paths.embeddings, allow_pickle=False)
    assert vectors.shape == (chunks.num_rows, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert m["encoder"]["dim"] == 384 and m["encoder"]["fingerprint"]
    assert m["source"]["digest"] and m["snapshot_id"]
    assert m["crossing_windows"] == 0
    assert m["leakage"]["article_overlap"] == 0
    assert m["oracle_recall_at_5"] >= 0.97
    assert m["sequences"]["train"] > 0 and m["sequences"]["val"] > 0 and m["sequences"]["ood"] > 0
    assert len(m["data_direction"]) == 5
    assert m["gates_passed"] is True and all(g["passed"] for g in m["gates"].values())
    assert "oracle_recall_at_5" in m["gates"] and "crossing_windows_zero" in m["gates"]
    assert list(paths.gx.rglob("index.html")), "Data Docs were not written"
    assert (paths.plots / "coherence_histogram.png").stat().st_size > 1000


def test_no_redirect_titles_in_articles(small_dataset: Path):
    titles = pq.read_table(DatasetPaths(small_dataset).articles).column("title").to_pylist()
    with bz2.open(_sample()) as dump:
        raw = dump.read().decode()
    redirect_titles = {
        block.split("<title>")[1].split("</title>")[0]
        for block in raw.split("<page>")[1:]
        if "<redirect" in block
    }
    assert redirect_titles, "the sample is expected to contain redirects"
    assert not redirect_titles & set(titles)


def test_the_same_build_again_returns_the_published_dataset_and_a_cold_one_encodes_nothing(
        small_dataset: Path, session_data_dir: Path):
    from flows.build_dataset import build_dataset

    before = (small_dataset / READY_MARKER).read_text()
    published = json.loads((small_dataset / MANIFEST_FILE).read_text())
    assert published["lineage"]["build_key"]
    args = {"source": "sample", "data_dir": str(session_data_dir), "limit_articles": SMALL_BUILD_ARTICLES}

    # the same inputs, options and code (a retried pipeline): the published dataset, not analysed or published again
    again = build_dataset(**args, options=BuildOptions(thresholds=SMALL_BUILD_THRESHOLDS))
    assert Path(again) == small_dataset and (small_dataset / READY_MARKER).read_text() == before

    # --cold builds it again: every vector from the embedding cache, the same content
    cold = build_dataset(**args, options=BuildOptions(thresholds=SMALL_BUILD_THRESHOLDS, cold=True))
    m = json.loads((Path(cold) / MANIFEST_FILE).read_text())
    assert (Path(cold) / READY_MARKER).read_text() != before  # republished
    assert m["embedding"]["n_encoded"] == 0
    assert m["embedding"]["n_reused"] == m["counts"]["chunks"] or m["embedding"]["n_reused"] == m["embedding"]["n_unique"]
    assert m["content_hash"] == published["content_hash"]


def test_failed_gate_publishes_nothing_and_keeps_data_docs(small_dataset: Path, session_data_dir: Path):
    from flows.build_dataset import build_dataset
    from lvm_core.contracts.gates import GateFailedError

    good_ready = (small_dataset / READY_MARKER).read_text()
    with pytest.raises(GateFailedError, match="oracle_recall_at_5"):
        build_dataset(
            source="sample", data_dir=str(session_data_dir), limit_articles=SMALL_BUILD_ARTICLES,
            options=BuildOptions(thresholds={**SMALL_BUILD_THRESHOLDS, "min_oracle_recall_at_5": 1.01}),
        )
    assert (small_dataset / READY_MARKER).read_text() == good_ready  # last good one intact
    failed = sorted((datasets_root(session_data_dir) / "_failed").iterdir())
    assert failed and list(failed[-1].rglob("index.html"))
    m = json.loads((failed[-1] / MANIFEST_FILE).read_text())
    assert m["gates_passed"] is False and m["gates"]["oracle_recall_at_5"]["passed"] is False


def _sample() -> Path:
    from lvm_core.data.ingest.sources import sample_dump_path

    return sample_dump_path()


@pytest.mark.parametrize("case", ["missing", "truncated", "empty", "bad_columns"])
def test_cli_bad_input_is_one_line_error_and_nothing_published(case, tmp_path: Path, prefect_harness):
    from flows.cli import app

    if case == "missing":
        src = tmp_path / "nope-pages-articles.xml.bz2"
    elif case == "truncated":
        src = tmp_path / "enwiki-20250101-pages-articles.xml.bz2"
        data = _sample().read_bytes()
        src.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        src = tmp_path / "enwiki-20250102-pages-articles.xml"
        src.write_text('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10"><siteinfo>'
                       '<sitename>W</sitename><namespaces><namespace key="0" /></namespaces></siteinfo></mediawiki>')
    else:
        src = tmp_path / "articles.jsonl"
        src.write_text('{"id": 1, "name": "x"}\n')
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(app, ["build", "--source", str(src), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and src.name in lines[0], result.output
    root = datasets_root(data_dir)
    published = [p for p in root.iterdir() if not p.name.startswith((".", "_"))] if root.exists() else []
    assert published == []
