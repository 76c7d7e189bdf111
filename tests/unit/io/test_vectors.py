"""Blocks read from a memory-mapped vector file: float32 copies, and the file's pages released after use."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lvm_core.io.vectors import float32_rows, release_pages


def _rss_file_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    return 0


def _file(tmp_path: Path, n: int, dim: int, dtype: str = "float32") -> np.ndarray:
    path = tmp_path / "v.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(n, dim))
    out[:] = np.arange(n * dim, dtype=np.float64).reshape(n, dim) % 251
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float32_rows_copies_slices_and_gathers(tmp_path: Path, dtype: str) -> None:
    mm = _file(tmp_path, 500, 16, dtype)
    block = float32_rows(mm, slice(10, 60))
    assert block.dtype == np.float32 and block.flags.owndata
    np.testing.assert_array_equal(block, np.asarray(mm[10:60], dtype=np.float32))
    rows = np.array([3, 499, 7, 7])
    np.testing.assert_array_equal(float32_rows(mm, rows), np.asarray(mm[rows], dtype=np.float32))
    mem = np.asarray(mm, dtype=np.float32)
    np.testing.assert_array_equal(float32_rows(mem, slice(0, 5)), mem[:5])  # in-memory: a plain copy
    release_pages(mem)  # no-op on an in-memory array
    release_pages(mm[10:20])  # no-op on a view of the map


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssFile is read from /proc")
def test_a_pass_over_a_mapped_file_does_not_keep_its_pages_in_rss(tmp_path: Path) -> None:
    """Reading 48 MiB of a mapped file block by block leaves (almost) none of it in this process's RSS;
    touching the same blocks without release keeps all of them — the growth a 10^8-row pass would show."""
    mm = _file(tmp_path, 32768, 384)  # 48 MiB float32
    before = _rss_file_kib()
    total = 0.0
    for s in range(0, mm.shape[0], 4096):
        total += float(float32_rows(mm, slice(s, s + 4096)).sum())
        float32_rows(mm, np.arange(s, min(s + 4096, mm.shape[0]), 7))
    released = _rss_file_kib() - before
    for s in range(0, mm.shape[0], 4096):
        total += float(np.asarray(mm[s : s + 4096]).sum())
    kept = _rss_file_kib() - before
    assert released < 8 * 1024  # under one block (6 MiB) plus slack
    assert kept > 40 * 1024
    release_pages(mm)
    assert _rss_file_kib() - before < 8 * 1024
    assert total > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssFile is read from /proc")
def test_gathers_of_scattered_rows_leave_no_pages_mapped(tmp_path: Path) -> None:
    """A fault maps the cached pages around it too (fault-around): a release that covered only the rows
    read left those mapped, a few per gathered block, adding up over a pass of many small gathers."""
    mm = _file(tmp_path, 32768, 384)  # 48 MiB float32, in the page cache
    before = _rss_file_kib()
    for start in range(0, mm.shape[0] - 16, 64):  # 512 gathers of a few rows 96 KiB apart
        float32_rows(mm, np.arange(start, start + 10, 3))
    assert _rss_file_kib() - before < 4 * 1024
