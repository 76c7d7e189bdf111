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
