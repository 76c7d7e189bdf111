"""`lvm gc`: remove the work folders and staging leftovers that no published dataset or running build needs.

What needs what:

- A published dataset needs nothing under `<data_dir>/work/`: the build hard-links (or copies) its assembled
  files into the staging folder (`storage.link_or_copy`), so removing a work folder only drops one of two links
  and frees nothing of it. gc still keeps any work folder that a dataset file reaches through a symbolic link
  (none is made by the build; a hand-made one is respected) and counts as freed only the bytes whose last link
  goes.
- A running build needs every work folder (it resumes from and writes into them). A build holds a *shared*
  `flock` on `<data_dir>/work/.lock` for its whole run (`work_in_use`); gc takes it *exclusively* without
  waiting: when a build holds it, no work folder is touched and gc says so. A build that starts while gc runs
  waits for it. Chosen over records of the folders each build uses because the kernel drops the lock of a
  killed build at once: there is no stale record to judge, no pid to check, and nothing for a build's tasks on
  other machines to report (they work for the coordinator that holds the lock). Limit: `flock` is only
  reliable on a local filesystem; with a data folder shared between machines, run gc where the builds'
  coordinators run.
- Staging folders (`datasets/.staging-*`) go only when their owner is provably gone (`liveness`, as every
  build's own clean-up does); a publish cut between its two renames is finished or undone first.

The embedding cache, downloads, models, published datasets and set-aside failed builds are never touched.
Neither is a work store (`--work-url`, `store.py`): gc frees a machine's local data folder only (a folder it
removes is downloaded again when a build needs it); the store's `work/` is left to the storage's own tools.
A worker with its own data folder (`LVM_LOCAL_DATA_DIR`) holds no build's lock: run gc there between builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lvm_core.contracts.layout import datasets_root
from lvm_core.data.build.publish import STAGING_PREFIX, STAGING_STALE_AFTER_S
from lvm_core.io.storage import recover_interrupted_swaps
from lvm_core.runtime.liveness import abandoned_dirs

LOCK_FILE = ".lock"


def work_root(data_dir: Path) -> Path:
    return Path(data_dir) / "work"


@contextlib.contextmanager
def work_in_use(data_dir: Path) -> Iterator[None]:
    """Held by a build for its whole run (a shared lock: builds run side by side); waits while gc runs."""
    fd = _open_lock(data_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_lock(data_dir: Path) -> int:
    root = work_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    return os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)


@dataclass(frozen=True)
class GcItem:
    """A folder gc removes (or would), the bytes that frees, and why it may go."""

    path: str
    bytes: int
    why: str


@dataclass(frozen=True)
class GcReport:
    """What a gc run removed (or, dry, would remove), what it kept and why."""

    data_dir: str
    dry_run: bool
    removed: list[GcItem] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # one line each: what stayed and why
    repaired: list[str] = field(default_factory=list)  # interrupted publishes finished or undone

    @property
    def bytes_freed(self) -> int:
        return sum(i.bytes for i in self.removed)


def collect_garbage(data_dir: Path, dry_run: bool = False) -> GcReport:
    """Remove (or with `dry_run` only list) unneeded work folders and abandoned staging folders."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such data folder")
    report = GcReport(str(data_dir), dry_run)
    fd = _open_lock(data_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.kept.append(f"{work_root(data_dir)}: a build is running (it holds {LOCK_FILE}); work folders kept")
        else:
            _collect(report, _work_folders(data_dir), dry_run)
    finally:
        os.close(fd)
    if not dry_run:
        report.repaired.extend(f"restored {p}" for p in recover_interrupted_swaps(datasets_root(data_dir)))
    _collect(report, _abandoned_staging(data_dir), dry_run)
    return report


def _work_folders(data_dir: Path) -> list[tuple[Path, str]]:
    """Every entry of work/ but the lock, less what a dataset file links into (kept: never freed)."""
    root = work_root(data_dir)
    if not root.is_dir():
        return []
    linked = _linked_from_datasets(data_dir)
    out = []
    for path in sorted(root.iterdir()):
        if path.name == LOCK_FILE:
            continue
        if any(path == p or path in p.parents for p in linked):
            continue
        out.append((path, "work folder: no build running, no dataset links into it"))
    return out


def _linked_from_datasets(data_dir: Path) -> set[Path]:
    """Targets under work/ of the symbolic links in dataset folders (the build makes none)."""
    root, work = datasets_root(data_dir), work_root(data_dir).resolve()
    found: set[Path] = set()
    if not root.is_dir():
        return found
    for path in root.rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            if work in target.parents:
                found.add(work_root(data_dir) / target.relative_to(work).parts[0])
    return found


def _abandoned_staging(data_dir: Path) -> list[tuple[Path, str]]:
    root = datasets_root(data_dir)
    if not root.is_dir():
        return []
    stages = sorted(p for p in root.glob(f"{STAGING_PREFIX}*") if p.is_dir())
    return [(p, f"staging folder of a dead build: {why}")
            for p, why in abandoned_dirs(stages, stale_after=STAGING_STALE_AFTER_S)]


def _collect(report: GcReport, folders: list[tuple[Path, str]], dry_run: bool) -> None:
    for path, why in folders:
        report.removed.append(GcItem(str(path), freed_bytes(path), why))
        if not dry_run:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def freed_bytes(path: Path) -> int:
    """Bytes removing `path` frees: files whose every hard link lies under it (a dataset's link keeps its data)."""
    if path.is_symlink() or path.is_file():
        st = path.lstat()
        return st.st_size if path.is_symlink() or st.st_nlink <= 1 else 0
    seen: dict[tuple[int, int], list[int]] = {}  # inode -> [links met here, links in all, size]
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            entry = seen.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_size])
            entry[0] += 1
    return sum(size for met, links, size in seen.values() if met >= links)
