"""A few rows of one Parquet column, read where they lie: only that column, only their row groups, batch by batch.

Evaluation and serving show a handful of chunk texts (a neighbour table, search hits) out of millions of
chunks; reading the whole ``text`` column for them holds tens of GB at full size. `ColumnRows` is a
read-only sequence over one column whose reads go through `take`: it finds the row groups holding the
rows from the file's metadata and streams just those, in record batches with pre-buffering off, keeping
only the requested values. Memory is one batch plus the values asked for, whatever the file or row-group
size; values already read are kept (up to `cache_rows`) so a table built row by row costs one read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_ROWS = 8_192
_READ_BUFFER = 1 << 20


class ColumnRows(Sequence[Any]):
    """Column `column` of the Parquet file `path`, read lazily by row group (OSError / KeyError when unreadable)."""

    def __init__(self, path: Path, column: str, cache_rows: int = 65_536):
        self.path, self.column, self.cache_rows = Path(path), column, cache_rows
        meta = pq.ParquetFile(self.path).metadata
        if column not in meta.schema.names:
            raise KeyError(f"{self.path}: no column {column!r}")
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._cache: dict[int, Any] = {}
        self.reads = 0  # row groups streamed so far (tests and logs)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @overload
    def __getitem__(self, key: int) -> Any: ...

    @overload
    def __getitem__(self, key: slice) -> list[Any]: ...

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return self.take(range(*key.indices(len(self))))
        return self.take([key])[0]

    def __iter__(self) -> Iterator[Any]:
        """Every value in order, streamed (reads the whole column, one batch at a time)."""
        reader = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=_READ_BUFFER)
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=[self.column], use_threads=False):
            yield from batch.column(0).to_pylist()

    def take(self, rows: Iterable[int]) -> list[Any]:
        """The values at `rows` (negative rows count from the end), in the order asked."""
        n = len(self)
        wanted = [int(r) + n if int(r) < 0 else int(r) for r in rows]
        bad = [r for r in wanted if not 0 <= r < n]
        if bad:
            raise IndexError(f"{self.path}: row {bad[0]} is outside 0..{n - 1}")
        missing = sorted({r for r in wanted if r not in self._cache})
        if missing:
            if len(self._cache) + len(missing) > self.cache_rows:
                self._cache.clear()
                missing = sorted(set(wanted))
            self._read(np.asarray(missing, dtype=np.int64))
        return [self._cache[r] for r in wanted]

    def _read(self, rows: np.ndarray) -> None:
        """Stream the row groups holding the sorted `rows` and keep their values."""
        reader = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=_READ_BUFFER)
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        for group in np.unique(groups):
            local = rows[groups == group] - self._starts[group]
            start = 0
            batches = reader.iter_batches(
                batch_size=BATCH_ROWS, row_groups=[int(group)], columns=[self.column], use_threads=False
            )
            self.reads += 1
            for batch in batches:
                lo, hi = np.searchsorted(local, [start, start + batch.num_rows])
                values = batch.column(0).take(pa.array(local[lo:hi] - start)).to_pylist()
                self._cache.update(zip((local[lo:hi] + self._starts[group]).tolist(), values))
                start += batch.num_rows
                if hi == len(local):
                    break
