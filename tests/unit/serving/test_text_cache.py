"""Text indexes are kept per model version up to a bound, least recently used dropped first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lvm_core.serving.text import TextSearch


class CountingSearch(TextSearch):
    def __init__(self, max_indexes: int):
        super().__init__(max_indexes=max_indexes)
        self.loads: list[Any] = []

    def _load(self, model: Any) -> Any:
        self.loads.append(model.version)
        return SimpleNamespace(version=model.version)


def model(version: int) -> Any:
    return SimpleNamespace(name="m", version=version, source=f"runs:/{version}")


def test_text_indexes_are_bounded_and_least_recently_used_goes_first():
    search = CountingSearch(max_indexes=2)
    search.index_for(model(1))
    search.index_for(model(2))
    search.index_for(model(1))  # 1 is now the most recent
    search.index_for(model(3))  # drops 2
    assert [k[1] for k in search.cached()] == [1, 3]
    search.index_for(model(1))
    search.index_for(model(2))  # loaded again
    assert search.loads == [1, 2, 3, 2]
    assert len(search.cached()) == 2
