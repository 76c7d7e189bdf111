"""Publishing a build: staging folders of dead builds are removed, live ones kept."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.processes import dead_pid


def test_abandoned_staging_folders_are_removed_and_live_ones_kept(tmp_path: Path):
    import json
    import os

    from lvm_core.data.build.publish import clean_abandoned_builds, new_staging_dir
    from lvm_core.runtime.liveness import OWNER_FILE, Owner

    live = new_staging_dir(tmp_path, "snap")  # owned by this (live) process
    dead = new_staging_dir(tmp_path, "snap")
    record = json.loads((dead / OWNER_FILE).read_text())
    (dead / OWNER_FILE).write_text(json.dumps({**record, "pid": dead_pid()}))
    old_unowned = dead.with_name(".staging-snap-00000000")
    old_unowned.mkdir()
    os.utime(old_unowned, (0, 0))  # an owner-less folder from an older version, untouched for years
    done = clean_abandoned_builds(tmp_path)
    assert live.exists() and not dead.exists() and not old_unowned.exists()
    assert len(done) == 2 and any("no longer running" in line for line in done)
    assert Owner.from_dict(json.loads((live / OWNER_FILE).read_text())).gone(stale_after=1.0) is None


def _config(**options):
    from lvm_core.contracts.build_options import BuildConfig, BuildOptions

    data_dir = options.pop("data_dir", "/data/a")
    return BuildConfig.from_parts("sample", data_dir, 14, None, BuildOptions(**options))


def test_build_key_names_inputs_options_and_registry_not_where_the_work_ran():
    from lvm_core.data.build.publish import build_key

    assembled = Path("/data/a/work/assemble-0123456789abcdef")
    key = build_key(assembled, _config(), None)
    # where and how the work ran: the same dataset
    assert build_key(Path("/elsewhere/work") / assembled.name, _config(data_dir="/data/b", shard_bytes=1,
                                                                        work_url="file:///store"), None) == key
    # what the dataset is made from or gated by: another one
    assert build_key(assembled.with_name("assemble-fedcba9876543210"), _config(), None) != key
    assert build_key(assembled, _config(thresholds={"min_oracle_recall_at_5": 0.96}), None) != key
    assert build_key(assembled, _config(), "registry-hash") != key


def test_only_a_passed_publication_with_the_same_key_is_returned(tmp_path: Path):
    import json

    from lvm_core.contracts.layout import DatasetPaths, dataset_dir
    from lvm_core.data.build.publish import published_with_key

    paths = DatasetPaths(dataset_dir(tmp_path, "snap"))
    assert published_with_key(tmp_path, "snap", "k") is None  # nothing published
    paths.root.mkdir(parents=True)
    paths.manifest.write_text(json.dumps({"gates_passed": True, "lineage": {"build_key": "k"}}))
    assert published_with_key(tmp_path, "snap", "k") is None  # no READY marker: not published
    paths.ready.write_text("now\n")
    assert published_with_key(tmp_path, "snap", "k") == paths.root
    assert published_with_key(tmp_path, "snap", "other") is None
    paths.manifest.write_text(json.dumps({"gates_passed": False, "lineage": {"build_key": "k"}}))
    assert published_with_key(tmp_path, "snap", "k") is None
    paths.manifest.write_text("{not json")
    assert published_with_key(tmp_path, "snap", "k") is None
