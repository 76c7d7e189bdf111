"""The work store: shared storage, given as an fsspec URL, through which machines with their own local data
folders hand each other finished work folders and published datasets.

Layout under the URL: `work/<step>-<key>/` (a finished shard's folder, as in `<data_dir>/work/`) and
`datasets/<id>/` (a published dataset). A folder counts as stored only once its `STORED` marker is there:
an upload copies every file, the folder's own completion file (`done.json`, `READY`, `index.json`) after
the others, and the marker last, listing the files. A half upload (a killed machine, a lost connection) has
no marker and is never taken; a download copies into a staging folder that replaces the local folder only
when every listed file arrived. Work folders are content-addressed (their key is their inputs), so two
machines uploading one folder upload the same work; a dataset folder is uploaded again at each publish
(its marker goes first, so nobody reads a mix of two publishes).

Only whole files travel: SQLite stays each machine's local cache (`layout.cache_root`), never on the store.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from lvm_core.contracts.errors import UserError
from lvm_core.data.ingest.base import one_line
from lvm_core.io.storage import atomic_dir

STORED_MARKER = "STORED"
# A folder's own completion file goes up after its other files (and the marker after it).
_LAST_FILES = ("done.json", "index.json", "READY")


class WorkStoreError(UserError, ValueError):
    """The work store URL cannot be used (unknown protocol, missing filesystem package, unreachable, not writable)."""


@dataclass(frozen=True)
class WorkStore:
    """A work store at `url` (any fsspec URL, or a plain path). Only the URL travels to Dask workers: each
    process opens its own filesystem (fsspec caches the instance)."""

    url: str

    def _fs(self) -> tuple[Any, str]:
        try:
            fs, root = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError) as exc:
            raise WorkStoreError(f"work store {self.url!r}: cannot open ({one_line(exc)})") from None
        return fs, str(root).rstrip("/")

    def check(self) -> None:
        """Refuse (one line) a store this machine cannot list and write, before any work is done."""
        fs, root = self._fs()
        probe = f"{root}/.probe-{_token()}"
        try:
            fs.makedirs(root, exist_ok=True)
            fs.pipe_file(probe, b"ok")
            fs.rm_file(probe)
        except Exception as exc:  # noqa: BLE001 - any backend's failure to write is the same user error
            raise WorkStoreError(f"work store {self.url!r}: not writable from this machine ({one_line(exc)})") from None

    def has(self, name: str) -> bool:
        """Whether the folder `name` (e.g. work/chunk-<key>) is fully stored."""
        fs, root = self._fs()
        return bool(fs.exists(f"{root}/{name}/{STORED_MARKER}"))

    def upload(self, local: Path, name: str, replace: bool = False) -> bool:
        """Copy the local folder to `name`: its files, its completion file after them, the marker last.

        A folder stored already is left as it is (content-addressed work) unless `replace` (a republished
        dataset: the old marker goes first). Returns whether anything was copied.
        """
        fs, root = self._fs()
        target = f"{root}/{name}"
        if fs.exists(f"{target}/{STORED_MARKER}"):
            if not replace:
                return False
            fs.rm_file(f"{target}/{STORED_MARKER}")
        local = Path(local)
        files = sorted((p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()),
                       key=lambda rel: (rel in _LAST_FILES, rel))
        for rel in files:
            fs.makedirs(f"{target}/{rel}".rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(local / rel), f"{target}/{rel}")
        fs.pipe_file(f"{target}/{STORED_MARKER}", json.dumps({"files": files}).encode())
        return True

    def download(self, name: str, local: Path) -> bool:
        """Copy the stored folder `name` onto the local folder (replaced as a whole only once every file is
        in); False when the store does not hold it fully (no marker)."""
        fs, root = self._fs()
        source = f"{root}/{name}"
        try:
            files = json.loads(fs.cat_file(f"{source}/{STORED_MARKER}"))["files"]
        except FileNotFoundError:
            return False
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkStoreError(f"{self.url}/{name}/{STORED_MARKER}: unreadable marker ({one_line(exc)})") from None
        with atomic_dir(Path(local)) as staging:
            for rel in files:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{source}/{rel}", str(staging / rel))
        return True

    def read_json(self, name: str, file: str) -> Any:
        """A JSON file of the fully stored folder `name`, or None when the store does not hold the folder."""
        fs, root = self._fs()
        if not fs.exists(f"{root}/{name}/{STORED_MARKER}"):
            return None
        try:
            return json.loads(fs.cat_file(f"{root}/{name}/{file}"))
        except (FileNotFoundError, ValueError):
            return None

    def names(self, folder: str) -> list[str]:
        """The fully stored folders directly under `folder` (e.g. "work"), by name."""
        fs, root = self._fs()
        try:
            entries = fs.ls(f"{root}/{folder}", detail=False)
        except FileNotFoundError:
            return []
        found = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in found if fs.exists(f"{root}/{folder}/{n}/{STORED_MARKER}"))


def open_store(url: str | None) -> WorkStore | None:
    """The work store of a URL (None without one)."""
    return WorkStore(url.strip()) if url and url.strip() else None


def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
