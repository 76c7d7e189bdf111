"""Work folders of the build: step keys, content-addressed folders and the `done.json` records of shards.

Each step writes into a folder keyed by its inputs (`<data_dir>/work/<step>-<key>/`), so an interrupted
build resumes from the last finished shard and an unchanged snapshot is not recomputed (a `cold` build
redoes every step instead). Kept apart from the steps so every stage keys and finishes its work the same way.
`lvm gc` (`gc.py`) removes these folders when no running build needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.data.build.records import StepRecord
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.io.storage import json_digest, read_json, write_json

# Bump when a step's output for the same inputs changes, so cached work is not reused.
STEP_VERSIONS = {"ingest": 4, "chunk": 2, "embed": 2, "assemble": 1, "analyse": 1, "reuse": 1}


def work_dir(data_dir: Path, step: str, key: str) -> Path:
    return Path(data_dir) / "work" / f"{step}-{key[:16]}"


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


def done_record(out_dir: Path, record_type: type[R]) -> R | None:
    """The record of a finished shard (`reused`), or None when the shard has to be (re)done."""
    try:
        record = read_json(Path(out_dir) / DONE_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(Path(f).exists() for f in record.get("files", [])):
        return None
    try:
        return record_type.from_dict(record, reused=True)
    except (KeyError, TypeError, ValueError):  # not a record this step writes: redo the shard
        return None


def finish_shard(out_dir: Path, record: R) -> R:
    """Write the shard's `done.json` last: from now on a rerun reuses its output."""
    write_json(Path(out_dir) / DONE_FILE, record.to_dict())
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
