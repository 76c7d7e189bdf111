"""Library-level dataset helpers: atomic publication and per-wiki sentence-splitter language."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvm_core.data.build.source import wiki_language
from lvm_core.io.storage import atomic_dir, atomic_path, replace_dir


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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_publish_cut_between_its_two_renames_is_undone(tmp_path: Path):
    """A crash after the old dataset was parked and before the new one took its place: the old one comes back."""
    from lvm_core.io.storage import recover_interrupted_swaps

    root = tmp_path / "datasets"
    parked = root / f".snap.old.{_dead_pid()}"
    parked.mkdir(parents=True)
    (parked / "READY").write_text("last good")
    assert recover_interrupted_swaps(root) == [root / "snap"]
    assert (root / "snap" / "READY").read_text() == "last good" and not parked.exists()
    # the new folder made it into place: the parked copy is dropped, the new one stays
    done = root / f".snap.old.{_dead_pid()}"
    done.mkdir()
    assert recover_interrupted_swaps(root) == [] and not done.exists()
    assert (root / "snap" / "READY").read_text() == "last good"


def test_abandoned_staging_folders_are_removed_and_live_ones_kept(tmp_path: Path):
    import json
    import os

    from lvm_core.data.build.publish import clean_abandoned_builds, new_staging_dir
    from lvm_core.runtime.liveness import OWNER_FILE, Owner

    live = new_staging_dir(tmp_path, "snap")  # owned by this (live) process
    dead = new_staging_dir(tmp_path, "snap")
    record = json.loads((dead / OWNER_FILE).read_text())
    (dead / OWNER_FILE).write_text(json.dumps({**record, "pid": _dead_pid()}))
    old_unowned = dead.with_name(".staging-snap-00000000")
    old_unowned.mkdir()
    os.utime(old_unowned, (0, 0))  # an owner-less folder from an older version, untouched for years
    done = clean_abandoned_builds(tmp_path)
    assert live.exists() and not dead.exists() and not old_unowned.exists()
    assert len(done) == 2 and any("no longer running" in line for line in done)
    assert Owner.from_dict(json.loads((live / OWNER_FILE).read_text())).gone(stale_after=1.0) is None


def test_embed_stats_of_shards_sum_and_keep_the_encoders_agreement():
    from lvm_core.data.build.embed import sum_embed_stats

    agreement = {"mean": 0.9945, "median": 0.9947, "min": 0.9896, "n": 256}
    parts = [
        {"n_total": 10, "n_unique": 9, "n_reused": 4, "n_encoded": 5, "seconds_encoding": 1.0, "agreement": agreement},
        {"n_total": 6, "n_unique": 6, "n_reused": 1, "n_encoded": 5, "seconds_encoding": 1.5, "agreement": agreement},
    ]
    out = sum_embed_stats(parts)
    assert (out["n_total"], out["n_unique"], out["n_reused"], out["n_encoded"]) == (16, 15, 5, 10)
    assert out["chunks_per_second"] == pytest.approx(4.0) and out["agreement"] == agreement
    assert "agreement" not in sum_embed_stats([{k: v for k, v in parts[0].items() if k != "agreement"}])

