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
def test_gathers_read_the_file_and_map_none_of_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault maps more of the file than the row it reads (fault-around, whole large folios), so gathers
    through the map held up to 2 MiB per scattered row until the next release. Rows are read from the
    file instead: with releases switched off, a pass of scattered gathers leaves nothing mapped."""
    from lvm_core.io import vectors

    mm = _file(tmp_path, 32768, 384)  # 48 MiB float32, in the page cache
    monkeypatch.setattr(vectors, "release_pages", lambda *a, **k: None)
    before = _rss_file_kib()
    rows = np.arange(0, mm.shape[0], 43)  # one row in every 64 KiB of the file
    got = float32_rows(mm, rows)
    blocks = [float32_rows(mm, slice(s, s + 4096)) for s in range(0, mm.shape[0], 4096)]
    assert _rss_file_kib() - before < 1024
    np.testing.assert_array_equal(got, np.asarray(mm[rows], dtype=np.float32))
    np.testing.assert_array_equal(np.concatenate(blocks), np.asarray(mm, dtype=np.float32))


def test_gathers_in_any_order_with_repeats_and_negative_rows(tmp_path: Path) -> None:
    mm = _file(tmp_path, 300, 8, "float16")
    for rows in ([5, 4, 3], [7, 7, 2, 299, 0], [-1, 10, 11, 12, -300], [], [42]):
        idx = np.array(rows, dtype=np.int64)
        np.testing.assert_array_equal(float32_rows(mm, idx), np.asarray(mm[idx], dtype=np.float32))
    np.testing.assert_array_equal(float32_rows(mm, slice(290, 400, 3)), np.asarray(mm[290:400:3], dtype=np.float32))
    with pytest.raises(IndexError, match="out of range"):
        float32_rows(mm, np.array([300]))


def test_a_vector_file_shorter_than_its_header_is_named(tmp_path: Path) -> None:
    mm = _file(tmp_path, 100, 8)
    path = Path(mm.filename)
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # the map keeps its length; the file behind it loses its last rows
        fh.truncate(size - 8 * 4 * 10)
    with pytest.raises(OSError, match="ends .* bytes early"):
        float32_rows(mm, np.array([1, 95]))
