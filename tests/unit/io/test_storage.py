"""Atomic writes: a failed write or folder build leaves the previous one; an interrupted swap is undone."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvm_core.io.storage import atomic_dir, atomic_path, replace_dir
from tests.fixtures.processes import dead_pid


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


def test_publish_cut_between_its_two_renames_is_undone(tmp_path: Path):
    """A crash after the old dataset was parked and before the new one took its place: the old one comes back."""
    from lvm_core.io.storage import recover_interrupted_swaps

    root = tmp_path / "datasets"
    parked = root / f".snap.old.{dead_pid()}"
    parked.mkdir(parents=True)
    (parked / "READY").write_text("last good")
    assert recover_interrupted_swaps(root) == [root / "snap"]
    assert (root / "snap" / "READY").read_text() == "last good" and not parked.exists()
    # the new folder made it into place: the parked copy is dropped, the new one stays
    done = root / f".snap.old.{dead_pid()}"
    done.mkdir()
    assert recover_interrupted_swaps(root) == [] and not done.exists()
    assert (root / "snap" / "READY").read_text() == "last good"
