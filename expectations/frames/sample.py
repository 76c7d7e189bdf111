"""The seeded row sample the row-level expectations run on, and how it is stated in the results.

Aggregate facts are computed exactly over every row (the ``*_exact`` frames); the expectations that look
at one row at a time (value sets, ranges, formats) run on a sample of at most `SampleSpec.rows` rows (or
articles) drawn with `SampleSpec.seed`, so GX never loads a frame that grows with the dataset. The draw
depends only on the population size and the seed: the same dataset gives the same sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLE_ROWS = 10_000
DEFAULT_SAMPLE_SEED = 0


@dataclass(frozen=True)
class SampleSpec:
    """At most `rows` rows per sampled frame, drawn with `seed`."""

    rows: int = DEFAULT_SAMPLE_ROWS
    seed: int = DEFAULT_SAMPLE_SEED

    def __post_init__(self) -> None:
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1:
            raise ValueError(f"sample rows must be a positive integer, got {self.rows!r}")

    def positions(self, population: int) -> np.ndarray:
        """Sorted positions of the sampled rows among `population` (all of them when it is small)."""
        if population <= self.rows:
            return np.arange(population, dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        # Generator.choice without replacement draws k of n in O(k) memory when k << n
        return np.sort(rng.choice(population, size=self.rows, replace=False).astype(np.int64))

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "seed": self.seed}
