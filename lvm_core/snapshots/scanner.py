"""List the snapshots of a source: a folder of dumps, dated sub-folders, a Wikimedia dumps index, or one file.

Any fsspec source (a plain path, `file://…`, `s3://…`, `https://…`). In a dumps index a dated folder counts
only once its articles job reports `"status": "done"` in `dumpstatus.json`; what cannot be used (yet) is
returned as a skipped entry with its reason rather than raised.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lvm_core.data.ingest.base import IngestError
from lvm_core.data.ingest.download import SnapshotSourceError
from lvm_core.data.ingest.sources import dated_snapshot_id, snapshot_id_for, snapshot_id_prefix
from lvm_core.snapshots.snapshot import (
    ARTICLES_JOBS,
    DATE_FOLDER,
    DUMPSTATUS_FILE,
    ScanResult,
    SkippedEntry,
    Snapshot,
    SourceKind,
    date_of_id,
    is_snapshot_file,
    name_rank,
    parse_yyyymmdd,
    pick_job_file,
    short_error,
)


@dataclass
class _Candidate:
    snapshot: Snapshot
    rank: int


class _Scanner:
    def __init__(self, source: str, id_cache: dict[str, str] | None) -> None:
        self.source = source
        try:
            self.fs, self.root = fsspec.core.url_to_fs(source)
        except (ValueError, ImportError) as exc:
            raise SnapshotSourceError(f"snapshot source {source!r}: cannot open ({exc})") from exc
        self.local = isinstance(self.fs, LocalFileSystem)
        self.id_cache = id_cache if id_cache is not None else {}
        self.skipped: list[SkippedEntry] = []

    def location(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedEntry(self.location(path), reason))

    def ls(self, path: str) -> list[dict[str, Any]]:
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: {path} does not exist",
                                      transient=not self.local) from exc
        except OSError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: cannot list {path} ({exc})",
                                      transient=True) from exc
        # Some filesystems list the folder itself; keep children only.
        return [e for e in entries if _strip(e["name"]) != _strip(path)]

    def scan(self) -> ScanResult:
        try:
            info = self.fs.info(self.root)
        except FileNotFoundError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: no such file or folder",
                                      transient=not self.local) from exc
        except OSError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: cannot read ({exc})", transient=True) from exc
        candidates: list[_Candidate] = []
        is_dir = info.get("type") == "directory"
        if not is_dir and not is_snapshot_file(_basename(self.root)):
            # HTTP reports every URL as a file; an index page is a folder when it lists links.
            is_dir = self.source.endswith("/") or self.fs.isdir(self.root)
        if not is_dir:
            name = _basename(self.root)
            if not is_snapshot_file(name):
                raise SnapshotSourceError(
                    f"snapshot source {self.source!r}: {name} is not a dump file "
                    "(*-pages-articles*.xml[.bz2], *.parquet, *.jsonl) nor a folder"
                )
            snap = self.file_snapshot(info, "file")
            if snap is not None:
                candidates.append(_Candidate(snap, name_rank(name)))
        else:
            for entry in sorted(self.ls(self.root), key=lambda e: e["name"]):
                name = _basename(entry["name"])
                if entry.get("type") == "directory":
                    if DATE_FOLDER.match(name) and parse_yyyymmdd(name):
                        cand = self.date_folder(entry["name"], parse_yyyymmdd(name))
                        if cand is not None:
                            candidates.append(cand)
                elif is_snapshot_file(name):
                    snap = self.file_snapshot(entry, "file")
                    if snap is not None:
                        candidates.append(_Candidate(snap, name_rank(name)))
        return ScanResult(self.resolve_duplicates(candidates), self.skipped)

    def resolve_duplicates(self, candidates: list[_Candidate]) -> list[Snapshot]:
        """Keep one file per snapshot id; when the best ones tie, skip the id rather than guess."""
        by_id: dict[str, list[_Candidate]] = {}
        for c in candidates:
            by_id.setdefault(c.snapshot.snapshot_id, []).append(c)
        chosen: list[Snapshot] = []
        for sid, group in by_id.items():
            best = min(c.rank for c in group)
            top = [c for c in group if c.rank == best]
            if len(top) == 1:
                chosen.append(top[0].snapshot)
                continue
            names = ", ".join(c.snapshot.path for c in top)
            self.skipped.append(
                SkippedEntry(sid, f"several files for snapshot {sid} ({names}); keep one of them")
            )
        return sorted(chosen, key=lambda s: (s.date, s.snapshot_id))

    def date_folder(self, path: str, date: dt.date | None) -> _Candidate | None:
        assert date is not None
        entries = self.ls(path)
        names = {_basename(e["name"]): e for e in entries}
        if DUMPSTATUS_FILE in names:
            return self.dumps_index_folder(path, date, names)
        files = [e for n, e in names.items() if e.get("type") != "directory" and is_snapshot_file(n)]
        if not files:
            self.skip(path, "dated folder without a dump file or dumpstatus.json")
            return None
        files.sort(key=lambda e: (name_rank(_basename(e["name"])), e["name"]))
        best_rank = name_rank(_basename(files[0]["name"]))
        if len(files) > 1 and name_rank(_basename(files[1]["name"])) == best_rank:
            listed = ", ".join(_basename(e["name"]) for e in files)
            self.skip(path, f"several dump files and none is the single-file dump ({listed})")
            return None
        snap = self.file_snapshot(files[0], "dated-folder", folder_date=date)
        return _Candidate(snap, best_rank) if snap is not None else None

    def dumps_index_folder(
        self, path: str, date: dt.date, names: Mapping[str, dict[str, Any]]
    ) -> _Candidate | None:
        status_path = f"{path.rstrip('/')}/{DUMPSTATUS_FILE}"
        try:
            status = json.loads(self.fs.cat_file(status_path))
        except (OSError, ValueError) as exc:
            self.skip(status_path, f"unreadable {DUMPSTATUS_FILE} ({short_error(exc)})")
            return None
        jobs = status.get("jobs") if isinstance(status, dict) else None
        if not isinstance(jobs, dict):
            self.skip(status_path, f"{DUMPSTATUS_FILE} has no 'jobs' object")
            return None
        seen: list[str] = []
        for job_name in ARTICLES_JOBS:
            job = jobs.get(job_name)
            if not isinstance(job, dict):
                continue
            job_status = str(job.get("status", "missing"))
            seen.append(f"{job_name}: {job_status}")
            if job_status != "done":
                continue
            files = job.get("files")
            if not isinstance(files, dict):
                files = {}
            chosen = pick_job_file(list(files))
            if chosen is None:
                continue
            file_path = f"{path.rstrip('/')}/{chosen}"
            entry = names.get(chosen)
            if entry is None:
                self.skip(file_path, f"{job_name} is done in {DUMPSTATUS_FILE} but the file is not in the folder")
                return None
            size = files[chosen].get("size") if isinstance(files[chosen], dict) else None
            snap = self.file_snapshot(
                {**entry, "size": entry.get("size") or size}, "dumps-index", folder_date=date
            )
            return _Candidate(snap, 0) if snap is not None else None
        detail = "; ".join(seen) if seen else "no articles dump job"
        self.skip(path, f"articles dump not ready ({detail})")
        return None

    def file_snapshot(
        self, entry: Mapping[str, Any], kind: SourceKind, folder_date: dt.date | None = None
    ) -> Snapshot | None:
        path = str(entry["name"])
        name = _basename(path)
        location = self.location(path)
        size = entry.get("size")
        sid = self.snapshot_id(name, path, entry, folder_date)
        if sid is None:
            return None
        date = date_of_id(sid) or folder_date or _modified_date(entry)
        if date is None:
            self.skip(path, "no date in the file name and no modification time to order it by")
            return None
        return Snapshot(sid, date, location, kind, int(size) if size is not None else None)

    def snapshot_id(
        self, name: str, path: str, entry: Mapping[str, Any], folder_date: dt.date | None
    ) -> str | None:
        dated = dated_snapshot_id(name)
        if dated is not None:
            return dated  # a dated name needs no file access
        prefix = snapshot_id_prefix(name)
        if folder_date is not None:
            return f"{prefix}-{folder_date:%Y%m%d}"
        key = f"{self.location(path)}|{entry.get('size')}|{_modified_stamp(entry)}"
        if key in self.id_cache:
            return self.id_cache[key]
        if self.local:
            try:
                sid = snapshot_id_for(path)  # content digest: an undated name says nothing
            except (IngestError, OSError) as exc:
                self.skip(path, f"cannot identify ({short_error(exc)})")
                return None
        else:
            # Hashing a remote multi-GB file on every poll is not an option; its metadata names it.
            sid = f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        self.id_cache[key] = sid
        return sid


def _basename(path: str) -> str:
    return _strip(path).rsplit("/", 1)[-1]


def _strip(path: str) -> str:
    return path.rstrip("/")


def _modified_stamp(entry: Mapping[str, Any]) -> str:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created", "ETag", "etag"):
        value = entry.get(key)
        if value is not None:
            return str(value)
    return ""


def _modified_date(entry: Mapping[str, Any]) -> dt.date | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), tz=dt.UTC).date()
        try:
            return dt.datetime.fromisoformat(str(value)).date()
        except ValueError:
            continue
    return None


def scan_source(source: str | Path, id_cache: dict[str, str] | None = None) -> ScanResult:
    """List the snapshots of `source` and the entries skipped with their reasons.

    `id_cache` (filled in place) maps a file's location/size/mtime to its digest-based id, so an
    undated local file is hashed once, not on every poll.
    """
    return _Scanner(str(source), id_cache).scan()


def find_snapshots(source: str | Path) -> list[Snapshot]:
    """Snapshots in `source`, oldest first (by date, then id)."""
    return scan_source(source).snapshots
