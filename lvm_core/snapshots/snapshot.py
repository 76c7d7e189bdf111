"""What a snapshot is and how its files are named: the one dump file a dataset is built from, its id and date.

Shared by the scanner (which finds them) and the watch state (which remembers them); ids follow
`lvm_core.data.ingest.snapshot_id_for`, so the watcher, the dataset folder and the MLflow tags all name a
snapshot the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

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
DATE_FOLDER = re.compile(r"^(?:19|20)\d{6}$")
_DATED_ID = re.compile(r"^(?P<wiki>.+)-(?P<date>(?:19|20)\d{6})$")


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


def date_of_id(snapshot_id: str) -> dt.date | None:
    m = _DATED_ID.match(snapshot_id)
    return parse_yyyymmdd(m["date"]) if m else None


def parse_yyyymmdd(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def name_rank(name: str) -> int:
    """Preference among files of one snapshot: the single-file dump, then multistream, then others."""
    if _COMBINED.search(name):
        return 0
    if _COMBINED_MULTISTREAM.search(name):
        return 1
    return 2


def pick_job_file(names: list[str]) -> str | None:
    """The single-file articles dump of a job, or its only file; None for multi-part only."""
    ranked = sorted((n for n in names if _XML_DUMP.search(n) or n.endswith(".bz2")), key=lambda n: (name_rank(n), n))
    if not ranked:
        return None
    if name_rank(ranked[0]) < 2 or len(ranked) == 1:
        return ranked[0]
    return None


def short_error(exc: BaseException, limit: int = 200) -> str:
    """An exception as a skip reason or state error: one line, at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]
