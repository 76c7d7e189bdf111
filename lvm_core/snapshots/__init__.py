"""Find Wikipedia snapshots in a folder or a Wikimedia-style dumps index, and tell which are new.

A watcher polls a source on a schedule and must start exactly one pipeline run per new snapshot. This
module answers "what snapshots are there" and "which of them were neither built nor triggered yet",
without Prefect, so the rules can be tested and used from a notebook.

Sources (a plain path, `file://…`, or any fsspec URL such as `s3://…` or `https://…`):

- a folder of dump files: `*-pages-articles*.xml[.bz2]`, `*.parquet`, `*.jsonl` (one file = one snapshot);
- a folder of dated sub-folders `YYYYMMDD/` holding such files;
- a Wikimedia dumps index (`https://dumps.wikimedia.org/enwiki/` or a mirror of it): dated folders with a
  `dumpstatus.json`; a folder counts only once its articles job reports `"status": "done"`;
- a single dump file.

Snapshot ids follow `lvm_core.data.ingest.snapshot_id_for` (`enwiki-20240601` for a dated dump name), so
the watcher, the dataset folder and the MLflow tags all name a snapshot the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lvm_core import contracts
from lvm_core.data.ingest import IngestError, dated_snapshot_id, snapshot_id_for, snapshot_id_prefix
from lvm_core.data.ingest.download import SnapshotSourceError
from lvm_core.io.storage import read_json, write_json

__all__ = [
    "DUMPSTATUS_FILE",
    "ARTICLES_JOBS",
    "BuiltSnapshots",
    "ScanResult",
    "SkippedEntry",
    "Snapshot",
    "SnapshotSourceError",
    "TriggerRecord",
    "WatchPlan",
    "WatchStateError",
    "find_snapshots",
    "is_snapshot_file",
    "new_snapshots",
    "plan_snapshots",
    "scan_source",
    "watch_lock",
    "wiki_of",
]

SourceKind = Literal["file", "dated-folder", "dumps-index"]

DUMPSTATUS_FILE = "dumpstatus.json"
# Jobs of a Wikimedia dump run that produce pages-articles files, best first: large wikis split
# `articlesdump` into parts and publish the single-file dump from `articlesdumprecombine`.
ARTICLES_JOBS: tuple[str, ...] = (
    "articlesdumprecombine",
    "articlesdump",
    "articlesmultistreamdumprecombine",
    "articlesmultistreamdump",
)

_XML_DUMP = re.compile(r"-pages-articles[^/]*\.xml(?:\.bz2)?$")
_TABULAR_SUFFIXES = (".parquet", ".jsonl")
_COMBINED = re.compile(r"-pages-articles\.xml(?:\.bz2)?$")
_COMBINED_MULTISTREAM = re.compile(r"-pages-articles-multistream\.xml(?:\.bz2)?$")
_DATE_FOLDER = re.compile(r"^(?:19|20)\d{6}$")
_DATED_ID = re.compile(r"^(?P<wiki>.+)-(?P<date>(?:19|20)\d{6})$")


class WatchStateError(ValueError):
    """`watch_state.json` exists but is not a state file this module wrote."""


@dataclass(frozen=True)
class Snapshot:
    """One buildable snapshot: a single dump file and the id its dataset folder will carry."""

    snapshot_id: str
    date: dt.date
    path: str  # local path for local sources, else the fsspec URL of the file
    source_kind: SourceKind
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["date"] = self.date.isoformat()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        return cls(
            snapshot_id=str(d["snapshot_id"]),
            date=dt.date.fromisoformat(str(d["date"])),
            path=str(d["path"]),
            source_kind=d["source_kind"],
            size=d.get("size"),
        )


@dataclass(frozen=True)
class SkippedEntry:
    """Something in the source that looks like a snapshot but cannot be used (yet), and why."""

    location: str
    reason: str


@dataclass
class ScanResult:
    snapshots: list[Snapshot]
    skipped: list[SkippedEntry]


def is_snapshot_file(name: str) -> bool:
    """True for names the ingest step reads: pages-articles XML (optionally bz2), Parquet, JSONL."""
    if name.startswith((".", "_")):
        return False  # partial downloads, hidden and metadata files
    return bool(_XML_DUMP.search(name)) or name.endswith(_TABULAR_SUFFIXES)


def wiki_of(snapshot_id: str) -> str:
    """The wiki part of a snapshot id (`enwiki-20240601` -> `enwiki`); "newer" is judged per wiki."""
    return snapshot_id.rsplit("-", 1)[0] if "-" in snapshot_id else snapshot_id


def _date_of_id(snapshot_id: str) -> dt.date | None:
    m = _DATED_ID.match(snapshot_id)
    return _parse_yyyymmdd(m["date"]) if m else None


def _parse_yyyymmdd(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _name_rank(name: str) -> int:
    """Preference among files of one snapshot: the single-file dump, then multistream, then others."""
    if _COMBINED.search(name):
        return 0
    if _COMBINED_MULTISTREAM.search(name):
        return 1
    return 2


# --- scanning -----------------------------------------------------------------------------------------


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
            raise SnapshotSourceError(f"snapshot source {self.source!r}: {path} does not exist") from exc
        except OSError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: cannot list {path} ({exc})") from exc
        # Some filesystems list the folder itself; keep children only.
        return [e for e in entries if _strip(e["name"]) != _strip(path)]

    def scan(self) -> ScanResult:
        try:
            info = self.fs.info(self.root)
        except FileNotFoundError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: no such file or folder") from exc
        except OSError as exc:
            raise SnapshotSourceError(f"snapshot source {self.source!r}: cannot read ({exc})") from exc
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
                candidates.append(_Candidate(snap, _name_rank(name)))
        else:
            for entry in sorted(self.ls(self.root), key=lambda e: e["name"]):
                name = _basename(entry["name"])
                if entry.get("type") == "directory":
                    if _DATE_FOLDER.match(name) and _parse_yyyymmdd(name):
                        cand = self.date_folder(entry["name"], _parse_yyyymmdd(name))
                        if cand is not None:
                            candidates.append(cand)
                elif is_snapshot_file(name):
                    snap = self.file_snapshot(entry, "file")
                    if snap is not None:
                        candidates.append(_Candidate(snap, _name_rank(name)))
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
        files.sort(key=lambda e: (_name_rank(_basename(e["name"])), e["name"]))
        best_rank = _name_rank(_basename(files[0]["name"]))
        if len(files) > 1 and _name_rank(_basename(files[1]["name"])) == best_rank:
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
            self.skip(status_path, f"unreadable {DUMPSTATUS_FILE} ({_one_line(exc)})")
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
            files = job.get("files") if isinstance(job.get("files"), dict) else {}
            chosen = _pick_job_file(list(files))
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
        date = _date_of_id(sid) or folder_date or _modified_date(entry)
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
                self.skip(path, f"cannot identify ({_one_line(exc)})")
                return None
        else:
            # Hashing a remote multi-GB file on every poll is not an option; its metadata names it.
            sid = f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        self.id_cache[key] = sid
        return sid


def _pick_job_file(names: list[str]) -> str | None:
    """The single-file articles dump of a job, or its only file; None for multi-part only."""
    ranked = sorted((n for n in names if _XML_DUMP.search(n) or n.endswith(".bz2")), key=lambda n: (_name_rank(n), n))
    if not ranked:
        return None
    if _name_rank(ranked[0]) < 2 or len(ranked) == 1:
        return ranked[0]
    return None


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
            return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc).date()
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc).date()
        try:
            return dt.datetime.fromisoformat(str(value)).date()
        except ValueError:
            continue
    return None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


def scan_source(source: str | Path, id_cache: dict[str, str] | None = None) -> ScanResult:
    """List the snapshots of `source` and the entries skipped with their reasons.

    `id_cache` (filled in place) maps a file's location/size/mtime to its digest-based id, so an
    undated local file is hashed once, not on every poll.
    """
    return _Scanner(str(source), id_cache).scan()


def find_snapshots(source: str | Path) -> list[Snapshot]:
    """Snapshots in `source`, oldest first (by date, then id)."""
    return scan_source(source).snapshots


# --- state: what is built or already triggered --------------------------------------------------------


@dataclass(frozen=True)
class TriggerRecord:
    """A pipeline run the watcher started for a snapshot."""

    snapshot_id: str
    date: str  # ISO date of the snapshot
    path: str
    triggered_at: str  # ISO timestamp, UTC
    flow_run_id: str | None = None
    deployment: str | None = None


_LOCKS: dict[str, Any] = {}


@contextlib.contextmanager
def watch_lock(data_dir: str | Path | None = None, timeout: float = 120.0) -> Iterator[None]:
    """Hold the data dir's watch lock: two watchers never read-trigger-record the same state at once.

    Re-entrant within a process (one lock object per path).
    """
    from filelock import FileLock, Timeout

    root = Path(data_dir) if data_dir is not None else contracts.default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    lock_path = str((root / f".{contracts.WATCH_STATE_FILE}.lock").resolve())
    lock = _LOCKS.setdefault(lock_path, FileLock(lock_path, thread_local=False))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise TimeoutError(f"{lock_path}: another snapshot watcher held the lock for {timeout:g} s") from exc
    try:
        yield
    finally:
        lock.release()


@dataclass
class BuiltSnapshots:
    """Which snapshots need no new run: READY datasets in the data dir, plus those already triggered.

    Triggered ones live in `<data_dir>/watch_state.json` so a run that is still going (or queued behind
    a concurrency limit) is not started a second time.
    """

    data_dir: Path
    built: frozenset[str]
    triggered: dict[str, TriggerRecord] = field(default_factory=dict)
    id_cache: dict[str, str] = field(default_factory=dict)
    forgotten: dict[str, int] = field(default_factory=dict)  # snapshot id -> times its record was dropped

    @property
    def state_path(self) -> Path:
        return Path(self.data_dir) / contracts.WATCH_STATE_FILE

    @classmethod
    def load(cls, data_dir: str | Path | None = None) -> BuiltSnapshots:
        root = Path(data_dir) if data_dir is not None else contracts.default_data_dir()
        built = frozenset(_ready_ids(root))
        state = _read_state(root / contracts.WATCH_STATE_FILE)
        return cls(root, built, state.triggered, state.id_cache, state.forgotten)

    def is_built(self, snapshot_id: str) -> bool:
        return snapshot_id in self.built

    def is_triggered(self, snapshot_id: str) -> bool:
        return snapshot_id in self.triggered

    def is_handled(self, snapshot_id: str) -> bool:
        return self.is_built(snapshot_id) or self.is_triggered(snapshot_id)

    def trigger_key(self, snapshot_id: str) -> str:
        """Idempotency key of the run for this snapshot: the API refuses a second run with the same key,
        and a `forget` moves to a fresh key so a deliberate re-trigger is possible."""
        n = self.forgotten.get(snapshot_id, 0)
        return f"lvm-snapshot-{snapshot_id}" + (f"-retry{n}" if n else "")

    def handled_dates(self) -> dict[str, list[dt.date]]:
        """Dates of built or triggered snapshots per wiki (built ids count when their id is dated)."""
        out: dict[str, list[dt.date]] = {}
        for sid in self.built:
            date = _date_of_id(sid)
            if date is not None:
                out.setdefault(wiki_of(sid), []).append(date)
        for rec in self.triggered.values():
            out.setdefault(wiki_of(rec.snapshot_id), []).append(dt.date.fromisoformat(rec.date))
        return out

    def record_triggered(
        self, snapshot: Snapshot, flow_run_id: str | None = None, deployment: str | None = None
    ) -> TriggerRecord:
        """Persist that `snapshot` was triggered (merged with the file's current content, under the lock)."""
        rec = TriggerRecord(
            snapshot_id=snapshot.snapshot_id,
            date=snapshot.date.isoformat(),
            path=snapshot.path,
            triggered_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            flow_run_id=flow_run_id,
            deployment=deployment,
        )
        with watch_lock(self.data_dir):
            state = _read_state(self.state_path)
            state.triggered[rec.snapshot_id] = rec
            state.id_cache.update(self.id_cache)
            _write_state(self.state_path, state)
        self._adopt(state)
        return rec

    def forget(self, snapshot_id: str) -> bool:
        """Drop a trigger record (e.g. after its run failed) so the next poll starts it again."""
        with watch_lock(self.data_dir):
            state = _read_state(self.state_path)
            found = state.triggered.pop(snapshot_id, None) is not None
            if found:
                state.forgotten[snapshot_id] = state.forgotten.get(snapshot_id, 0) + 1
                _write_state(self.state_path, state)
        self._adopt(state)
        return found

    def save_id_cache(self) -> None:
        """Persist digests computed during a scan (merged under the lock)."""
        with watch_lock(self.data_dir):
            state = _read_state(self.state_path)
            if any(state.id_cache.get(k) != v for k, v in self.id_cache.items()):
                state.id_cache.update(self.id_cache)
                _write_state(self.state_path, state)
        self._adopt(state)

    def _adopt(self, state: _State) -> None:
        self.triggered = state.triggered
        self.id_cache = state.id_cache
        self.forgotten = state.forgotten


def _ready_ids(data_dir: Path) -> Iterator[str]:
    root = contracts.datasets_root(data_dir)
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith(".") and (child / contracts.READY_MARKER).is_file():
            yield child.name


_STATE_VERSION = 1


@dataclass
class _State:
    triggered: dict[str, TriggerRecord] = field(default_factory=dict)
    id_cache: dict[str, str] = field(default_factory=dict)
    forgotten: dict[str, int] = field(default_factory=dict)


def _read_state(path: Path) -> _State:
    if not path.exists():
        return _State()
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise WatchStateError(f"{path}: not valid JSON ({_one_line(exc)}); fix or delete it") from exc
    if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
        raise WatchStateError(f"{path}: expected a watch state object with version {_STATE_VERSION}")
    raw = data.get("triggered", {})
    if not isinstance(raw, dict):
        raise WatchStateError(f"{path}: 'triggered' must be an object of snapshot id -> record")
    triggered: dict[str, TriggerRecord] = {}
    for sid, rec in raw.items():
        try:
            triggered[sid] = TriggerRecord(**rec)
            dt.date.fromisoformat(triggered[sid].date)
        except (TypeError, ValueError) as exc:
            raise WatchStateError(f"{path}: bad record for {sid!r} ({_one_line(exc)})") from exc
    id_cache = data.get("id_cache", {})
    forgotten = data.get("forgotten", {})
    if not isinstance(id_cache, dict) or not isinstance(forgotten, dict):
        raise WatchStateError(f"{path}: 'id_cache' and 'forgotten' must be objects")
    try:
        forgotten_counts = {str(k): int(v) for k, v in forgotten.items()}
    except (TypeError, ValueError) as exc:
        raise WatchStateError(f"{path}: 'forgotten' values must be integers") from exc
    return _State(triggered, {str(k): str(v) for k, v in id_cache.items()}, forgotten_counts)


def _write_state(path: Path, state: _State) -> None:
    write_json(
        path,
        {
            "version": _STATE_VERSION,
            "triggered": {sid: asdict(rec) for sid, rec in sorted(state.triggered.items())},
            "forgotten": dict(sorted(state.forgotten.items())),
            "id_cache": dict(sorted(state.id_cache.items())),
        },
    )


# --- planning -----------------------------------------------------------------------------------------


@dataclass
class WatchPlan:
    """What a poll found and what it should start."""

    found: list[Snapshot]
    new: list[Snapshot]
    built: list[Snapshot]
    triggered: list[Snapshot]
    older: list[Snapshot]  # never handled, but older than a handled snapshot of the same wiki
    skipped: list[SkippedEntry]


def plan_snapshots(
    source: str | Path,
    data_dir: str | Path | None = None,
    backfill: bool = False,
    state: BuiltSnapshots | None = None,
) -> WatchPlan:
    """Split the snapshots of `source` into new / built / triggered / older.

    New = neither built nor triggered and not older than the newest handled snapshot of its wiki. With
    nothing handled yet only the newest snapshot of each wiki is new (a dumps index keeps several months
    of dumps; rebuilding all of them is a decision, `backfill=True`, not a side effect of a first poll).
    """
    state = state if state is not None else BuiltSnapshots.load(data_dir)
    scan = scan_source(source, id_cache=state.id_cache)
    handled_dates = state.handled_dates()
    for snap in scan.snapshots:
        if state.is_handled(snap.snapshot_id):
            handled_dates.setdefault(wiki_of(snap.snapshot_id), []).append(snap.date)

    built = [s for s in scan.snapshots if state.is_built(s.snapshot_id)]
    triggered = [s for s in scan.snapshots if not state.is_built(s.snapshot_id) and state.is_triggered(s.snapshot_id)]
    new: list[Snapshot] = []
    older: list[Snapshot] = []
    by_wiki: dict[str, list[Snapshot]] = {}
    for snap in scan.snapshots:
        if not state.is_handled(snap.snapshot_id):
            by_wiki.setdefault(wiki_of(snap.snapshot_id), []).append(snap)
    for wiki, snaps in by_wiki.items():
        snaps.sort(key=lambda s: (s.date, s.snapshot_id))
        if backfill:
            new.extend(snaps)
            continue
        dates = handled_dates.get(wiki)
        if not dates:
            new.append(snaps[-1])
            older.extend(snaps[:-1])
            continue
        cutoff = max(dates)
        for snap in snaps:
            (new if snap.date >= cutoff else older).append(snap)
    new.sort(key=lambda s: (s.date, s.snapshot_id))
    older.sort(key=lambda s: (s.date, s.snapshot_id))
    return WatchPlan(scan.snapshots, new, built, triggered, older, scan.skipped)


def new_snapshots(
    source: str | Path, data_dir: str | Path | None = None, backfill: bool = False
) -> list[Snapshot]:
    """Snapshots of `source` that should be built now (see `plan_snapshots`)."""
    return plan_snapshots(source, data_dir, backfill=backfill).new


def snapshots_table(snapshots: Iterable[Snapshot]) -> list[dict[str, Any]]:
    """Rows for a report table (e.g. a Prefect table artifact)."""
    return [s.to_dict() for s in snapshots]
