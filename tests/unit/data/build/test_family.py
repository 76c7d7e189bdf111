"""A month's build finds its family's previous published dataset by itself, and only that one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.contracts.layout import DatasetPaths, datasets_root
from lvm_core.data.build.family import (
    FamilyError,
    dataset_family,
    find_previous_dataset,
    previous_dataset_for,
)
from tests.fixtures.messages import assert_one_line_error


def _publish(data_dir: Path, dataset_id: str, snapshot_id: str, ready: bool = True) -> Path:
    paths = DatasetPaths(datasets_root(data_dir) / dataset_id)
    paths.root.mkdir(parents=True)
    paths.manifest.write_text(json.dumps({"dataset_id": dataset_id, "snapshot_id": snapshot_id,
                                          "created_at": "2026-01-01T00:00:00+00:00"}))
    if ready:
        paths.ready.write_text("now\n")
    return paths.root


def test_family_is_the_wiki_of_a_dated_id_and_the_whole_id_otherwise():
    assert dataset_family("enwiki-20260101") == dataset_family("enwiki-20260201") == "enwiki"
    assert dataset_family("bgwiki-20260101") == "bgwiki"
    # the embedded sample is named by its digest: a family of its own, never a month of enwiki
    assert dataset_family("enwiki-a53f4648dec4") == "enwiki-a53f4648dec4"


def test_the_previous_dataset_is_the_newest_earlier_published_month_of_the_family(tmp_path):
    _publish(tmp_path, "enwiki-20251101", "enwiki-20251101")
    _publish(tmp_path, "enwiki-20251201", "enwiki-20251201")
    _publish(tmp_path, "enwiki-20260201", "enwiki-20260201")  # later: not a predecessor
    _publish(tmp_path, "enwiki-20251215", "enwiki-20251215", ready=False)  # never published
    _publish(tmp_path, "enwiki-a53f4648dec4", "enwiki-a53f4648dec4")  # the sample
    _publish(tmp_path, "dewiki-20251231", "dewiki-20251231")  # another wiki
    found = find_previous_dataset(tmp_path, "enwiki-20260101", "enwiki-20260101")
    assert found is not None and found.dataset_id == "enwiki-20251201"
    assert find_previous_dataset(tmp_path, "enwiki-20251101", "enwiki-20251101") is None  # first month
    assert find_previous_dataset(tmp_path, "enwiki-a53f4648dec4", "enwiki-a53f4648dec4") is None


def test_a_named_previous_dataset_must_be_published_and_of_the_family(tmp_path):
    other = _publish(tmp_path, "dewiki-20251231", "dewiki-20251231")
    draft = _publish(tmp_path, "enwiki-20251231", "enwiki-20251231", ready=False)
    good = _publish(tmp_path, "enwiki-20251201", "enwiki-20251201")
    config = BuildConfig(data_dir=str(tmp_path), previous_dataset=str(good))
    assert previous_dataset_for(config, "enwiki-20260101", "enwiki-20260101").root == good
    for bad, words in [(other, "family 'dewiki'"), (draft, "not a published dataset")]:
        config = BuildConfig(data_dir=str(tmp_path), previous_dataset=str(bad))
        with pytest.raises(FamilyError) as exc:
            previous_dataset_for(config, "enwiki-20260101", "enwiki-20260101")
        assert words in assert_one_line_error(exc, str(bad))
