"""Work folders of the build: step keys, content-addressed folders and the `done.json` records of shards.

Each step writes into a folder keyed by its inputs (`<data_dir>/work/<step>-<key>/`), so an interrupted
build resumes from the last finished shard and an unchanged snapshot is not recomputed (a `cold` build
redoes every step instead). Kept apart from the steps so every stage keys and finishes its work the same way.
`lvm gc` (`gc.py`) removes these folders when no running build needs them.

With a work store (`BuildOptions.work_url`, `store.py`) each machine keeps its own data folder and the store
carries the finished folders between them: a finished shard is uploaded, a shard missing here is downloaded
when the store holds it, and a path another machine wrote (a record's files) is read as the same work file
under this machine's data folder (`local_work_file`), fetched from the store when it is not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.build_options import BuildConfig
from lvm_core.data.build.records import StepRecord
from lvm_core.data.build.store import WorkStore, open_store
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.io.storage import json_digest, read_json, write_json

# Bump when a step's output for the same inputs changes, so cached work is not reused.
STEP_VERSIONS = {"ingest": 4, "chunk": 2, "embed": 2, "assemble": 1, "analyse": 1, "reuse": 1}


WORK = "work"
_WORK_FOLDER = re.compile(r"^[a-z]+-[0-9a-f]{16}$")


def work_dir(data_dir: Path, step: str, key: str) -> Path:
    return Path(data_dir) / WORK / f"{step}-{key[:16]}"


def _work_parts(path: str | Path) -> tuple[str, ...] | None:
    """`(<step>-<key>, <name>...)` of a work folder or a path inside one (of any data folder), else None."""
    parts = Path(path).parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] == WORK and _WORK_FOLDER.match(parts[i]):
            return parts[i:]
    return None


def work_ref(path: str | Path) -> str:
    """A work file named without its data folder (`<step>-<key>/<name>`; other paths as they are): keys
    chained from a file (a chunk shard's from its article file, ...) are then the same on every machine."""
    parts = _work_parts(path)
    return str(path) if parts is None else "/".join(parts)


def work_store(config: BuildConfig) -> WorkStore | None:
    """The build's work store, if it has one."""
    return open_store(config.work_url)


def fetch_work_dir(out_dir: Path, store: WorkStore | None) -> bool:
    """Download a work folder this machine lacks (no `done.json` here) when the store holds it; whether it did."""
    out_dir = Path(out_dir)
    if store is None or (out_dir / DONE_FILE).is_file():
        return False
    return store.download(f"{WORK}/{out_dir.name}", out_dir)


def local_work_file(path: str | Path, data_dir: Path, store: WorkStore | None) -> Path:
    """The work file `path` (written on any machine) as a file of this machine's data folder, its folder fetched
    from the store when it is not here; a path outside a work folder is returned as it is."""
    parts = _work_parts(path)
    if parts is None:
        return Path(path)
    local = Path(data_dir, WORK, *parts)
    if store is not None and not local.exists():
        store.download(f"{WORK}/{parts[0]}", Path(data_dir) / WORK / parts[0])
    return local


def upload_work_dir(out_dir: Path, store: WorkStore | None) -> None:
    """Put a finished work folder (or an index a coordinator built) on the store for the other machines."""
    if store is not None:
        store.upload(Path(out_dir), f"{WORK}/{Path(out_dir).name}")


def step_key(step: str, *parts: Any) -> str:
    return json_digest([step, STEP_VERSIONS[step], *parts])


# Ingest, chunk and embed work shard by shard, so memory is bounded by a shard and shards can run on
# other processes or machines (`flows/infra/runners.py`). Each shard's output lives in a work folder keyed by
# its inputs and is published atomically with a `done.json` record written last: a rerun redoes only the
# shards without one. Tasks exchange the small records these steps return (paths and counts, `records.py`),
# never data.

DONE_FILE = "done.json"
Progress = Callable[[int], None]
R = TypeVar("R", bound=StepRecord)


def done_record(out_dir: Path, record_type: type[R], store: WorkStore | None = None) -> R | None:
    """The record of a finished shard (`reused`), or None when the shard has to be (re)done.

    A shard not finished here is taken from the work store when another machine stored it; its record's paths
    (written where it was made) are read as this machine's (`local_work_file`).
    """
    out_dir = Path(out_dir)
    fetch_work_dir(out_dir, store)
    try:
        data = read_json(out_dir / DONE_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        record = record_type.from_dict(data, reused=True)
    except (KeyError, TypeError, ValueError):  # not a record this step writes: redo the shard
        return None
    record = local_record(record, out_dir.parent.parent, store)
    return record if all(Path(f).exists() for f in record.files) else None


def local_record(record: R, data_dir: Path, store: WorkStore | None) -> R:
    """The record with each of its paths read as this machine's (`local_work_file`, fetched when missing)."""
    return record.relocated(lambda f: str(local_work_file(f, data_dir, store)))


def finish_shard(out_dir: Path, record: R, store: WorkStore | None = None) -> R:
    """Write the shard's `done.json` last: from now on a rerun reuses its output (and, with a work store, any
    other machine: the folder is uploaded once finished)."""
    write_json(Path(out_dir) / DONE_FILE, record.to_dict())
    upload_work_dir(out_dir, store)
    return record


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    """Columns of a shard file; an unreadable one fails with one line naming it."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable shard file ({' '.join(str(exc).split())[:200]})") from None


def open_shard_file(path: Path) -> pq.ParquetFile:
    """A shard file opened for batch reading; an unreadable one fails with one line naming it."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(f"{path}: not a readable shard file ({' '.join(str(exc).split())[:200]})") from None


def parquet_rows(path: Path) -> int | None:
    """Rows of a shard file from its footer, or None when it cannot be read (the step then names it)."""
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - the step itself reports an unreadable file, naming it
        return None
