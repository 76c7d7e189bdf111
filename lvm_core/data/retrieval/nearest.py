"""Max cosine of rows to a bank of rows: the near-duplicate scan of the leakage check.

Exact blockwise while the number of (query, bank) pairs stays within `EXACT_PAIR_BUDGET` (numpy, or FAISS
``knn`` for large banks). Above it the scan's cost is bounded from the data size (`ivf_plan`): the bank
is cut into ~`IVF_LIST_ROWS`-row lists around centroids of a seeded sample, each query compares with the
rows of its `IVF_NPROBE` nearest lists only, so the work is ~``n_query x nprobe x list_rows`` pairs:
linear in the table, not quadratic. The index holds no vectors: it keeps a list id per bank row and per
query probe, and reads the rows of a few lists at a time from the (memory-mapped) matrix, scoring them
exactly, so a reported cosine is always a true one and only a missed neighbour can lower it. How many
are missed is measured against an exact scan on a seeded sample of queries (`max_cosine_recall`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from lvm_core.data.retrieval.faiss_index import faiss_wanted, import_faiss
from lvm_core.data.retrieval.rows import RetrievalError
from lvm_core.data.vector_files import as_float32_block

__all__ = [
    "EXACT_PAIR_BUDGET",
    "IvfPlan",
    "MaxCosineBackend",
    "ivf_plan",
    "max_cosine",
    "max_cosine_backend",
    "max_cosine_ivf",
    "max_cosine_recall",
]

#: Largest number of (query, bank) pairs scanned exactly when the backend is chosen by size (~2e11 flop at
#: D=384, seconds); a larger scan uses the bounded IVF search.
EXACT_PAIR_BUDGET = 250_000_000
#: Bank rows per IVF list and lists probed per query: each query costs ~ IVF_NPROBE x IVF_LIST_ROWS pairs.
IVF_LIST_ROWS = 2048
IVF_NPROBE = 2
#: Lloyd iterations of the list centroids, and the most rows of the seeded sample they are fitted on.
IVF_ITERS = 3
IVF_SAMPLE_MAX = 65536
#: Queries of the seeded sample whose exact maximum checks the approximate one.
RECALL_SAMPLE = 500
RECALL_SEED = 0
MaxCosineBackend = Literal["exact", "faiss-flat", "ivf"]


@dataclass(frozen=True)
class IvfPlan:
    """The cost bound of one IVF scan: lists, probes, and the expected number of pairs scored."""

    nlist: int
    nprobe: int
    list_rows: int
    pair_bound: int  # n_query x nprobe x list_rows
    exact_pairs: int  # n_query x n_bank, what an exact scan would score

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def ivf_plan(n_query: int, n_bank: int, list_rows: int = IVF_LIST_ROWS, nprobe: int = IVF_NPROBE) -> IvfPlan:
    """Lists of ~`list_rows` bank rows and `nprobe` of them per query: a cost linear in the data size."""
    if list_rows < 1 or nprobe < 1:
        raise RetrievalError(f"ivf_plan: list_rows and nprobe must be >= 1, got {list_rows}, {nprobe}")
    nlist = max(1, -(-int(n_bank) // int(list_rows)))
    probe = min(int(nprobe), nlist)
    return IvfPlan(nlist, probe, int(list_rows), int(n_query) * probe * int(list_rows), int(n_query) * int(n_bank))


def max_cosine_backend(n_bank: int, use_faiss: bool | None = None, n_query: int | None = None) -> MaxCosineBackend:
    """Which backend `max_cosine` uses for `n_query` rows against `n_bank` rows.

    ``use_faiss`` None: the bounded ``ivf`` scan above `EXACT_PAIR_BUDGET` pairs, else exact (FAISS ``knn``
    from `FAISS_AUTO_THRESHOLD` bank rows when installed). True/False force the exact FAISS/numpy scan.
    """
    if use_faiss is None and n_query is not None and int(n_query) * int(n_bank) > EXACT_PAIR_BUDGET:
        return "ivf"
    if not faiss_wanted(n_bank, use_faiss, "max_cosine", "the near-duplicate scan over"):
        return "exact"
    return "faiss-flat"


def max_cosine(
    vectors: np.ndarray,
    query_rows: np.ndarray,
    bank: np.ndarray,
    *,
    backend: MaxCosineBackend = "exact",
    query_block: int = 2048,
    bank_block: int = 8192,
    plan: IvfPlan | None = None,
) -> np.ndarray:
    """(len(query_rows),) float32: max cosine of each query row to any bank row (rows of one unit matrix).

    Memory is a few gathered row blocks cast to float32 plus one (query_block x bank_block) score block,
    whatever the table size. ``faiss-flat`` is the same exact maximum through ``faiss.knn``; ``ivf`` is
    the bounded approximate scan (`max_cosine_ivf`, `plan` default `ivf_plan`). -inf when the bank is empty.
    """
    query_rows = np.asarray(query_rows, dtype=np.int64)
    bank = np.asarray(bank, dtype=np.int64)
    best = np.full(query_rows.size, -np.inf, dtype=np.float32)
    if query_rows.size == 0 or bank.size == 0:
        return best
    if backend == "ivf":
        return max_cosine_ivf(vectors, query_rows, bank, plan or ivf_plan(query_rows.size, bank.size))[0]
    faiss = import_faiss() if backend == "faiss-flat" else None
    if backend == "faiss-flat" and faiss is None:
        raise RetrievalError("max_cosine: backend faiss-flat needs faiss (pip install faiss-cpu)")
    if backend not in ("exact", "faiss-flat"):
        raise RetrievalError(f"max_cosine: unknown backend {backend!r} (exact, faiss-flat, ivf)")
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


def max_cosine_ivf(
    vectors: np.ndarray, query_rows: np.ndarray, bank: np.ndarray, plan: IvfPlan, *, group_rows: int = 8192,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Bounded approximate max cosine (see the module docstring); returns it and the pairs scored.

    Per row it holds a list id (int32) and a sort position; vectors are read a group of lists (about
    `group_rows` bank rows and the queries that probe them) at a time.
    """
    query_rows = np.asarray(query_rows, dtype=np.int64)
    bank = np.asarray(bank, dtype=np.int64)
    if query_rows.size == 0 or bank.size == 0:
        return np.full(query_rows.size, -np.inf, dtype=np.float32), 0
    centroids = _centroids(vectors, bank, plan.nlist, seed)
    bank_list = _nearest_lists(vectors, bank, centroids, 1)[:, 0]
    probes = _nearest_lists(vectors, query_rows, centroids, plan.nprobe)
    return _score_lists(vectors, query_rows, bank, bank_list, probes, centroids.shape[0], group_rows)


def _centroids(vectors: np.ndarray, bank: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """(nlist, D) unit centroids: seeded bank rows refined by a few spherical Lloyd steps on a sample."""
    rng = np.random.default_rng(seed)
    size = min(bank.size, max(nlist, min(16 * nlist, IVF_SAMPLE_MAX)))
    sample = as_float32_block(vectors, np.sort(bank[rng.choice(bank.size, size=size, replace=False)]))
    cent = sample[np.sort(rng.choice(size, size=min(nlist, size), replace=False))].copy()
    for _ in range(IVF_ITERS if size > cent.shape[0] else 0):
        assign = _nearest_lists(sample, np.arange(size), cent, 1)[:, 0]
        order = np.argsort(assign, kind="stable")
        present, starts = np.unique(assign[order], return_index=True)
        sums = np.add.reduceat(sample[order], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        ok = norms[:, 0] > 0
        cent[present[ok]] = sums[ok] / norms[ok]
    return cent


def _nearest_lists(vectors: np.ndarray, rows: np.ndarray, centroids: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) int32: the k centroids of highest cosine per row (score blocks of <= 16 MiB)."""
    nlist = centroids.shape[0]
    out = np.empty((rows.size, k), dtype=np.int32)
    block = max(256, min(16384, (1 << 22) // max(nlist, 1)))
    for s in range(0, rows.size, block):
        scores = as_float32_block(vectors, rows[s : s + block]) @ centroids.T
        e = s + scores.shape[0]
        if k == 1:
            out[s:e, 0] = scores.argmax(axis=1)
        elif k >= nlist:
            out[s:e] = np.argsort(-scores, axis=1)[:, :k]
        else:
            np.negative(scores, out=scores)
            out[s:e] = np.argpartition(scores, k - 1, axis=1)[:, :k]
    return out


def _score_lists(
    vectors: np.ndarray, query_rows: np.ndarray, bank: np.ndarray, bank_list: np.ndarray, probes: np.ndarray,
    nlist: int, group_rows: int,
) -> tuple[np.ndarray, int]:
    """Exact scores of each query against the bank rows of the lists it probes, a group of lists at a time."""
    nprobe = probes.shape[1]
    order_b = np.argsort(bank_list, kind="stable")
    b_start = np.searchsorted(bank_list[order_b], np.arange(nlist + 1))
    flat = probes.ravel()
    order_q = np.argsort(flat, kind="stable")
    q_start = np.searchsorted(flat[order_q], np.arange(nlist + 1))
    best = np.full(query_rows.size, -np.inf, dtype=np.float32)
    pairs = 0
    lo = 0
    while lo < nlist:
        hi = max(lo + 1, int(np.searchsorted(b_start, b_start[lo] + group_rows, side="right")) - 1)
        hi = min(hi, nlist)
        bank_block = as_float32_block(vectors, bank[order_b[b_start[lo] : b_start[hi]]])
        queries, inv = np.unique(order_q[q_start[lo] : q_start[hi]] // nprobe, return_inverse=True)
        q_block = as_float32_block(vectors, query_rows[queries])
        local = np.full(queries.size, -np.inf, dtype=np.float32)
        for j in range(lo, hi):
            qj = inv[q_start[j] - q_start[lo] : q_start[j + 1] - q_start[lo]]
            bj = bank_block[b_start[j] - b_start[lo] : b_start[j + 1] - b_start[lo]]
            step = max(1, (1 << 22) // max(bj.shape[0], 1))  # score blocks of <= 16 MiB, whatever the list size
            for c in range(0, qj.size if bj.shape[0] else 0, step):
                qc = qj[c : c + step]
                local[qc] = np.maximum(local[qc], (q_block[qc] @ bj.T).max(axis=1))
            pairs += int(qj.size) * int(bj.shape[0])
        np.maximum(best[queries], local, out=local)
        best[queries] = local
        lo = hi
    return best, pairs


def max_cosine_recall(
    vectors: np.ndarray, query_rows: np.ndarray, bank: np.ndarray, approx: np.ndarray, threshold: float,
    *, sample_size: int = RECALL_SAMPLE, seed: int = RECALL_SEED,
) -> dict[str, Any]:
    """How well `approx` (max cosines of `query_rows`) matches an exact scan on a seeded query sample.

    ``top1``: share of sampled queries whose true nearest bank row was found (approximate max equals the
    exact one); ``near_dup_recall``: share of sampled queries with an exact max >= `threshold` that the
    approximate scan also puts at or above it (None when the sample has none); ``by_level``: the same
    recall for exact maxima at or above a few lower cosines, so the figure is not empty on clean data.
    """
    query_rows = np.asarray(query_rows, dtype=np.int64)
    n = min(int(sample_size), query_rows.size)
    pick = np.sort(np.random.default_rng(int(seed)).choice(query_rows.size, size=n, replace=False))
    exact = max_cosine(vectors, query_rows[pick], bank, backend=max_cosine_backend(int(np.size(bank))))
    got = np.asarray(approx, dtype=np.float32)[pick]
    levels = {}
    for level in (0.9, 0.95, 0.99, float(threshold)):
        hit = exact >= level
        levels[f"{level:g}"] = {"n": int(hit.sum()), "recall": float((got[hit] >= level).mean()) if hit.any() else None}
    near = exact >= threshold
    return {
        "sample_size": n,
        "seed": int(seed),
        "top1": float((got >= exact - 1e-5).mean()) if n else None,
        "near_dup_in_sample": int(near.sum()),
        "near_dup_recall": float((got[near] >= threshold).mean()) if near.any() else None,
        "by_level": levels,
    }
