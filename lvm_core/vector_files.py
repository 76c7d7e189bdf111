"""Embeddings files of a dataset: `embeddings.npy` (float32 unit rows) beside `encoder.json` (its fingerprint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lvm_core import storage
from lvm_core.contracts import EMBEDDINGS_FILE, ENCODER_FILE, DataContractError
from lvm_core.embedding import UNIT_NORM_TOLERANCE, EncoderFingerprint, ensure_same_fingerprint

__all__ = ["load_embeddings", "save_embeddings", "validate_embeddings"]

def validate_embeddings(vectors: np.ndarray, fingerprint: EncoderFingerprint, what: str) -> None:
    """Raise `DataContractError` unless `vectors` is float32 (n, fingerprint.dim), finite, unit rows."""
    if not isinstance(vectors, np.ndarray):
        raise DataContractError(f"{what}: expected a numpy array, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise DataContractError(f"{what}: expected a 2-D array (n_chunks, dim), got shape {vectors.shape}")
    if vectors.dtype != np.float32:
        raise DataContractError(f"{what}: expected float32, got {vectors.dtype}")
    if vectors.shape[1] != fingerprint.dim:
        raise DataContractError(
            f"{what}: vectors have dim {vectors.shape[1]} but the encoder fingerprint says {fingerprint.dim}"
        )
    step = 65536  # bounded temporary memory on big files
    for start in range(0, vectors.shape[0], step):
        block = np.asarray(vectors[start : start + step])
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise DataContractError(f"{what}: non-finite values (first in row {row})")
        norms = np.linalg.norm(block, axis=1)
        off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise DataContractError(
                f"{what}: {int(off.sum())} row(s) in rows {start}..{start + len(block) - 1} are not unit length "
                f"(row {start + row} has norm {norms[row]:.6f}; tolerance {UNIT_NORM_TOLERANCE})"
            )


def save_embeddings(dir_path: Path, vectors: np.ndarray, fingerprint: EncoderFingerprint) -> None:
    """Write `embeddings.npy` and `encoder.json` into `dir_path` (each atomically), after validating."""
    dir_path = Path(dir_path)
    validate_embeddings(vectors, fingerprint, f"embeddings for {dir_path / EMBEDDINGS_FILE}")
    storage.write_npy(dir_path / EMBEDDINGS_FILE, vectors)
    storage.write_json(dir_path / ENCODER_FILE, fingerprint.to_dict())


def load_embeddings(
    dir_path: Path, expected: EncoderFingerprint | None = None, mmap: bool = False
) -> tuple[np.ndarray, EncoderFingerprint]:
    """Read and check `embeddings.npy` + `encoder.json`; refuse another encoder's vectors if `expected`."""
    dir_path = Path(dir_path)
    enc_path, emb_path = dir_path / ENCODER_FILE, dir_path / EMBEDDINGS_FILE
    for p in (enc_path, emb_path):
        if not p.is_file():
            raise DataContractError(f"{p} is missing")
    try:
        fp = EncoderFingerprint.from_dict(storage.read_json(enc_path))
    except ValueError as exc:
        raise DataContractError(f"{enc_path}: {exc}") from exc
    if expected is not None:
        ensure_same_fingerprint(expected, fp, f"embeddings in {dir_path}")
    try:
        vectors = storage.load_npy(emb_path, mmap=mmap)
    except ValueError as exc:  # object arrays (pickle) are refused by allow_pickle=False
        raise DataContractError(f"{emb_path}: not a plain numeric .npy file ({exc})") from exc
    validate_embeddings(vectors, fp, str(emb_path))
    return vectors, fp
