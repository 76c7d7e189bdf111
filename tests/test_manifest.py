"""The typed dataset manifest: folders written before it still load, byte for byte the same JSON, the same
content hash; a manifest with a wrong type or a missing field is refused with one line naming file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.manifest import DatasetManifest, parse_manifest, read_manifest
from lvm_core.data.build.publish import content_hash
from lvm_core.data.build.load import list_datasets, load_dataset

# manifest.json files of datasets built before the typed manifest: by the code of commit 6529d6c (the test
# fixtures' 14-article sample, published and failed) and by an older build without test split or oracle record
OLD_MANIFESTS = sorted((Path(__file__).parent / "data" / "manifests").glob("*.json"))


def test_old_manifest_files_exist():
    assert len(OLD_MANIFESTS) >= 3


@pytest.mark.parametrize("path", OLD_MANIFESTS, ids=lambda p: p.stem)
def test_manifest_written_before_the_model_loads_and_writes_back_the_same_json(path: Path):
    raw = path.read_text()
    m = read_manifest(path)
    assert isinstance(m, DatasetManifest)
    assert m.dataset_id and m.counts.chunks > 0 and m.encoder.dim == 384
    # same keys, values and key order, down to the bytes write_json produces
    assert json.dumps(m.to_dict(), indent=2) + "\n" == raw
    assert json.loads(raw) == m.to_dict()


def test_old_failed_build_lists_its_failed_gates():
    m = read_manifest(next(p for p in OLD_MANIFESTS if p.stem.startswith("failed")))
    assert m.gates_passed is False and m.failed_gates
    assert all(not m.gates[name].passed for name in m.failed_gates)


def test_older_manifest_without_newer_fields_leaves_them_out():
    m = read_manifest(next(p for p in OLD_MANIFESTS if "no-test-split" in p.stem))
    assert m.oracle is None and m.shards is None and "test" not in m.sequences
    out = m.to_dict()
    assert "oracle" not in out and "shards" not in out and "windows_before_purge" not in out


def test_unknown_keys_are_kept():
    data = json.loads(OLD_MANIFESTS[0].read_text())
    data["added_later"] = {"x": 1}
    data["counts"]["pages"] = 3
    out = parse_manifest(data).to_dict()
    assert out["added_later"] == {"x": 1} and out["counts"]["pages"] == 3 and list(out)[-1] == "added_later"


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
