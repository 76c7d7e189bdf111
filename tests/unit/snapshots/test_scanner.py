"""Snapshot discovery (local folders, dumps indexes, fsspec sources) and the built/triggered state."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fsspec
import pytest

from lvm_core.contracts.layout import READY_MARKER, WATCH_STATE_FILE, dataset_dir, downloads_dir
from lvm_core.data.ingest.download import SnapshotSourceError, local_source
from lvm_core.data.ingest.sources import snapshot_id_for
from lvm_core.snapshots.plan import new_snapshots, plan_snapshots
from lvm_core.snapshots.scanner import find_snapshots, scan_source
from lvm_core.snapshots.state import BuiltSnapshots, WatchStateError
from tests.fixtures.snapshots import SAMPLE, add_dump_folder, dump_name


def ids(snapshots) -> list[str]:
    return [s.snapshot_id for s in snapshots]


# --- discovery -----------------------------------------------------------------------------------------


def test_local_folder_of_dump_files(tmp_path: Path) -> None:
    src = tmp_path / "dumps"
    src.mkdir()
    shutil.copyfile(SAMPLE, src / dump_name("20240101"))
    shutil.copyfile(SAMPLE, src / dump_name("20230101", wiki="simplewiki"))
    (src / "export.jsonl").write_text(json.dumps({"id": 1, "title": "A", "text": "Alpha beta."}) + "\n")
    (src / "notes.txt").write_text("not a dump")
    (src / ".enwiki-20250101-pages-articles.xml.bz2.part").write_text("partial download")

    snaps = find_snapshots(src)
    assert ids(snaps)[:2] == ["simplewiki-20230101", "enwiki-20240101"]  # oldest first
    jsonl = snaps[2]
    assert jsonl.snapshot_id == snapshot_id_for(src / "export.jsonl")  # undated: content digest
    assert jsonl.snapshot_id.startswith("export-")
    assert all(s.source_kind == "file" for s in snaps)
    enwiki = snaps[1]
    assert enwiki.path == str(src / dump_name("20240101"))
    assert enwiki.date.isoformat() == "2024-01-01"
    assert enwiki.size == SAMPLE.stat().st_size
    # The same folder as a file:// URL gives the same snapshots.
    assert find_snapshots(f"file://{src}") == snaps


def test_dated_subfolders_without_dumpstatus(tmp_path: Path) -> None:
    src = tmp_path / "mirror"
    (src / "20240301").mkdir(parents=True)
    shutil.copyfile(SAMPLE, src / "20240301" / dump_name("20240301"))
    # Combined and multistream in one folder: the single-file dump wins.
    shutil.copyfile(SAMPLE, src / "20240301" / "enwiki-20240301-pages-articles-multistream.xml.bz2")
    (src / "20240401").mkdir()
    (src / "20240401" / "README").write_text("still syncing")
    (src / "latest").mkdir()  # not a date: ignored

    result = scan_source(src)
    assert ids(result.snapshots) == ["enwiki-20240301"]
    snap = result.snapshots[0]
    assert snap.source_kind == "dated-folder"
    assert snap.path.endswith(dump_name("20240301"))
    assert [(Path(s.location).name, "without a dump file" in s.reason) for s in result.skipped] == [("20240401", True)]


def test_dumps_index_uses_done_articles_jobs_only(tmp_path: Path) -> None:
    index = tmp_path / "enwiki"
    add_dump_folder(index, "20240501")
    add_dump_folder(index, "20240601")
    add_dump_folder(index, "20240701", status="in-progress")
    add_dump_folder(index, "20240801", with_file=False)  # listed as done, file not mirrored
    (index / "20240901").mkdir()
    (index / "20240901" / "dumpstatus.json").write_text("{not json")
    (index / "latest").mkdir()

    result = scan_source(index)
    assert ids(result.snapshots) == ["enwiki-20240501", "enwiki-20240601"]
    assert all(s.source_kind == "dumps-index" for s in result.snapshots)
    # Ids match what ingest derives from the dump file name.
    assert result.snapshots[1].snapshot_id == snapshot_id_for(Path(result.snapshots[1].path))
    reasons = {Path(s.location).name if Path(s.location).name.isdigit() else Path(s.location).parent.name: s.reason for s in result.skipped}
    assert "articlesdump: in-progress" in reasons["20240701"]
    assert "not in the folder" in reasons["20240801"]
    assert "unreadable dumpstatus.json" in reasons["20240901"]


def test_dumps_index_prefers_recombined_file_and_skips_parts_only(tmp_path: Path) -> None:
    index = tmp_path / "enwiki"
    big = index / "20240601"
    big.mkdir(parents=True)
    parts = ["enwiki-20240601-pages-articles1.xml-p1p41242.bz2", "enwiki-20240601-pages-articles2.xml-p41243p151573.bz2"]
    for name in [*parts, dump_name("20240601")]:
        shutil.copyfile(SAMPLE, big / name)
    (big / "dumpstatus.json").write_text(json.dumps({"jobs": {
        "articlesdump": {"status": "done", "files": {p: {} for p in parts}},
        "articlesdumprecombine": {"status": "done", "files": {dump_name("20240601"): {}}},
    }}))
    only_parts = index / "20240701"
    only_parts.mkdir()
    (only_parts / "dumpstatus.json").write_text(json.dumps({"jobs": {
        "articlesdump": {"status": "done", "files": {p.replace("0601", "0701"): {} for p in parts}},
        "articlesdumprecombine": {"status": "waiting", "files": {}},
    }}))

    result = scan_source(index)
    assert [Path(s.path).name for s in result.snapshots] == [dump_name("20240601")]
    assert len(result.skipped) == 1 and "articlesdumprecombine: waiting" in result.skipped[0].reason


def test_fsspec_memory_source_and_download(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    root = f"/idx-{os.getpid()}"
    data = SAMPLE.read_bytes()
    fs.pipe(f"{root}/20240601/{dump_name('20240601')}", data)
    fs.pipe(f"{root}/20240601/dumpstatus.json", json.dumps(
        {"jobs": {"articlesdump": {"status": "done", "files": {dump_name("20240601"): {"size": len(data)}}}}}
    ).encode())
    fs.pipe(f"{root}/undated.parquet", b"PAR1")
    try:
        snaps = find_snapshots(f"memory://{root}")
        assert ids(snaps)[0] == "enwiki-20240601"
        assert snaps[0].path == f"memory://{root}/20240601/{dump_name('20240601')}"
        assert snaps[1].snapshot_id.startswith("undated-")  # metadata-based id: no remote hashing
        local = Path(local_source(snaps[0].path, tmp_path))
        assert local.is_file() and local.read_bytes() == data
        assert local.is_relative_to(downloads_dir(tmp_path))
        assert local_source(snaps[0].path, tmp_path) == str(local)  # downloaded once
        assert local_source(str(SAMPLE), tmp_path) == str(SAMPLE)
        assert local_source(f"file://{SAMPLE}", tmp_path) == str(SAMPLE)
    finally:
        fs.rm(root, recursive=True)


def test_http_dumps_index(tmp_path: Path) -> None:
    """A dumps index served over HTTP (directory listing pages, as on dumps.wikimedia.org)."""
    import functools
    import http.server
    import threading

    index = tmp_path / "site" / "enwiki"
    add_dump_folder(index, "20240601")
    add_dump_folder(index, "20240701", status="in-progress")
    (index / "latest").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/enwiki/"
        result = scan_source(base)
        assert ids(result.snapshots) == ["enwiki-20240601"]
        url = result.snapshots[0].path
        assert url == f"{base}20240601/{dump_name('20240601')}"
        assert [("20240701" in s.location, "in-progress" in s.reason) for s in result.skipped] == [(True, True)]
        local = Path(local_source(url, tmp_path / "data"))
        assert local.read_bytes() == SAMPLE.read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_watch_retries_a_listing_only_when_the_source_may_answer_later(tmp_path: Path) -> None:
    """A missing local folder or a file that is not a dump fails the watch at once (it used to be retried
    for half a minute); a remote source that did not answer is retried."""
    import socket

    from prefect.states import Failed

    from tasks.common import is_transient

    def retried(source: Path | str) -> bool:
        with pytest.raises(SnapshotSourceError) as failed:
            find_snapshots(source)
        return is_transient(None, None, Failed(data=failed.value))

    assert not retried(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    assert not retried(tmp_path / "notes.txt")
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert retried(f"http://127.0.0.1:{port}/enwiki/")


def test_bad_sources_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SnapshotSourceError, match="no such file or folder"):
        find_snapshots(tmp_path / "missing")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(SnapshotSourceError, match="not a dump file"):
        find_snapshots(other)
    single = tmp_path / dump_name("20240101")
    shutil.copyfile(SAMPLE, single)
    assert ids(find_snapshots(single)) == ["enwiki-20240101"]


def test_two_files_for_one_snapshot_are_skipped_not_guessed(tmp_path: Path) -> None:
    src = tmp_path / "dumps"
    (src / "20240101").mkdir(parents=True)
    shutil.copyfile(SAMPLE, src / dump_name("20240101"))
    shutil.copyfile(SAMPLE, src / "20240101" / dump_name("20240101"))
    result = scan_source(src)
    assert result.snapshots == []
    assert "several files for snapshot enwiki-20240101" in result.skipped[0].reason


# --- new snapshots and state ---------------------------------------------------------------------------


def test_new_dated_folder_is_detected_once(tmp_path: Path) -> None:
    index, data_dir = tmp_path / "enwiki", tmp_path / "data"
    add_dump_folder(index, "20240501")
    add_dump_folder(index, "20240601")
    add_dump_folder(index, "20240701", status="in-progress")

    plan = plan_snapshots(index, data_dir)
    # First poll: only the newest snapshot, no silent backfill of the whole index.
    assert ids(plan.new) == ["enwiki-20240601"]
    assert ids(plan.older) == ["enwiki-20240501"]
    assert ids(new_snapshots(index, data_dir, backfill=True)) == ["enwiki-20240501", "enwiki-20240601"]

    state = BuiltSnapshots.load(data_dir)
    state.record_triggered(plan.new[0], flow_run_id="run-1", deployment="lvm-pipeline/lvm-pipeline")
    assert new_snapshots(index, data_dir) == []  # triggered, still running: not again

    add_dump_folder(index, "20240801")
    assert ids(new_snapshots(index, data_dir)) == ["enwiki-20240801"]
    BuiltSnapshots.load(data_dir).record_triggered(find_snapshots(index)[-1], flow_run_id="run-2")
    assert new_snapshots(index, data_dir) == []

    # The in-progress dump becomes new once done, and only if nothing newer was handled: here it is older.
    (index / "20240701" / "dumpstatus.json").write_text(
        (index / "20240701" / "dumpstatus.json").read_text().replace("in-progress", "done")
    )
    plan = plan_snapshots(index, data_dir)
    assert plan.new == [] and "enwiki-20240701" in ids(plan.older)


def test_ready_datasets_count_as_built(tmp_path: Path) -> None:
    index, data_dir = tmp_path / "enwiki", tmp_path / "data"
    add_dump_folder(index, "20240601")
    add_dump_folder(index, "20240701")
    half_built = dataset_dir(data_dir, "enwiki-20240701")
    half_built.mkdir(parents=True)  # a failed build leaves no READY marker
    assert ids(new_snapshots(index, data_dir)) == ["enwiki-20240701"]

    (half_built / READY_MARKER).write_text("")
    plan = plan_snapshots(index, data_dir)
    assert plan.new == [] and ids(plan.built) == ["enwiki-20240701"]
    assert ids(plan.older) == ["enwiki-20240601"]
    # Another wiki's build does not make enwiki snapshots "older".
    other = dataset_dir(data_dir, "dewiki-20990101")
    other.mkdir(parents=True)
    (other / READY_MARKER).write_text("")
    add_dump_folder(index, "20240801")
    assert ids(new_snapshots(index, data_dir)) == ["enwiki-20240801"]


def test_watch_state_persists_and_rejects_garbage(tmp_path: Path) -> None:
    index, data_dir = tmp_path / "enwiki", tmp_path / "data"
    add_dump_folder(index, "20240601")
    snap = find_snapshots(index)[0]
    state = BuiltSnapshots.load(data_dir)
    assert state.trigger_key(snap.snapshot_id) == "lvm-snapshot-enwiki-20240601"
    rec = state.record_triggered(snap, flow_run_id="abc", deployment="lvm-pipeline/lvm-pipeline")

    path = data_dir / WATCH_STATE_FILE
    on_disk = json.loads(path.read_text())
    assert on_disk["triggered"]["enwiki-20240601"]["flow_run_id"] == "abc"
    assert not list(data_dir.glob(".watch_state.json.*.tmp"))  # atomic write left no temp file
    again = BuiltSnapshots.load(data_dir)
    assert again.triggered == {"enwiki-20240601": rec}
    assert again.is_handled("enwiki-20240601") and not again.is_built("enwiki-20240601")

    # Forgetting a trigger (e.g. its run failed) makes the snapshot new again, under a fresh run key.
    assert again.forget("enwiki-20240601") is True
    assert again.forget("enwiki-20240601") is False
    reloaded = BuiltSnapshots.load(data_dir)
    assert reloaded.trigger_key("enwiki-20240601") == "lvm-snapshot-enwiki-20240601-retry1"
    assert ids(new_snapshots(index, data_dir)) == ["enwiki-20240601"]

    path.write_text("{broken")
    with pytest.raises(WatchStateError, match="watch_state.json: not valid JSON"):
        BuiltSnapshots.load(data_dir)
    path.write_text(json.dumps({"version": 1, "triggered": {"x": {"snapshot_id": "x"}}}))
    with pytest.raises(WatchStateError, match="bad record for 'x'"):
        BuiltSnapshots.load(data_dir)


def test_undated_local_file_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, data_dir = tmp_path / "dumps", tmp_path / "data"
    src.mkdir()
    shutil.copyfile(SAMPLE, src / "enwiki-latest-pages-articles.xml.bz2")
    state = BuiltSnapshots.load(data_dir)
    first = plan_snapshots(src, data_dir, state=state)
    state.record_triggered(first.new[0])  # persists the digest computed by the scan
    calls: list[str] = []
    from lvm_core.snapshots import scanner as snapshots_scanner

    real = snapshots_scanner.snapshot_id_for
    monkeypatch.setattr(snapshots_scanner, "snapshot_id_for", lambda p: calls.append(str(p)) or real(p))
    second = plan_snapshots(src, data_dir)
    assert calls == []  # id came from the digest cache in watch_state.json
    assert ids(second.triggered) == ids(first.new)
