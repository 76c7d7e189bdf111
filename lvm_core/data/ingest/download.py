"""Turn a snapshot source string into a file the ingest step can open, fetching remote files once.

The dataset build and the snapshot watcher both name sources the same way (a path, `file://…`, or any
fsspec URL); this is the one place that maps such a name to a local file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import default_data_dir, downloads_dir
from lvm_core.io.storage import atomic_path

__all__ = ["SnapshotSourceError", "local_source"]


class SnapshotSourceError(UserError, ValueError):
    """The snapshot source cannot be listed (missing folder, bad URL, unreadable listing).

    `transient` says whether the same call may succeed later: a remote source that did not answer (HTTP
    reports a refused connection as a missing file), as opposed to a local path that is not there; a
    transient one is retried (`permanent` is its opposite).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.permanent = not transient


def local_source(source: str, data_dir: str | Path | None = None) -> str:
    """A path the ingest step can open: local paths and `file://` URLs as they are, remote files copied.

    Remote (fsspec) files are downloaded once into `<data_dir>/downloads/<url digest>/<name>` through a
    temp file, so an interrupted download never passes for a complete one. "sample" and other
    non-URL strings are returned unchanged.
    """
    if "://" not in source:
        return source
    try:
        fs, path = fsspec.core.url_to_fs(source)
    except (ValueError, ImportError) as exc:
        raise SnapshotSourceError(f"snapshot source {source!r}: cannot open ({exc})") from exc
    if isinstance(fs, LocalFileSystem):
        return cast(str, path)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise SnapshotSourceError(f"snapshot source {source!r}: no such file") from exc
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    target = downloads_dir(root) / digest / path.rstrip("/").rsplit("/", 1)[-1]
    size = info.get("size")
    if target.is_file() and (size is None or target.stat().st_size == int(size)):
        return str(target)
    with atomic_path(target) as tmp:
        fs.get_file(path, str(tmp))
        if size is not None and tmp.stat().st_size != int(size):
            raise SnapshotSourceError(
                f"snapshot source {source!r}: downloaded {tmp.stat().st_size} bytes, expected {size}"
            )
    return str(target)
