"""FAISS for the bank: whether to use it, the approximate indexes (HNSW, IVF) and their searches.

faiss is optional: a large bank uses it when importable and falls back to exact search with a warning
when not; asking for it explicitly without it installed is an error. The exact ``"flat"`` search runs
``faiss.knn`` over row blocks of the bank itself, so it holds no copy of the bank.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np

from lvm_core.data.retrieval.rows import RetrievalError, sorted_topk, training_sample
from lvm_core.data.vector_files import as_float32_block, iter_row_blocks

__all__ = [
    "FAISS_AUTO_THRESHOLD",
    "FAISS_BLOCK_ROWS",
    "FaissKind",
    "build_faiss_index",
    "faiss_wanted",
    "import_faiss",
    "search_faiss_flat",
    "search_faiss_index",
]

logger = logging.getLogger(__package__)  # the package's logger: log lines keep the name they had

FaissKind = Literal["flat", "hnsw", "ivf"]

#: A bank at least this large uses FAISS when ``use_faiss=None`` and faiss is importable.
FAISS_AUTO_THRESHOLD = 200_000
#: Bank rows per ``faiss.knn`` call of the blockwise exact FAISS search (65536 x 384 float32 = 96 MiB).
FAISS_BLOCK_ROWS = 65536


def import_faiss() -> Any | None:
    """The faiss module, or None when the optional extra is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_wanted(n_rows: int, use_faiss: bool | None, caller: str, scope: str) -> bool:
    """Whether a search over `n_rows` uses FAISS: as `use_faiss` says, else from `FAISS_AUTO_THRESHOLD` rows.

    Without faiss installed: an error when `use_faiss` is True (naming `caller`), else False with a
    warning naming the `scope` ("the bank of", "the near-duplicate scan over").
    """
    want = use_faiss if use_faiss is not None else n_rows >= FAISS_AUTO_THRESHOLD
    if not want:
        return False
    if import_faiss() is None:
        if use_faiss:
            raise RetrievalError(f"{caller}(use_faiss=True): faiss is not installed (pip install faiss-cpu)")
        logger.warning(
            "faiss is not installed: %s %d rows (FAISS threshold %d) uses exact blockwise search "
            "(pip install faiss-cpu for the faster path)", scope, n_rows, FAISS_AUTO_THRESHOLD,
        )
        return False
    return True


def build_faiss_index(
    vectors: np.ndarray, kind: FaissKind, *, hnsw_m: int, ef_search: int, nprobe: int, block_rows: int
) -> tuple[Any, Any]:
    """An approximate inner-product index ("hnsw" or "ivf") over `vectors`, added block by block.

    Returns (index, quantizer); the IVF index does not own its quantizer, so the caller keeps it alive
    (None for HNSW).
    """
    import faiss

    n, d = int(vectors.shape[0]), int(vectors.shape[1])
    quantizer = None
    index: Any  # IndexHNSWFlat or IndexIVFFlat, both used through faiss.Index's add
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = int(ef_search)
    elif kind == "ivf":
        nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(training_sample(vectors, 64 * nlist))
        index.nprobe = int(min(nprobe, nlist))
    else:
        raise RetrievalError(f"ChunkBank faiss_index: unknown kind {kind!r} (flat, hnsw, ivf)")
    for start, end in iter_row_blocks(n, block_rows):
        index.add(as_float32_block(vectors, slice(start, end)))
    return index, quantizer


def search_faiss_flat(
    vectors: np.ndarray, q: np.ndarray, k: int, excl: np.ndarray, block_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with ``faiss.knn`` per bank block; each block returns k + (exclusions) candidates, so
    k non-excluded rows survive whenever the block has them."""
    import faiss

    n_q = q.shape[0]
    best_s = np.zeros((n_q, 0), dtype=np.float32)
    best_r = np.zeros((n_q, 0), dtype=np.int64)
    for bs, be in iter_row_blocks(int(vectors.shape[0]), block_rows):
        kk = min(k + excl.shape[1], be - bs)
        block = as_float32_block(vectors, slice(bs, be))
        scores, rows = faiss.knn(q, block, kk, metric=faiss.METRIC_INNER_PRODUCT)
        rows = rows.astype(np.int64)
        scores = scores.astype(np.float32)
        bad = rows < 0
        rows = np.where(bad, -1, rows + bs)
        if excl.shape[1]:
            bad |= (rows[:, :, None] == excl[:, None, :]).any(axis=2)
        scores[bad] = -np.inf
        best_s, best_r = sorted_topk(
            np.concatenate([best_s, scores], axis=1), np.concatenate([best_r, rows], axis=1), k
        )
    out_s = np.full((n_q, k), -np.inf, dtype=np.float32)
    out_r = np.full((n_q, k), -1, dtype=np.int64)
    width = best_s.shape[1]
    out_s[:, :width] = best_s
    out_r[:, :width] = np.where(np.isneginf(best_s), -1, best_r)
    return out_s, out_r


def search_faiss_index(
    index: Any, n_rows: int, q: np.ndarray, k: int, excl: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k from an approximate index, exclusions dropped (the index is asked for k + exclusions)."""
    k_ask = min(n_rows, k + excl.shape[1])
    scores, rows = index.search(q, k_ask)
    rows = rows.astype(np.int64)
    scores = scores.astype(np.float32)
    bad = rows < 0
    if excl.shape[1]:
        bad |= (rows[:, :, None] == excl[:, None, :]).any(axis=2)
    # keep faiss's order among the valid hits, move invalid ones to the end
    order = np.argsort(bad, axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    bad = np.take_along_axis(bad, order, axis=1)
    scores[bad] = -np.inf
    rows[bad] = -1
    out_s = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    out_r = np.full((q.shape[0], k), -1, dtype=np.int64)
    width = min(k, k_ask)
    out_s[:, :width] = scores[:, :width]
    out_r[:, :width] = rows[:, :width]
    return out_s, out_r
