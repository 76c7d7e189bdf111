"""Atomic publication of files and folders: write to a temp path beside the target, then rename.

A crash or a bad input never leaves a half-written dataset where the last good one was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.io.plain import json_default


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp file path in the target's folder; rename it over the target on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target` (the old one is removed only then)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging.", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, target)


_BACKUP_INFIX = ".old."


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished staging folder onto `target`; the old folder is removed only after the swap.

    A crash between the two renames leaves `.<name>.old.<pid>` and no `<name>`:
    `recover_interrupted_swaps` puts the old folder back.
    """
    staging, target = Path(staging), Path(target)
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}{_BACKUP_INFIX}{os.getpid()}")
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def recover_interrupted_swaps(root: Path) -> list[Path]:
    """Undo `replace_dir` swaps a crash cut in half under `root`; returns the folders put back.

    The backup is the last good folder: it goes back where it was when nothing replaced it, and is
    dropped when the new folder made it into place.
    """
    restored: list[Path] = []
    for backup in sorted(Path(root).glob(f".*{_BACKUP_INFIX}*")):
        name, sep, pid = backup.name[1:].rpartition(_BACKUP_INFIX)
        if not sep or not pid.isdigit() or not backup.is_dir() or int(pid) == os.getpid() or psutil.pid_exists(int(pid)):
            continue
        target = backup.with_name(name)
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(backup, target)
            restored.append(target)
    return restored


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (cheap, same filesystem) or copy a finished file into a staging folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    return cast(np.ndarray, np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))


def file_digest(path: Path, algo: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, streamed."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def json_digest(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys)."""
    data = json.dumps(obj, sort_keys=True, default=json_default).encode()
    return hashlib.sha256(data).hexdigest()


# Filesystems another machine may also write through: no place for SQLite's WAL (shared memory, byte locks).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "9p",
    "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "fuse.glusterfs", "fuse.cephfs",
})


def filesystem_type(path: Path) -> str:
    """The type of the filesystem that holds `path` (or its nearest existing parent), from the mount table."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    target, best, kind = str(p.resolve()), "", ""
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, part.fstype
    return kind

