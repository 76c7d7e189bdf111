"""`lvm check`: re-runs every data gate on a built dataset folder without modifying it; a permuted
embeddings.npy fails the (re-encoded) oracle gate and no gate that passed before."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from lvm_core.contracts.layout import EMBEDDINGS_FILE, ENCODER_FILE, MANIFEST_FILE
from lvm_core.io import storage

pytestmark = pytest.mark.slow


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under `root`: content digest and modification time (ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check(dataset: Path, docs: Path, *extra: str) -> tuple[int, str, dict]:
    res = CliRunner().invoke(app, ["check", str(dataset), "--docs-dir", str(docs), *extra])
    saved = docs / "validation_result.json"
    return res.exit_code, res.output, json.loads(saved.read_text()) if saved.is_file() else {}


@pytest.fixture()
def dataset(small_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / small_dataset.name
    shutil.copytree(small_dataset, root)
    return root


def test_check_passes_then_a_permuted_bank_fails_only_the_oracle(dataset: Path, tmp_path: Path) -> None:
    before = _snapshot(dataset)
    code, out, good = _check(dataset, tmp_path / "docs-good")
    assert code == 0, out
    assert good["passed"] and good["failed"] == []
    assert "oracle recall@5:" in out and "all data gates passed" in out
    assert Path(good["docs_path"]).is_relative_to((tmp_path / "docs-good").resolve())
    assert _snapshot(dataset) == before  # the dataset folder is only read
    oracle_good = good["gates"]["oracle_recall_at_5"]["value"]
    assert oracle_good >= 0.97

    # permute the rows of embeddings.npy: still float32 and unit-norm, but no longer aligned with chunks.parquet
    path = dataset / EMBEDDINGS_FILE
    vectors = np.load(path, allow_pickle=False)
    perm = np.random.default_rng(0).permutation(vectors.shape[0])
    storage.write_npy(path, np.ascontiguousarray(vectors[perm]))
    permuted = _snapshot(dataset)

    code, out, bad = _check(dataset, tmp_path / "docs-bad", "--no-docs")
    assert code == 1, out
    assert "oracle_recall_at_5" in bad["failed"]
    assert set(bad["failed"]) - set(good["failed"]) == {"oracle_recall_at_5"}, bad["failed"]
    oracle_bad = bad["gates"]["oracle_recall_at_5"]["value"]
    assert oracle_bad < 0.5
    assert _snapshot(dataset) == permuted
    print(f"oracle recall@5: {oracle_good:.4f} consistent, {oracle_bad:.4f} with permuted vectors")


def test_check_refuses_another_encoders_vectors(dataset: Path, tmp_path: Path) -> None:
    path = dataset / ENCODER_FILE
    enc = json.loads(path.read_text())
    enc["weights_digest"] = "f" * 64
    enc.pop("id", None)
    path.write_text(json.dumps(enc))
    code, out, _ = _check(dataset, tmp_path / "docs", "--no-docs")
    assert code == 1
    assert "fingerprint" in out and "Traceback" not in out


def test_docs_dir_inside_the_dataset_is_refused(dataset: Path) -> None:
    before = _snapshot(dataset)
    res = CliRunner().invoke(app, ["check", str(dataset), "--docs-dir", str(dataset / "checks"), "--no-docs"])
    assert res.exit_code == 1 and "inside the dataset folder" in res.output
    assert _snapshot(dataset) == before


def test_build_records_the_oracle_sample_and_purge_numbers(small_dataset: Path) -> None:
    m = json.loads((small_dataset / MANIFEST_FILE).read_text())
    oracle = m["oracle"]
    assert oracle["k"] == 5 and oracle["seed"] == 0 and oracle["query"] == "re-encoded target texts"
    assert oracle["sample_size"] == min(500, oracle["n_targets"]) > 0
    assert m["oracle_recall_at_5"] == oracle["recall"] >= 0.97
    for split, purged in m["purged_windows"].items():
        before = m["windows_before_purge"][split]
        assert before == m["sequences"][split] + purged
        assert m["purged_fraction"][split] == (purged / before if before else 0.0)
    assert set(m["splits"]["parity_before_purge"]) == set(m["splits"]["parity"])
    assert m["gates"]["purged_fraction"]["passed"]
