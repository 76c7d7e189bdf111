"""Library-level dataset helpers: atomic publication and per-wiki sentence-splitter language."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvm_core.dataset import wiki_language
from lvm_core.storage import atomic_dir, atomic_path, replace_dir


@pytest.mark.parametrize(
    ("snapshot_id", "lang"),
    [("bgwiki-20240601", "bg"), ("enwiki-a53f4648dec4", "en"), ("dewiki-20250101", "de"), ("articles-0a1b2c", "en")],
)
def test_wiki_language_from_snapshot_id(snapshot_id: str, lang: str):
    assert wiki_language(snapshot_id) == lang


def test_failed_write_leaves_previous_file(tmp_path: Path):
    target = tmp_path / "manifest.json"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_failed_folder_build_leaves_previous_folder(tmp_path: Path):
    target = tmp_path / "dataset"
    with atomic_dir(target) as stage:
        (stage / "READY").write_text("v1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as stage:
            (stage / "READY").write_text("v2")
            raise ValueError("gate failed")
    assert (target / "READY").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_replace_dir_swaps_whole_folder(tmp_path: Path):
    target, stage = tmp_path / "d", tmp_path / "stage"
    target.mkdir()
    (target / "old.txt").write_text("old")
    stage.mkdir()
    (stage / "new.txt").write_text("new")
    replace_dir(stage, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"] and not stage.exists()
