"""Oracle Recall@K: can the bank find each target when queried with the target's own true vector?

It checks the bank/index and the alignment of vectors, rows and text hashes, not a model; the data gate
queries with target texts re-encoded by the dataset's encoder over a seeded sample of targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.retrieval.rows import RetrievalError, check_rows
from lvm_core.data.vector_files import as_float32_block

__all__ = [
    "ORACLE_ALIGNED_COS", "ORACLE_K", "ORACLE_SAMPLE_SIZE", "ORACLE_SEED", "ORACLE_TRAIN_SAMPLE_SIZE",
    "oracle_hits", "oracle_recall_at_k", "oracle_sample",
]

#: Oracle defaults (DESIGN "Oracle Recall@K"): K, the smallest re-encoded sample of evaluation targets, and its seed.
ORACLE_K = 5
ORACLE_SAMPLE_SIZE = 500
ORACLE_SEED = 0
#: Train targets re-encoded beside them: the model learns from train rows, so their alignment matters as much.
ORACLE_TRAIN_SAMPLE_SIZE = 200
#: A sampled row is misaligned when its stored vector and its re-encoded text have cosine below this. Re-encoding
#: with the same encoder differs only in the last bits (batch composition), so an aligned row scores ~1.0 and
#: a row holding another chunk's vector ~0.2-0.6; misaligned rows are gated at 0. Recall@5 (bar 0.97) is the
#: coarser view: a row can be found among 5 neighbours through a duplicate text even when misaligned, and
#: a near-duplicate neighbourhood can push an aligned row below 5.
ORACLE_ALIGNED_COS = 0.99


def oracle_sample(target_rows: np.ndarray, sample_size: int = ORACLE_SAMPLE_SIZE, seed: int = ORACLE_SEED) -> np.ndarray:
    """Seeded sample of distinct target rows for the oracle (all of them when there are fewer), sorted.

    The same rows, size and seed give the same sample, so a later re-check re-encodes the same texts.
    """
    rows = np.unique(np.asarray(target_rows, dtype=np.int64).ravel())
    if int(sample_size) < 1:
        raise RetrievalError(f"oracle_sample: sample_size must be >= 1, got {sample_size}")
    if rows.size <= int(sample_size):
        return rows
    pick = np.random.default_rng(int(seed)).choice(rows.size, size=int(sample_size), replace=False)
    return np.sort(rows[pick])


def oracle_hits(
    bank: ChunkBank,
    target_rows: np.ndarray,
    k: int = 5,
    *,
    target_vectors: np.ndarray | None = None,
    target_hashes: Sequence[str] | np.ndarray | None = None,
) -> np.ndarray:
    """Per target: is it (or a chunk with the same text hash) among the top-k for its true vector?

    `target_vectors` are the queries. The data gate passes vectors freshly re-encoded from the target
    *texts* with the dataset's encoder (`lvm_core.data.build.measure_oracle`): then a bank whose stored
    vectors, chunk rows or text hashes disagree scores below 1. By default the queries are the bank's own
    rows, which checks only the index (e.g. an approximate FAISS index) — such a query always finds its
    own row in an exact bank, whatever the alignment.
    `target_hashes` default to the bank's hashes of the target rows. With hashes, a hit is a top-k row
    whose *bank* text hash equals the target's hash (the target row itself or a duplicate text).
    """
    target_rows = check_rows(target_rows, bank.n, "target_rows")
    if target_vectors is None:
        queries = as_float32_block(bank.vectors, target_rows)
    else:
        queries = np.asarray(target_vectors)
        if queries.shape != (target_rows.shape[0], bank.dim):
            raise RetrievalError(
                f"target_vectors: shape {queries.shape}, expected ({target_rows.shape[0]}, {bank.dim})"
            )
    if target_rows.size == 0:
        return np.zeros(0, dtype=bool)
    _, rows = bank.search(queries, k)
    if target_hashes is None and bank.text_hash is not None:
        target_hashes = bank.text_hash[target_rows]
    if target_hashes is None:
        return cast(np.ndarray, (rows == target_rows[:, None]).any(axis=1))
    expected = np.asarray(target_hashes)
    if expected.shape != target_rows.shape:
        raise RetrievalError(f"target_hashes: shape {expected.shape}, expected {target_rows.shape}")
    if bank.text_hash is None:
        raise RetrievalError("oracle: target_hashes given but the bank has no text_hash")
    same = bank.text_hash[np.clip(rows, 0, None)] == expected[:, None]  # strings, or 64-bit codes
    return cast(np.ndarray, (same & (rows >= 0)).any(axis=1))


def oracle_recall_at_k(
    bank: ChunkBank,
    target_rows: np.ndarray,
    k: int = 5,
    *,
    target_vectors: np.ndarray | None = None,
    target_hashes: Sequence[str] | np.ndarray | None = None,
) -> float:
    """Oracle Recall@K: share of targets found in the top k when querying with their TRUE vector.

    Checks the bank/index and the alignment of vectors, rows and text hashes, not a model: a perfect
    predictor cannot retrieve better. Pre-training gate: >= 0.97 at K=5 over a seeded sample
    (`oracle_sample`) of eval targets re-encoded from their texts. See `oracle_hits`.
    """
    hits = oracle_hits(bank, target_rows, k, target_vectors=target_vectors, target_hashes=target_hashes)
    if hits.size == 0:
        raise RetrievalError("oracle_recall_at_k: no target rows")
    return float(hits.mean())
