"""`lvm check` recomputes leakage and split parity from the folder's files instead of trusting the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from expectations.check import check_dataset
from lvm_core.contracts.layout import MANIFEST_FILE, DatasetPaths
from lvm_core.io import storage

LEGACY = Path(__file__).resolve().parents[2] / "data" / "legacy" / "dataset-6529d6c"

pytestmark = pytest.mark.slow


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "datasets" / "enwiki-a53f4648dec4-first4"
    shutil.copytree(LEGACY, root)
    return root


def test_check_recomputes_leakage_and_parity_from_the_files(dataset: Path, tmp_path: Path) -> None:
    # the manifest claims a leak and a parity the files do not have: the check measures, it does not read
    path = dataset / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["leakage_raw"]["text_hash_overlap"].update(val=30, rate=0.5)
    path.write_text(json.dumps(manifest))
    result = check_dataset(dataset, docs_dir=tmp_path / "docs", data_docs=False)
    assert result.passed, [g.name for g in result.report.results if not g.passed]
    assert result.recorded and result.recorded["leakage_raw"]["text_hash_overlap"]["rate"] == 0.5
    assert result.recomputed and result.recomputed["leakage_raw"]["text_hash_overlap"]["rate"] == 0.0
    assert result.recomputed["parity"]["val"]["ks"] == pytest.approx(manifest["splits"]["parity"]["val"]["ks"])


def test_check_fails_leakage_the_manifest_does_not_record(dataset: Path, tmp_path: Path) -> None:
    # a val chunk whose text hash repeats a train chunk's: the manifest still says 0
    paths = DatasetPaths(dataset)
    table = pq.read_table(paths.chunks)
    splits = {r["article_id"]: r["split"] for r in pq.read_table(paths.splits).to_pylist()}
    split_of_row = [splits.get(a) for a in table.column("article_id").to_pylist()]
    train_row, val_row = split_of_row.index("train"), split_of_row.index("val")
    hashes = table.column("text_hash").to_pylist()
    hashes[val_row : val_row + 5] = [hashes[train_row]] * 5  # 5 of val's 33 rows
    col = table.schema.get_field_index("text_hash")
    storage.write_parquet(paths.chunks, table.set_column(col, "text_hash", pc.cast(hashes, table.schema.field(col).type)))
    result = check_dataset(dataset, docs_dir=tmp_path / "docs", data_docs=False)
    gates = {g.name: g for g in result.report.results}
    assert not gates["leakage_zero"].passed
    assert result.recomputed and result.recomputed["leakage_raw"]["text_hash_overlap"]["val"] == 5


def test_two_swapped_vectors_pass_the_recall_bar_but_fail_as_misaligned(dataset: Path, tmp_path: Path) -> None:
    """Recall@5 >= 0.97 lets 3% misaligned rows through; the count of misaligned sampled rows is gated at 0."""
    import numpy as np

    paths = DatasetPaths(dataset)
    with np.load(paths.sequences) as npz:
        targets = np.unique(npz["val_target_rows"])
    a, b = int(targets[0]), int(targets[1])
    vectors = np.load(paths.embeddings)
    vectors[[a, b]] = vectors[[b, a]]
    storage.write_npy(paths.embeddings, vectors)
    result = check_dataset(dataset, docs_dir=tmp_path / "docs", data_docs=False)
    assert result.oracle["misaligned"] == 2 and result.oracle["recall"] >= 0.97
    assert result.oracle["train_sample_size"] > 0  # train targets are re-encoded too
    assert "oracle_recall_at_5" in result.report.failed
