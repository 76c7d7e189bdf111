"""Embeddings files of a dataset: `embeddings.npy` (unit rows, float32 or float16) beside `encoder.json`
(its fingerprint plus the on-disk ``vector_dtype``).

The files are read memory-mapped and checked block by block, so opening a dataset of 10^8 chunks costs
a few blocks of memory, not the matrix. float16 halves the disk and page-cache footprint; every consumer
casts the rows it reads to float32 before computing (`as_float32_block`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import (
    DEFAULT_VECTOR_DTYPE,
    EMBEDDINGS_FILE,
    ENCODER_FILE,
    VECTOR_DTYPE_KEY,
    VECTOR_DTYPES,
)
from lvm_core.data.embedding.fingerprint import UNIT_NORM_TOLERANCE, EncoderFingerprint, ensure_same_fingerprint
from lvm_core.io import storage
from lvm_core.io.vectors import float32_rows

__all__ = [
    "VALIDATE_BLOCK_ROWS",
    "as_float32_block",
    "iter_row_blocks",
    "load_embeddings",
    "recorded_vector_dtype",
    "save_embeddings",
    "validate_embeddings",
]

#: Rows per block when validating or converting a vector file (64k x 384 float32 = 96 MiB).
VALIDATE_BLOCK_ROWS = 65536


def iter_row_blocks(n_rows: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive row blocks covering 0..n_rows."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    for start in range(0, int(n_rows), int(block)):
        yield start, min(start + int(block), int(n_rows))


def as_float32_block(vectors: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """Rows of a (possibly memory-mapped, possibly float16) matrix as an in-memory float32 copy; a memory
    map's rows are read from its file (`float32_rows`), so a pass over the file never holds it in RSS."""
    return float32_rows(vectors, rows)


def _dtype_name(dtype: np.dtype | str) -> str:
    return np.dtype(dtype).name


def validate_embeddings(
    vectors: np.ndarray, fingerprint: EncoderFingerprint, what: str, block: int = VALIDATE_BLOCK_ROWS
) -> None:
    """Raise `DataContractError` unless `vectors` is float32/float16 (n, fingerprint.dim), finite, unit rows.

    Works in row blocks cast to float32, so a memory-mapped file is streamed once with bounded memory.
    """
    if not isinstance(vectors, np.ndarray):
        raise DataContractError(f"{what}: expected a numpy array, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise DataContractError(f"{what}: expected a 2-D array (n_chunks, dim), got shape {vectors.shape}")
    if _dtype_name(vectors.dtype) not in VECTOR_DTYPES:
        raise DataContractError(f"{what}: expected {' or '.join(VECTOR_DTYPES)}, got {vectors.dtype}")
    if vectors.shape[1] != fingerprint.dim:
        raise DataContractError(
            f"{what}: vectors have dim {vectors.shape[1]} but the encoder fingerprint says {fingerprint.dim}"
        )
    for start, end in iter_row_blocks(vectors.shape[0], block):
        blk = as_float32_block(vectors, slice(start, end))
        finite = np.isfinite(blk).all(axis=1)
        if not finite.all():
            raise DataContractError(f"{what}: non-finite values (first in row {start + int(np.argmin(finite))})")
        norms = np.linalg.norm(blk, axis=1)
        off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise DataContractError(
                f"{what}: {int(off.sum())} row(s) in rows {start}..{end - 1} are not unit length "
                f"(row {start + row} has norm {norms[row]:.6f}; tolerance {UNIT_NORM_TOLERANCE})"
            )


def save_embeddings(
    dir_path: Path,
    vectors: np.ndarray,
    fingerprint: EncoderFingerprint,
    dtype: str = DEFAULT_VECTOR_DTYPE,
    block: int = VALIDATE_BLOCK_ROWS,
) -> None:
    """Write `embeddings.npy` as `dtype` and `encoder.json` (fingerprint + ``vector_dtype``), each atomically.

    The input is validated first; the file is written block by block through a memory map, so storing
    float16 never makes a whole converted copy. The float16 rows are validated again (rounding must keep
    them unit within the contract tolerance).
    """
    dir_path = Path(dir_path)
    try:
        name = _dtype_name(dtype)
    except TypeError:
        name = str(dtype)
    if name not in VECTOR_DTYPES:
        raise DataContractError(f"vector dtype {dtype!r} is not one of {', '.join(VECTOR_DTYPES)}")
    what = f"embeddings for {dir_path / EMBEDDINGS_FILE}"
    validate_embeddings(vectors, fingerprint, what, block)
    with storage.atomic_path(dir_path / EMBEDDINGS_FILE) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(name), shape=tuple(vectors.shape))
        for start, end in iter_row_blocks(vectors.shape[0], block):
            out[start:end] = vectors[start:end]
        out.flush()
        if name != _dtype_name(vectors.dtype):
            validate_embeddings(out, fingerprint, f"{what} as {name}", block)
        del out
    storage.write_json(dir_path / ENCODER_FILE, {**fingerprint.to_dict(), VECTOR_DTYPE_KEY: name})


def recorded_vector_dtype(encoder_json: dict[str, Any], where: Path | str) -> str:
    """The on-disk dtype `encoder.json` records; files written before the field existed are float32."""
    name = encoder_json.get(VECTOR_DTYPE_KEY, DEFAULT_VECTOR_DTYPE)
    if name not in VECTOR_DTYPES:
        raise DataContractError(f"{where}: {VECTOR_DTYPE_KEY} {name!r} is not one of {', '.join(VECTOR_DTYPES)}")
    return str(name)


def load_embeddings(
    dir_path: Path, expected: EncoderFingerprint | None = None, mmap: bool = True
) -> tuple[np.ndarray, EncoderFingerprint]:
    """Open `embeddings.npy` (memory-mapped by default) + `encoder.json` and check them block by block.

    Refuses another encoder's vectors (`expected`) and a file whose dtype is not the ``vector_dtype`` that
    `encoder.json` records. The array is returned in its stored dtype; cast blocks with `as_float32_block`.
    """
    dir_path = Path(dir_path)
    enc_path, emb_path = dir_path / ENCODER_FILE, dir_path / EMBEDDINGS_FILE
    for p in (enc_path, emb_path):
        if not p.is_file():
            raise DataContractError(f"{p} is missing")
    try:
        raw = storage.read_json(enc_path)
        fp = EncoderFingerprint.from_dict(raw)
    except ValueError as exc:
        raise DataContractError(f"{enc_path}: {exc}") from exc
    if expected is not None:
        ensure_same_fingerprint(expected, fp, f"embeddings in {dir_path}")
    recorded = recorded_vector_dtype(raw, enc_path)
    try:
        vectors = storage.load_npy(emb_path, mmap=mmap)
    except ValueError as exc:  # object arrays (pickle) are refused by allow_pickle=False
        raise DataContractError(f"{emb_path}: not a plain numeric .npy file ({exc})") from exc
    validate_embeddings(vectors, fp, str(emb_path))
    if _dtype_name(vectors.dtype) != recorded:
        raise DataContractError(
            f"{emb_path}: holds {vectors.dtype} vectors but {enc_path.name} records {VECTOR_DTYPE_KEY}={recorded}"
        )
    return vectors, fp
