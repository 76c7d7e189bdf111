"""Which registry a build carries on from: the previous dataset's own (checked against its manifest), one made
from the splits.parquet of a dataset published before registries, and the ones refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.build.family import PublishedDataset
from lvm_core.data.build.splitting import parent_registry
from lvm_core.data.split_registry import RegistryHeader, SplitRegistryError, registry_from_splits, write_registry

SPLITS = pl.DataFrame({"article_id": [1, 2, 3, 4], "split": ["train", "train", "val", "ood"]})


def _published(root: Path, snapshot_id: str, registry: bool = True, recorded: str | None = "same") -> PublishedDataset:
    """A published dataset folder with splits.parquet, a manifest and (unless `registry` is False) its registry."""
    paths = DatasetPaths(root)
    root.mkdir(parents=True)
    SPLITS.write_parquet(paths.splits)
    reg = registry_from_splits(SPLITS, RegistryHeader(snapshot_id.rsplit("-", 1)[0], snapshot_id, snapshot_id))
    if registry:
        write_registry(paths.split_registry, reg)
    splits_block = {"content_hash": "x"}
    if registry and recorded:
        splits_block["registry_hash"] = reg.hash if recorded == "same" else recorded
    paths.manifest.write_text(json.dumps({"dataset_id": snapshot_id, "snapshot_id": snapshot_id,
                                          "splits": splits_block, "content_hash": "c" * 64}))
    paths.ready.write_text("now\n")
    return PublishedDataset(root, snapshot_id, snapshot_id, "2026-01-01T00:00:00+00:00")


def test_the_previous_registry_is_read_and_checked(tmp_path: Path):
    prev = _published(tmp_path / "enwiki-20260101", "enwiki-20260101")
    reg = parent_registry(prev, "enwiki")
    assert reg.header.family == "enwiki" and reg.rows.height == 4


def test_a_dataset_without_registry_gives_one_from_its_splits(tmp_path: Path):
    prev = _published(tmp_path / "enwiki-20250101", "enwiki-20250101", registry=False)
    reg = parent_registry(prev, "enwiki")
    assert reg.header == RegistryHeader("enwiki", "enwiki-20250101", "enwiki-20250101")
    assert dict(reg.rows.select("article_id", "split").iter_rows()) == {1: "train", 2: "train", 3: "val", 4: "ood"}
    assert parent_registry(prev, "enwiki").hash == reg.hash  # the same registry every time


@pytest.mark.parametrize("case, message", [
    ("other_family", "split registry of family 'dewiki', but this build is of family 'enwiki'"),
    ("replaced", "differs from the"),
    ("missing", "missing, but its dataset's manifest records split registry"),
])
def test_a_registry_that_cannot_be_carried_is_refused(tmp_path: Path, case: str, message: str):
    prev = _published(tmp_path / "enwiki-20260101", "enwiki-20260101")
    registry = DatasetPaths(prev.root).split_registry
    if case == "other_family":  # a registry copied in from another wiki's dataset (its manifest says nothing)
        other = _published(tmp_path / "dewiki-20260101", "dewiki-20260101")
        shutil.copyfile(DatasetPaths(other.root).split_registry, registry)
        manifest = json.loads(DatasetPaths(prev.root).manifest.read_text())
        del manifest["splits"]["registry_hash"]
        DatasetPaths(prev.root).manifest.write_text(json.dumps(manifest))
    elif case == "replaced":
        other = _published(tmp_path / "other" / "enwiki-20260101", "enwiki-20260102")
        shutil.copyfile(DatasetPaths(other.root).split_registry, registry)
    else:
        registry.unlink()
    with pytest.raises(SplitRegistryError) as err:
        parent_registry(prev, "enwiki")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_corrupt_legacy_splits_file_is_refused(tmp_path: Path):
    prev = _published(tmp_path / "enwiki-20250101", "enwiki-20250101", registry=False)
    pl.DataFrame({"article_id": [1, 1], "split": ["train", "val"]}).write_parquet(DatasetPaths(prev.root).splits)
    with pytest.raises(SplitRegistryError, match="lists article 1 more than once"):
        parent_registry(prev, "enwiki")
