"""The build's progress artifact in the Prefect UI: shards done / total per stage, kept current as shards
finish."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

from tasks.common import artifact_key


class BuildProgress:
    """The build's progress artifact: shards done / total per stage, kept current as shards finish."""

    STAGES = ("ingest", "chunk", "embed")

    def __init__(self, dataset_id: str) -> None:
        self.total: dict[str, int | None] = dict.fromkeys(self.STAGES)
        self.done: dict[str, int] = dict.fromkeys(self.STAGES, 0)
        self._id = cast(UUID, create_progress_artifact(0.0, key=artifact_key("build-progress", dataset_id),
                                                       description=self.describe()))

    def percent(self) -> float:
        parts = [self.done[s] / total if (total := self.total[s]) else 0.0 for s in self.STAGES]
        return round(100.0 * sum(parts) / len(parts), 1)

    def describe(self) -> str:
        cells = " · ".join(f"{s} {self.done[s]}/{'?' if self.total[s] is None else self.total[s]}" for s in self.STAGES)
        return f"Shards done per stage: {cells}"

    def start(self, stage: str, total: int) -> None:
        self.total[stage] = total
        self._update()

    def finished(self, stage: str) -> None:
        self.done[stage] += 1
        self._update()

    def gather(self, stage: str, futures: list[PrefectFuture[Any]]) -> list[Any]:
        """Results in submission order; the artifact moves as each shard finishes (the first failure raises)."""
        self.start(stage, len(futures))
        for future in as_completed(list(futures)):
            future.result()
            self.finished(stage)
        return [f.result() for f in futures]

    def _update(self) -> None:
        update_progress_artifact(self._id, self.percent(), description=self.describe())
