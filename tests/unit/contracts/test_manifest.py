"""The typed dataset manifest: folders written before it still load, byte for byte the same JSON, the same
content hash; a manifest with a wrong type or a missing field is refused with one line naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvm_core.contracts.manifest import DatasetManifest, parse_manifest, read_manifest
from tests.fixtures.paths import TEST_DATA

# manifest.json files of datasets built before the typed manifest: by the code of commit 6529d6c (the test
# fixtures' 14-article sample, published and failed) and by an older build without test split or oracle record
OLD_MANIFESTS = sorted((TEST_DATA / "manifests").glob("*.json"))


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
