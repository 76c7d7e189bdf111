"""`lvm gc` on a data folder laid out as builds leave it: work folders go unless a build holds the work lock,
a published dataset's hard-linked files survive (and are not counted as freed), a dataset's symbolic link into
work/ keeps its folder, staging folders go only when their build is dead, and a dry run removes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lvm_core.contracts.layout import DatasetPaths
from tests.fixtures.processes import dead_pid


def _data_dir(root: Path) -> dict[str, Path]:
    from lvm_core.data.build.publish import new_staging_dir
    from lvm_core.io.storage import link_or_copy
    from lvm_core.runtime.liveness import OWNER_FILE

    work = root / "work"
    assemble, chunk, linked = work / "assemble-aaaa", work / "chunk-bbbb", work / "embed-cccc"
    for d in (assemble, chunk, linked):
        d.mkdir(parents=True)
    (assemble / "chunks.parquet").write_bytes(b"x" * 1000)
    (chunk / "chunks.parquet").write_bytes(b"y" * 300)
    (linked / "embeddings.npy").write_bytes(b"z" * 50)
    dataset = DatasetPaths(root / "datasets" / "enwiki-20260101")
    dataset.root.mkdir(parents=True)
    link_or_copy(assemble / "chunks.parquet", dataset.chunks)  # as analyse's _stage_inputs does
    os.symlink(linked / "embeddings.npy", dataset.embeddings)  # never made by a build; respected all the same
    dataset.ready.write_text("now\n")
    live, dead = new_staging_dir(root, "enwiki-20260201"), new_staging_dir(root, "enwiki-20260201")
    record = json.loads((dead / OWNER_FILE).read_text())
    (dead / OWNER_FILE).write_text(json.dumps({**record, "pid": dead_pid()}))
    return {"assemble": assemble, "chunk": chunk, "linked": linked, "dataset": dataset.root, "live": live, "dead": dead}


def test_gc_removes_unneeded_work_and_keeps_what_datasets_use(tmp_path: Path):
    from lvm_core.data.build.gc import LOCK_FILE, collect_garbage

    d = _data_dir(tmp_path)
    dry = collect_garbage(tmp_path, dry_run=True)
    assert {Path(i.path) for i in dry.removed} == {d["assemble"], d["chunk"], d["dead"]}
    assert all(p.exists() for p in d.values())  # a dry run only lists
    from lvm_core.runtime.liveness import OWNER_FILE

    # the assembled file lives on in the dataset: removing its work link frees nothing of it
    freed = 300 + (d["dead"] / OWNER_FILE).stat().st_size
    assert dry.bytes_freed == freed
    report = collect_garbage(tmp_path)
    assert report.bytes_freed == freed and not report.kept
    assert not d["assemble"].exists() and not d["chunk"].exists() and not d["dead"].exists()
    assert d["linked"].exists() and d["live"].exists() and (tmp_path / "work" / LOCK_FILE).exists()
    paths = DatasetPaths(d["dataset"])
    assert paths.chunks.read_bytes() == b"x" * 1000 and paths.embeddings.read_bytes() == b"z" * 50


_HOLDER = """
import sys, time
from pathlib import Path
from lvm_core.data.build.gc import work_in_use
with work_in_use(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""


def test_gc_keeps_every_work_folder_while_a_build_holds_the_work_lock(tmp_path: Path):
    """Another process (a build's coordinator) holds the lock; once it is gone (even killed) gc goes ahead."""
    from lvm_core.data.build.gc import collect_garbage

    d = _data_dir(tmp_path)
    ready = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        report = collect_garbage(tmp_path)
        assert d["assemble"].exists() and d["chunk"].exists()
        assert len(report.kept) == 1 and "a build is running" in report.kept[0]
        assert [Path(i.path) for i in report.removed] == [d["dead"]]  # a dead build's staging still goes
    finally:
        holder.kill()
        holder.wait()
    assert {Path(i.path) for i in collect_garbage(tmp_path).removed} == {d["assemble"], d["chunk"]}


def test_cli_gc_dry_run_lists_sizes_and_a_missing_data_dir_is_one_line(tmp_path: Path):
    from typer.testing import CliRunner

    from flows.cli import app

    d = _data_dir(tmp_path)
    res = CliRunner().invoke(app, ["gc", "--data-dir", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "chunk-bbbb" in res.output and "would remove 3 folder(s);" in res.output and "bytes would be freed" in res.output
    assert d["chunk"].exists()
    res = CliRunner().invoke(app, ["gc", "--data-dir", str(tmp_path / "nope")])
    assert res.exit_code == 1 and [line for line in res.output.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'nope'}: no such data folder"]
