"""A dataset folder written before the package layout (commit 6529d6c: 4 articles of the sample, float16
vectors, no test split) still loads, passes `lvm check`'s gates, keeps its content hash, and gives the
baseline numbers the code of that time gave, but for a baseline changed on purpose, listed there with why
(tests/data/legacy/dataset-6529d6c.expected.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from expectations.check import check_dataset
from lvm_core.contracts.manifest import DatasetManifest
from lvm_core.data.build.load import load_dataset
from lvm_core.data.build.publish import content_hash
from lvm_core.models.baselines.collection import fit_baselines
from lvm_core.models.predict import mean_cosine
from lvm_core.train.data import from_dataset
from tests.fixtures.paths import TEST_DATA

LEGACY = TEST_DATA / "legacy" / "dataset-6529d6c"
EXPECTED = json.loads(LEGACY.with_name(LEGACY.name + ".expected.json").read_text())


@pytest.fixture()
def legacy_dir(tmp_path: Path) -> Path:
    root = tmp_path / "datasets" / "enwiki-a53f4648dec4-first4"
    shutil.copytree(LEGACY, root)
    return root


def test_an_old_dataset_loads_with_its_typed_manifest_and_hash(legacy_dir: Path):
    ds = load_dataset(legacy_dir)
    assert isinstance(ds.manifest, DatasetManifest)
    assert (ds.manifest.counts.articles, ds.manifest.counts.chunks) == (4, 415)
    assert ds.vectors.shape == (415, 384) and ds.vectors.dtype == np.float16
    assert {s: len(w) for s, w in ds.sequences.items()} == ds.manifest.sequences == {"train": 222, "val": 28, "test": 0, "ood": 145}
    assert content_hash(ds.manifest, legacy_dir) == ds.manifest.content_hash
    assert from_dataset(legacy_dir).split("test") is None  # no test split in that build


def test_an_old_dataset_gives_the_old_baseline_numbers(legacy_dir: Path):
    data = from_dataset(legacy_dir)
    vectors = np.asarray(data.vectors, dtype=np.float32)
    fitted = fit_baselines(vectors, data.sequences["train"], seed=0)
    got = {name: {s: mean_cosine(b, vectors, data.sequences[s]) for s in ("val", "ood")} for name, b in fitted.items()}
    # a baseline whose definition changed on purpose is held to its new numbers (and the change says why)
    changed = EXPECTED["changed_on_purpose"]
    want = {**EXPECTED["baseline_mean_cosine"], **changed}
    assert got.keys() == want.keys() and all(entry["why"] for entry in changed.values())
    for name in want:
        for split in ("val", "ood"):
            assert got[name][split] == pytest.approx(want[name][split], abs=1e-6), (name, split)


@pytest.mark.slow
def test_an_old_dataset_passes_lvm_check(legacy_dir: Path, tmp_path: Path):
    result = check_dataset(legacy_dir, docs_dir=tmp_path / "docs", data_docs=False)
    assert result.passed, [g.name for g in result.report.results if not g.passed]
    assert result.oracle["recall"] == pytest.approx(result.recorded_oracle)
