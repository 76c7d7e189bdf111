"""The watcher's memory: which snapshots are built (READY datasets) or already triggered, in `watch_state.json`.

Triggered runs are remembered so a run that is still going (or queued behind a concurrency limit) is not
started a second time; every write happens under the data dir's watch lock, merged with the file's
current content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import READY_MARKER, WATCH_STATE_FILE, datasets_root, default_data_dir
from lvm_core.io.storage import read_json, write_json
from lvm_core.snapshots.snapshot import Snapshot, date_of_id, short_error, wiki_of


class WatchStateError(UserError, ValueError):
    """`watch_state.json` exists but is not a state file this module wrote."""


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

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    lock_path = str((root / f".{WATCH_STATE_FILE}.lock").resolve())
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
        return Path(self.data_dir) / WATCH_STATE_FILE

    @classmethod
    def load(cls, data_dir: str | Path | None = None) -> BuiltSnapshots:
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        built = frozenset(_ready_ids(root))
        state = _read_state(root / WATCH_STATE_FILE)
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
            date = date_of_id(sid)
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
            triggered_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
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
    root = datasets_root(data_dir)
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.is_dir() and not child.name.startswith(".") and (child / READY_MARKER).is_file():
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
        raise WatchStateError(f"{path}: not valid JSON ({short_error(exc)}); fix or delete it") from exc
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
            raise WatchStateError(f"{path}: bad record for {sid!r} ({short_error(exc)})") from exc
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
