"""ColumnRows reads only the row groups holding the rows asked for, one column, in the order asked."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvm_core.io import parquet_rows
from lvm_core.io.parquet_rows import ColumnRows


@pytest.fixture()
def table_path(tmp_path: Path) -> Path:
    path = tmp_path / "chunks.parquet"
    n = 10_000
    table = pa.table({"row": list(range(n)), "text": [f"text {i}" for i in range(n)]})
    pq.write_table(table, path, row_group_size=1_000)  # 10 row groups
    return path


def test_take_returns_the_rows_asked_for_in_order(table_path: Path) -> None:
    texts = ColumnRows(table_path, "text")
    assert len(texts) == 10_000
    assert texts.take([9_999, 0, 4_321, 0, -1]) == ["text 9999", "text 0", "text 4321", "text 0", "text 9999"]
    assert texts[17] == "text 17" and texts[998:1_002] == ["text 998", "text 999", "text 1000", "text 1001"]


def test_only_the_row_groups_holding_the_rows_are_read(table_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_rows, "BATCH_ROWS", 100)
    texts = ColumnRows(table_path, "text")
    texts.take([5, 7, 2_500])
    assert texts.reads == 2  # row groups 0 and 2 of 10
    texts.take([7, 2_500])
    assert texts.reads == 2  # already read: kept
    texts.take([9_000])
    assert texts.reads == 3


def test_a_small_cache_still_answers(table_path: Path) -> None:
    texts = ColumnRows(table_path, "text", cache_rows=3)
    assert texts.take([1, 2, 3]) == ["text 1", "text 2", "text 3"]
    assert texts.take([3, 4]) == ["text 3", "text 4"]  # cache full: emptied, both read again


def test_bad_rows_and_columns_are_refused(table_path: Path) -> None:
    with pytest.raises(KeyError, match="no column 'body'"):
        ColumnRows(table_path, "body")
    with pytest.raises(IndexError, match="row 10000"):
        ColumnRows(table_path, "text").take([10_000])
    assert list(ColumnRows(table_path, "text"))[-1] == "text 9999"
