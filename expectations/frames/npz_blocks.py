"""sequences.npz read in blocks of rows: the window arrays are never loaded whole.

An ``.npz`` is a zip of ``.npy`` members; a member's header gives its shape and dtype, and its data (C
order) can be read row block by row block straight from the zip stream, stored or deflated. Several
members of one split are read in lockstep. A Fortran-ordered member (np.save never writes one for these
arrays) is loaded whole and sliced, and an object array reads as its error text, as `np.load` would
refuse it without pickle.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from expectations.frames.common import require_file
from lvm_core.contracts.errors import DataContractError

BLOCK_ROWS = 1 << 16


@dataclass(frozen=True)
class Header:
    """Shape, dtype and memory order of one member."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


class SequenceArrays:
    """The members of sequences.npz: their headers, and their rows block by block."""

    def __init__(self, path: Path):
        require_file(path)
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            raise DataContractError(f"{path}: cannot read sequences archive: {exc}") from exc
        self.keys = tuple(n[: -len(".npy")] for n in names if n.endswith(".npy"))

    def header(self, key: str) -> Header | str | None:
        """The member's header; None when absent; the reason as text when it cannot be read without pickle."""
        if key not in self.keys:
            return None
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(f"{key}.npy") as fh:
                head = _read_header(fh)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return f"{key}: {exc}"
        if head.dtype.hasobject:
            return f"{key}: Object arrays cannot be loaded when allow_pickle=False"
        return head

    def blocks(self, keys: list[str], rows: int | None = None) -> Iterator[list[np.ndarray]]:
        """Blocks of up to `rows` (BLOCK_ROWS) leading-axis rows of the members `keys`, in lockstep."""
        rows = rows or BLOCK_ROWS
        try:
            with zipfile.ZipFile(self.path) as zf, ExitStack() as stack:
                handles = [stack.enter_context(zf.open(f"{key}.npy")) for key in keys]
                heads = [_read_header(fh) for fh in handles]
                readers = [_rows(fh, head, key, self.path, rows) for fh, head, key in zip(handles, heads, keys)]
                yield from (list(parts) for parts in zip(*readers))
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataContractError(f"{self.path}: cannot read {', '.join(keys)}: {exc}") from exc

    def unique(self, key: str) -> np.ndarray:
        """Sorted distinct values of a 1-d integer member, gathered block by block."""
        seen = [np.unique(block) for (block,) in self.blocks([key])]
        return np.unique(np.concatenate(seen)) if seen else np.zeros(0, dtype=np.int64)


def _read_header(fh: IO[bytes]) -> Header:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return Header(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran))


def _rows(fh: IO[bytes], head: Header, key: str, path: Path, rows: int) -> Iterator[np.ndarray]:
    """The member's rows in blocks, read from the stream (Fortran order: loaded whole, then sliced)."""
    n = head.shape[0] if head.shape else 0
    if head.fortran and len(head.shape) > 1:
        with np.load(path, allow_pickle=False) as npz:
            whole = npz[key]
        yield from (whole[i : i + rows] for i in range(0, n, rows))
        return
    per_row = int(np.prod(head.shape[1:], dtype=np.int64)) if len(head.shape) > 1 else 1
    for start in range(0, n, rows):
        k = min(rows, n - start)
        data = fh.read(k * per_row * head.dtype.itemsize)
        if len(data) != k * per_row * head.dtype.itemsize:
            raise ValueError(f"{key}: member ends early")
        yield np.frombuffer(data, dtype=head.dtype).reshape((k, *head.shape[1:]))
