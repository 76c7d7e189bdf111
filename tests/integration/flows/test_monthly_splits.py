"""Two consecutive monthly snapshots through the build flow: every article present in both keeps its split,
the second records its lineage and registry, a model trained on the first month can be checked against the
second month's evaluation articles without retraining, and a corrupt registry stops the next build in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from lvm_core.contracts.build_options import BuildOptions
from lvm_core.contracts.layout import DatasetPaths, datasets_root
from lvm_core.data.ingest.sources import read_articles
from lvm_core.data.split_registry import read_registry
from lvm_core.data.windows import SequenceSet
from tests.fixtures.builds import SMALL_BUILD_ARTICLES, SMALL_BUILD_THRESHOLDS

pytestmark = pytest.mark.slow

MONTH1, MONTH2 = "enwiki-20260101", "enwiki-20260201"


def _write_month(path: Path, articles: list) -> Path:
    """A JSONL export (id, title, text) of the given sample articles."""
    path.write_text("".join(json.dumps({"id": a.article_id, "title": a.title, "text": a.text}) + "\n"
                            for a in articles))
    return path


@pytest.fixture(scope="module")
def months(prefect_harness, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Month 1: the sample's first 12 articles; month 2: month 1 less two, plus two new ones. Encoded by the
    named `hash-test` encoder: the subject is which split each article keeps, not the vectors."""
    from flows.build_dataset import build_dataset

    tmp = tmp_path_factory.mktemp("months")
    data_dir = tmp / "data"
    articles = list(read_articles("sample", limit=SMALL_BUILD_ARTICLES))
    m1 = _write_month(tmp / "month1.jsonl", articles[:12])
    m2 = _write_month(tmp / "month2.jsonl", articles[2:SMALL_BUILD_ARTICLES])
    options = BuildOptions(thresholds=SMALL_BUILD_THRESHOLDS, encoder="hash-test")
    first = build_dataset(source=str(m1), data_dir=str(data_dir), snapshot_id=MONTH1, options=options)
    second = build_dataset(source=str(m2), data_dir=str(data_dir), snapshot_id=MONTH2, options=options)
    return Path(first), Path(second), data_dir


def _splits(root: Path) -> dict[int, str]:
    return dict(pl.read_parquet(DatasetPaths(root).splits).select("article_id", "split").iter_rows())


def test_articles_keep_their_split_and_the_lineage_is_recorded(months):
    first, second, _ = months
    before, after = _splits(first), _splits(second)
    shared = set(before) & set(after)
    assert len(shared) == 10 and all(after[a] == before[a] for a in shared)
    m1 = json.loads(DatasetPaths(first).manifest.read_text())
    m2 = json.loads(DatasetPaths(second).manifest.read_text())
    reg1, reg2 = read_registry(DatasetPaths(first).split_registry), read_registry(DatasetPaths(second).split_registry)
    assert m1["splits"]["registry_hash"] == reg1.hash and m2["splits"]["registry_hash"] == reg2.hash
    assert m1["lineage"]["split_registry"]["generation"] == 0 and m1["lineage"].get("previous_dataset") is None
    lineage = m2["lineage"]
    assert lineage["previous_dataset"] == MONTH1 and lineage["previous_content_hash"] == m1["content_hash"]
    got = lineage["split_registry"]
    assert (got["hash"], got["parent_hash"], got["parent_dataset"], got["family"], got["generation"]) == \
        (reg2.hash, reg1.hash, MONTH1, "enwiki", 1)
    assert (got["kept"], got["new"], got["removed"], got["returned"]) == (10, len(after) - 10, 2, 0)
    removed = reg2.rows.filter(~pl.col("present"))
    assert sorted(removed["article_id"].to_list()) == sorted(set(before) - set(after))


def test_a_model_of_month_one_is_checked_against_month_two(months, tmp_path: Path):
    from lvm_core.data.build.load import load_dataset
    from lvm_core.evaluation.contamination import check_contamination

    first, second, _ = months
    m1 = json.loads(DatasetPaths(first).manifest.read_text())
    trained = {"training_dataset": str(first), "training_split_hash": m1["splits"]["content_hash"],
               "training_registry_hash": m1["splits"]["registry_hash"]}
    seqs = load_dataset(second).sequences
    r = check_contamination(second, seqs, model="amn v1", **trained)
    assert (r.status, r.checked_by) == ("clean", "training splits") and r.n_eval_articles > 0
    # month 1's folder gone: month 2's registry descends from month 1's, so the answer is the same
    moved_away = tmp_path / "gone"
    shutil.copytree(first, moved_away)
    shutil.rmtree(first)
    try:
        r = check_contamination(second, seqs, model="amn v1", **trained)
        assert (r.status, r.checked_by) == ("clean", "split registry")
    finally:
        shutil.copytree(moved_away, first)
    # one of month 1's training articles moved into month 2's test windows: refused
    train_article = next(a for a, s in _splits(first).items() if s == "train" and a in _splits(second))
    test = seqs["test"]
    moved = dict(seqs, test=SequenceSet(test.context_rows, test.target_rows,
                                        np.full(len(test), train_article, dtype=np.int64), test.target_chunk_index))
    r = check_contamination(second, moved, model="amn v1", **trained)
    assert r.status == "contaminated" and r.by_split["test"] == 1 and r.examples[0]["article_id"] == train_article
    assert "training articles of amn v1" in r.message()


def test_a_corrupt_registry_stops_the_next_month_in_one_line(months, tmp_path: Path):
    from flows.cli import app

    first, _, data_dir = months
    fresh = tmp_path / "data"
    shutil.copytree(data_dir / "cache", fresh / "cache")
    shutil.copytree(first, datasets_root(fresh) / MONTH1)
    registry = DatasetPaths(datasets_root(fresh) / MONTH1).split_registry
    registry.write_bytes(registry.read_bytes()[:100])
    articles = list(read_articles("sample", limit=SMALL_BUILD_ARTICLES))
    src = _write_month(tmp_path / "month2.jsonl", articles[2:])
    result = CliRunner().invoke(app, ["build", "--source", str(src), "--data-dir", str(fresh), "--snapshot-id", MONTH2,
                                      "--threshold", "max_split_ks=1.0"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unreadable split registry" in lines[0] and str(registry) in lines[0], result.output
    assert not (datasets_root(fresh) / MONTH2).exists()
    assert not [p for p in datasets_root(fresh).iterdir() if p.name.startswith(".staging")]
