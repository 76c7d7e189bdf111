"""Max cosine of rows to a bank of rows: the near-duplicate scan of the leakage check.

Exact blockwise by default; FAISS ``knn`` (exact) for large banks and an IVF candidate search, scored
exactly, for very large ones. Memory stays a few row blocks whatever the table size.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lvm_core.data.retrieval.faiss_index import faiss_wanted, import_faiss
from lvm_core.data.retrieval.rows import RetrievalError
from lvm_core.data.vector_files import as_float32_block

__all__ = ["APPROX_MAX_COSINE_THRESHOLD", "MaxCosineBackend", "max_cosine", "max_cosine_backend"]

#: From this many bank rows on, `max_cosine` finds candidates with an IVF index (then scores them exactly).
APPROX_MAX_COSINE_THRESHOLD = 1_000_000
MaxCosineBackend = Literal["exact", "faiss-flat", "faiss-ivf"]


def max_cosine_backend(n_bank: int, use_faiss: bool | None = None) -> MaxCosineBackend:
    """Which backend `max_cosine` uses for a bank of `n_bank` rows (a warning when faiss is missing)."""
    if not faiss_wanted(n_bank, use_faiss, "max_cosine", "the near-duplicate scan over"):
        return "exact"
    return "faiss-ivf" if n_bank >= APPROX_MAX_COSINE_THRESHOLD else "faiss-flat"


def max_cosine(
    vectors: np.ndarray,
    query_rows: np.ndarray,
    bank: np.ndarray,
    *,
    backend: MaxCosineBackend = "exact",
    query_block: int = 2048,
    bank_block: int = 8192,
    ivf_nprobe: int = 16,
    ivf_candidates: int = 4,
) -> np.ndarray:
    """(len(query_rows),) float32: max cosine of each query row to any bank row (rows of one unit matrix).

    Memory is a few gathered row blocks cast to float32 plus one (query_block x bank_block) score block,
    whatever the table size. ``faiss-flat`` is the same exact maximum through ``faiss.knn`` (no score block);
    ``faiss-ivf`` is approximate: an 8-bit scalar-quantised IVF index over the bank (N x D bytes, built
    block by block) proposes `ivf_candidates` rows per query, which are then scored exactly, so a reported
    cosine is always a true one and only a missed neighbour can lower it. -inf when the bank is empty.
    """
    query_rows = np.asarray(query_rows, dtype=np.int64)
    bank = np.asarray(bank, dtype=np.int64)
    best = np.full(query_rows.size, -np.inf, dtype=np.float32)
    if query_rows.size == 0 or bank.size == 0:
        return best
    if backend == "faiss-ivf":
        return _max_cosine_ivf(vectors, query_rows, bank, query_block, bank_block, ivf_nprobe, ivf_candidates)
    faiss = import_faiss() if backend == "faiss-flat" else None
    if backend == "faiss-flat" and faiss is None:
        raise RetrievalError("max_cosine: backend faiss-flat needs faiss (pip install faiss-cpu)")
    if backend not in ("exact", "faiss-flat"):
        raise RetrievalError(f"max_cosine: unknown backend {backend!r} (exact, faiss-flat, faiss-ivf)")
    for bs in range(0, bank.size, bank_block):
        t = as_float32_block(vectors, bank[bs : bs + bank_block])
        for qs in range(0, query_rows.size, query_block):
            q = as_float32_block(vectors, query_rows[qs : qs + query_block])
            if faiss is not None:
                top = faiss.knn(q, t, 1, metric=faiss.METRIC_INNER_PRODUCT)[0][:, 0]
            else:
                top = (q @ t.T).max(axis=1)
            np.maximum(best[qs : qs + q.shape[0]], top, out=best[qs : qs + q.shape[0]])
    return best


def _max_cosine_ivf(
    vectors: np.ndarray, query_rows: np.ndarray, bank: np.ndarray, query_block: int, bank_block: int,
    nprobe: int, n_cand: int,
) -> np.ndarray:
    import faiss

    d = int(vectors.shape[1])
    nlist = max(1, min(bank.size // 39, int(4 * np.sqrt(bank.size))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(0).choice(bank.size, size=min(bank.size, 64 * nlist), replace=False))
    index.train(as_float32_block(vectors, bank[sample]))
    for bs in range(0, bank.size, bank_block):  # ids = positions in `bank`
        index.add(as_float32_block(vectors, bank[bs : bs + bank_block]))
    index.nprobe = int(min(nprobe, nlist))
    best = np.full(query_rows.size, -np.inf, dtype=np.float32)
    for qs in range(0, query_rows.size, query_block):
        q = as_float32_block(vectors, query_rows[qs : qs + query_block])
        _, pos = index.search(q, int(n_cand))
        found = pos >= 0
        cand = as_float32_block(vectors, bank[np.where(found, pos, 0).ravel()]).reshape(*pos.shape, d)
        cos = np.where(found, np.einsum("qd,qkd->qk", q, cand), -np.inf)
        best[qs : qs + q.shape[0]] = cos.max(axis=1)
    return best

