"""A dataset built by the real build flow loads with its typed manifest; a bad manifest is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.manifest import DatasetManifest, read_manifest
from lvm_core.data.build.load import list_datasets, load_dataset
from lvm_core.data.build.publish import content_hash


def test_built_dataset_loads_typed_with_the_same_content_hash(small_dataset: Path):
    ds = load_dataset(small_dataset)
    assert isinstance(ds.manifest, DatasetManifest)
    raw = (small_dataset / "manifest.json").read_text()
    assert json.dumps(ds.manifest.to_dict(), indent=2) + "\n" == raw
    # the hash recomputed through the typed manifest is the one the build recorded
    assert ds.manifest.content_hash and content_hash(ds.manifest, small_dataset) == ds.manifest.content_hash
    assert ds.context_len == ds.manifest.context_len
    assert ds.manifest.counts.chunks == len(ds.vectors)


@pytest.fixture()
def copied_dataset(small_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "datasets" / small_dataset.name
    shutil.copytree(small_dataset, root, ignore=shutil.ignore_patterns("gx", "plots"))
    return root


def _edit(root: Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m["counts"].update(chunks="many"), "counts.chunks"),
        (lambda m: m.pop("encoder"), "encoder"),
        (lambda m: m["coherence"].pop("bin_edges"), "coherence.bin_edges"),
        (lambda m: m.update(crossing_windows=[0]), "crossing_windows"),
        (lambda m: m["gates"]["unit_norm"].update(passed="perhaps"), "gates.unit_norm.passed"),
    ],
    ids=["wrong-type", "missing-section", "missing-nested", "list-for-int", "gate-not-bool"],
)
def test_bad_manifest_fails_load_dataset_with_one_line(copied_dataset: Path, edit, field: str):
    _edit(copied_dataset, edit)
    with pytest.raises(DataContractError) as exc:
        load_dataset(copied_dataset)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(copied_dataset / "manifest.json") in msg and f"field {field}:" in msg


def test_list_datasets_skips_a_bad_manifest(copied_dataset: Path):
    data_dir = copied_dataset.parent.parent
    assert [r["chunks"] for r in list_datasets(data_dir)] == [read_manifest(copied_dataset / "manifest.json").counts.chunks]
    _edit(copied_dataset, lambda m: m.pop("counts"))
    assert list_datasets(data_dir) == []
