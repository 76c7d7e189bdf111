"""The work store: folders go up with their completion file and marker last, a half upload is never taken,
and a machine with its own data folder reads another machine's shard records as its own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvm_core.contracts.build_options import BuildConfig, BuildOptions
from lvm_core.data.build.records import ChunkedShard
from lvm_core.data.build.store import STORED_MARKER, WorkStore, WorkStoreError
from lvm_core.data.build.work import DONE_FILE, done_record, finish_shard, local_work_file, work_dir, work_ref


def _shard(data_dir: Path, store: WorkStore | None = None) -> tuple[Path, ChunkedShard]:
    out = work_dir(data_dir, "chunk", "ab" * 32)
    out.mkdir(parents=True)
    (out / "chunks.parquet").write_bytes(b"chunks")
    (out / "previous_rows.npy").write_bytes(b"rows")
    record = ChunkedShard(file=str(out / "chunks.parquet"), articles=1, chunks=2, bytes=6, seconds=0.1,
                          previous_rows=str(out / "previous_rows.npy"))
    return out, finish_shard(out, record, store)


def test_upload_puts_the_completion_file_and_the_marker_last(tmp_path: Path, monkeypatch):
    store = WorkStore(f"file://{tmp_path / 'store'}")
    fs, _ = store._fs()
    order: list[str] = []
    put, pipe = fs.put_file, fs.pipe_file
    monkeypatch.setattr(fs, "put_file", lambda lpath, rpath, **kw: (order.append(Path(rpath).name), put(lpath, rpath, **kw)))
    monkeypatch.setattr(fs, "pipe_file", lambda path, value, **kw: (order.append(Path(path).name), pipe(path, value, **kw)))
    out, _ = _shard(tmp_path / "a", store)
    assert order == ["chunks.parquet", "previous_rows.npy", DONE_FILE, STORED_MARKER]
    assert store.has(f"work/{out.name}")
    assert not store.upload(out, f"work/{out.name}")  # content-addressed: stored once


def test_a_half_uploaded_folder_is_not_taken(tmp_path: Path):
    store = WorkStore(str(tmp_path / "store"))
    out, _ = _shard(tmp_path / "a")
    half = tmp_path / "store" / "work" / out.name
    half.mkdir(parents=True)
    for name in ("chunks.parquet", DONE_FILE):  # every file, even done.json, but no marker: a cut upload
        (half / name).write_bytes((out / name).read_bytes())
    other = work_dir(tmp_path / "b", "chunk", "ab" * 32)
    assert done_record(other, ChunkedShard, store) is None
    assert not other.exists() and not store.download(f"work/{out.name}", other)


def test_another_machine_takes_the_shard_as_its_own_files(tmp_path: Path):
    store = WorkStore(f"file://{tmp_path / 'store'}")
    out, made = _shard(tmp_path / "a", store)
    other = work_dir(tmp_path / "b", "chunk", "ab" * 32)
    record = done_record(other, ChunkedShard, store)
    assert record is not None and record.reused
    assert record.file == str(other / "chunks.parquet") and record.previous_rows == str(other / "previous_rows.npy")
    assert (other / "chunks.parquet").read_bytes() == b"chunks"
    # a record that came over the network names machine a's paths: the same work file here, same key part
    assert work_ref(made.file) == work_ref(record.file) == f"{out.name}/chunks.parquet"
    third = tmp_path / "c"
    assert local_work_file(made.file, third, store) == third / "work" / out.name / "chunks.parquet"
    assert (third / "work" / out.name / DONE_FILE).is_file()
    assert local_work_file("/elsewhere/articles.parquet", third, store) == Path("/elsewhere/articles.parquet")
    assert json.loads((tmp_path / "store" / "work" / out.name / STORED_MARKER).read_text())["files"][-1] == DONE_FILE


@pytest.mark.parametrize("url", ["nosuchprotocol://bucket/lvm", "file:///proc/lvm-store"])
def test_a_bad_or_unwritable_store_is_one_line(url: str):
    with pytest.raises(WorkStoreError, match="work store") as err:
        WorkStore(url).check()
    assert "\n" not in str(err.value)


def test_a_worker_keeps_its_own_data_folder_only_with_a_store(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LVM_LOCAL_DATA_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("LVM_WORK_URL", "")
    plain = BuildConfig.from_parts("sample", str(tmp_path / "data"), None, None, None)
    assert plain.work_url is None and plain.work_data_dir() == tmp_path / "data"
    monkeypatch.setenv("LVM_WORK_URL", f"file://{tmp_path / 'store'}")
    shared = BuildConfig.from_parts("sample", str(tmp_path / "data"), None, None, BuildOptions())
    assert shared.work_url == f"file://{tmp_path / 'store'}" and shared.work_data_dir() == tmp_path / "local"
    assert shared.resolved_data_dir() == tmp_path / "data"


def _published(root: Path, content_hash: str) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"dataset_id": root.name, "snapshot_id": "enwiki-20260101",
                                                    "content_hash": content_hash, "created_at": "x"}))
    (root / "articles.parquet").write_bytes(b"articles")
    (root / "READY").write_text("now\n")
    return root


def test_a_machine_reads_the_previous_dataset_from_the_store(tmp_path: Path):
    from lvm_core.data.build.family import FamilyError, ensure_stored, find_previous_dataset, local_dataset

    store = WorkStore(f"file://{tmp_path / 'store'}")
    root = _published(tmp_path / "flow" / "datasets" / "enwiki-20260101", "h1")
    ensure_stored(root, root.name, "h1", store)
    assert (tmp_path / "store" / "datasets" / root.name / STORED_MARKER).is_file()
    worker = tmp_path / "worker"
    got = local_dataset(root, root.name, "h1", worker, store)
    assert got == worker / "datasets" / root.name and (got / "articles.parquet").read_bytes() == b"articles"
    with pytest.raises(FamilyError, match="neither"):
        local_dataset(root, root.name, "another content", tmp_path / "third", store)
    # a new machine's build of the next month finds it on the store and downloads it
    previous = find_previous_dataset(tmp_path / "fresh", "enwiki-20260201", "enwiki-20260201", store)
    assert previous is not None and previous.root == tmp_path / "fresh" / "datasets" / root.name
    assert (previous.root / "READY").is_file()
