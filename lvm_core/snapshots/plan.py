"""One poll's plan: which snapshots of a source are new, built, triggered, or older than a handled one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvm_core.snapshots.scanner import scan_source
from lvm_core.snapshots.snapshot import SkippedEntry, Snapshot, wiki_of
from lvm_core.snapshots.state import BuiltSnapshots


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
