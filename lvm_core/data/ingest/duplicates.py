"""Repeated article ids: keep one article per id and count what was dropped (recorded in the manifest).

Tabular sources may repeat an id with different texts; which row wins is a policy the caller chooses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lvm_core.data.ingest.base import Article, IngestError

__all__ = ["DUPLICATE_POLICIES", "DuplicateIdError", "DuplicateReport", "drop_duplicate_ids"]


class DuplicateIdError(IngestError):
    """A tabular source holds one id with different texts and no `on_duplicate` policy says which to keep."""


@dataclass
class DuplicateReport:
    """Repeated article ids in a source and what was done with them (goes into the dataset manifest)."""

    policy: str = "first"
    duplicate_ids: int = 0  # ids met more than once
    duplicate_rows_dropped: int = 0  # rows dropped because their id was met before
    conflicting_ids: int = 0  # of duplicate_ids, those whose rows have different texts
    conflicting_examples: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "on_duplicate": self.policy,
            "duplicate_ids": self.duplicate_ids,
            "duplicate_rows_dropped": self.duplicate_rows_dropped,
            "duplicate_ids_conflicting": self.conflicting_ids,
            "conflicting_id_examples": list(self.conflicting_examples),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DuplicateReport:
        """The report as `to_dict` wrote it (`ingest_stats.json`, a work folder's `done.json`)."""
        return cls(
            policy=data["on_duplicate"],
            duplicate_ids=data["duplicate_ids"],
            duplicate_rows_dropped=data["duplicate_rows_dropped"],
            conflicting_ids=data["duplicate_ids_conflicting"],
            conflicting_examples=list(data["conflicting_id_examples"]),
        )


DUPLICATE_POLICIES = ("error", "first", "last")


def drop_duplicate_ids(
    articles: Iterable[Article], on_duplicate: str = "error", source_name: str = "source"
) -> tuple[list[Article], DuplicateReport]:
    """One article per id, in first-seen order, and a count of what was dropped.

    Rows repeating an id with the same text are dropped (counted, no error). When the texts differ,
    `on_duplicate` decides: "first" or "last" keeps that row's title and text (at the id's first
    position); "error" raises `DuplicateIdError` naming how many ids conflict and some of them.
    """
    if on_duplicate not in DUPLICATE_POLICIES:
        raise ValueError(f"on_duplicate={on_duplicate!r}: expected one of {', '.join(DUPLICATE_POLICIES)}")
    kept: list[Article] = []
    position: dict[int, int] = {}
    repeated: set[int] = set()
    conflicting: dict[int, None] = {}  # ordered set
    dropped = 0
    for article in articles:
        i = position.get(article.article_id)
        if i is None:
            position[article.article_id] = len(kept)
            kept.append(article)
            continue
        dropped += 1
        repeated.add(article.article_id)
        if article.text != kept[i].text:
            conflicting.setdefault(article.article_id)
        if on_duplicate == "last":
            kept[i] = article
    report = DuplicateReport(
        policy=on_duplicate, duplicate_ids=len(repeated), duplicate_rows_dropped=dropped,
        conflicting_ids=len(conflicting), conflicting_examples=list(conflicting)[:10],
    )
    if conflicting and on_duplicate == "error":
        ids = ", ".join(str(a) for a in list(conflicting)[:5]) + (", ..." if len(conflicting) > 5 else "")
        raise DuplicateIdError(
            f"{source_name}: {len(conflicting)} id(s) occur in several rows with different texts "
            f"(e.g. id {ids}); choose which row to keep with --on-duplicate first|last"
        )
    return kept, report
