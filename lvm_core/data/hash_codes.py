"""Chunk text hashes as 64-bit codes: 8 bytes a row instead of a 40-character string.

`chunking.text_hash` is a sha1 hex digest. The analysis of a build only ever asks "do these two rows
have the same text?", so it keeps the first 16 hex digits (64 bits) of each digest as a ``uint64``,
parsed straight from the Arrow string buffers, one record batch at a time: no Python string per row and
no numpy unicode array (``<U40`` is 160 bytes a row).

Collision risk: equal texts always get equal codes; two different texts share a code with probability
2^-64 per pair, so the chance of any collision among n rows is at most n^2 / 2^65: ~3e-8 at 10^6 rows,
~3e-4 at 10^8. A collision can only make a check stricter (a text leak that is not one purges one more
window; the oracle counts one more duplicate as its target), never hide a leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.errors import DataContractError

__all__ = ["CODE_HEX_DIGITS", "hash_codes", "read_hash_codes"]

#: Hex digits of the digest kept in a code (16 x 4 bits = 64 bits).
CODE_HEX_DIGITS = 16

_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i
_SHIFTS = np.arange(4 * (CODE_HEX_DIGITS - 1), -1, -4, dtype=np.uint64)


def _array_codes(arr: pa.Array, what: str) -> np.ndarray:
    """Codes of one Arrow string array, read from its offsets and data buffers."""
    if arr.null_count:
        raise DataContractError(f"{what}: {arr.null_count} null text hash(es)")
    if pa.types.is_large_string(arr.type):
        off_type: Any = np.int64
    elif pa.types.is_string(arr.type):
        off_type = np.int32
    else:
        raise DataContractError(f"{what}: text hashes must be strings, got {arr.type}")
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=off_type)[arr.offset : arr.offset + n + 1]
    if int((offsets[1:] - offsets[:-1]).min()) < CODE_HEX_DIGITS:
        raise DataContractError(f"{what}: text hashes shorter than {CODE_HEX_DIGITS} hex digits")
    data = np.frombuffer(data_buf, dtype=np.uint8)
    nibbles = _NIBBLE[data[offsets[:-1, None] + np.arange(CODE_HEX_DIGITS)]]  # (n, 16) uint8
    if (nibbles == 255).any():
        raise DataContractError(f"{what}: text hashes are not hex digests")
    codes: np.ndarray = np.bitwise_or.reduce(nibbles.astype(np.uint64) << _SHIFTS, axis=1)
    return codes


def hash_codes(hashes: Any, what: str = "text_hash") -> np.ndarray:
    """(n,) uint64 codes of hex digests given as an Arrow (chunked) array, a polars Series or strings.

    An integer array is taken as codes already. Raises DataContractError for nulls or non-hex values.
    """
    if isinstance(hashes, np.ndarray) and np.issubdtype(hashes.dtype, np.integer):
        return hashes.astype(np.uint64, copy=False)
    if isinstance(hashes, pa.ChunkedArray):
        chunks: Iterable[pa.Array] = hashes.chunks
    elif isinstance(hashes, pa.Array):
        chunks = [hashes]
    elif hasattr(hashes, "to_arrow"):  # polars Series
        return hash_codes(hashes.to_arrow(), what)
    else:
        chunks = [pa.array(np.asarray(hashes, dtype=object).tolist(), type=pa.string())]
    parts = [_array_codes(c, what) for c in chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def read_hash_codes(path: Path, column: str = "text_hash", batch_rows: int = 1 << 16) -> np.ndarray:
    """Codes of a Parquet file's hash column, read one record batch at a time (8 bytes a row held)."""
    pf = pq.ParquetFile(path)
    out = np.empty(pf.metadata.num_rows, dtype=np.uint64)
    pos = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[column]):
        codes = _array_codes(batch.column(0), f"{path}: {column}")
        out[pos : pos + codes.size] = codes
        pos += codes.size
    pa.default_memory_pool().release_unused()  # the pool keeps the batches' pages otherwise (~85 MiB at 10^6 rows)
    return out
