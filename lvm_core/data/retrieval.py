"""Chunk retrieval bank: cosine top-k search and exact ranks over all chunk vectors.

Retrieval metrics and the oracle gate need the rank of one known row among *all* chunks, which an
approximate index cannot give, so `rank_of` is always exact (blockwise matrix products, memory bounded
by the block sizes). The bank keeps the matrix it is given — a memory-mapped float32 or float16
``embeddings.npy`` stays on disk — and casts one row block at a time to float32 where it computes.
`search` is exact by default; from `FAISS_AUTO_THRESHOLD` rows (or with ``use_faiss=True``) it uses FAISS,
and falls back to exact search with a warning when faiss is not installed:

- ``faiss_index="flat"`` (default): exact inner product with ``faiss.knn`` over float32 row blocks of the
  bank (`FAISS_BLOCK_ROWS`), merged into one top-k — same answers as numpy, multi-threaded, and no copy of
  the bank (memory is one block);
- ``"hnsw"``: ``IndexHNSWFlat`` (inner-product metric, ``M=32``, ``efSearch`` configurable) — approximate;
- ``"ivf"``: ``IndexIVFFlat`` with ``nlist ≈ 4·√n`` trained on a seeded sample, ``nprobe`` configurable —
  approximate. Both approximate indexes hold their own float32 copy of the bank (added block by block).

Approximate indexes lower recall a little; `oracle_recall_at_k` measures exactly that and, queried with
target texts re-encoded by the dataset's encoder, the alignment of vectors, rows and text hashes.

Tie policy of `rank_of`: pessimistic. A bank row whose score is within `tie_eps` of the true row's score
counts as ranked ahead of it, so a collapsed predictor (e.g. one returning the same vector for every
input, scoring many rows equally) cannot look good. Rows whose text hash equals the true row's hash are
the same text (duplicates) and are never counted ahead — retrieving either is correct, as in the
oracle definition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from lvm_core.data.embedding import UNIT_NORM_TOLERANCE
from lvm_core.io.vectors import NORM_EPS, l2_normalize, row_norms
from lvm_core.data.vector_files import VALIDATE_BLOCK_ROWS, as_float32_block, iter_row_blocks

logger = logging.getLogger(__name__)

FaissKind = Literal["flat", "hnsw", "ivf"]

#: A bank at least this large uses FAISS when ``use_faiss=None`` and faiss is importable.
FAISS_AUTO_THRESHOLD = 200_000
#: Bank rows per ``faiss.knn`` call of the blockwise exact FAISS search (65536 x 384 float32 = 96 MiB).
FAISS_BLOCK_ROWS = 65536
#: Scores closer than this are treated as ties (float32 products of unit vectors differ by ~1e-7).
TIE_EPS = 1e-6


class RetrievalError(ValueError):
    """Bad input to the retrieval bank (shape, dtype, row index out of range, missing faiss)."""


ExcludeRows = Sequence[np.ndarray] | np.ndarray | None


def unit_rows(x: Any, name: str) -> np.ndarray:
    """Float32 C-contiguous copy of `x` with unit-length rows; rejects non-finite and zero rows."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise RetrievalError(f"{name}: expected a non-empty 2-D array (n, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise RetrievalError(f"{name}: contains NaN or inf")
    norms = row_norms(arr)
    if (norms <= NORM_EPS).any():
        bad = int(np.flatnonzero(norms <= NORM_EPS)[0])
        raise RetrievalError(f"{name}: row {bad} has zero length; cosine is undefined")
    if np.allclose(norms, 1.0, atol=1e-6):
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(l2_normalize(arr))


def import_faiss() -> Any | None:
    """The faiss module, or None when the optional extra is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def bank_rows(vectors: Any, name: str, block: int = VALIDATE_BLOCK_ROWS) -> np.ndarray:
    """`vectors` itself (no copy: a memory map stays on disk) when it is a float32/float16 matrix of unit
    rows, checked block by block; otherwise a normalised float32 copy (`unit_rows`).

    float16 rows are unit only to float16 precision, so they are accepted within the data contract's
    tolerance; float32 rows within 1e-6 (as `unit_rows`).
    """
    if not (isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype in (np.float32, np.float16)):
        return unit_rows(vectors, name)
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise RetrievalError(f"{name}: expected a non-empty 2-D array (n, dim), got shape {vectors.shape}")
    atol = 1e-6 if vectors.dtype == np.float32 else UNIT_NORM_TOLERANCE
    for start, end in iter_row_blocks(vectors.shape[0], block):
        blk = as_float32_block(vectors, slice(start, end))
        if not np.isfinite(blk).all():
            raise RetrievalError(f"{name}: contains NaN or inf")
        norms = np.linalg.norm(blk, axis=1)
        if not np.allclose(norms, 1.0, atol=atol):
            return unit_rows(vectors, name)
    return vectors


def normalize_exclusions(exclude_rows: ExcludeRows, n_queries: int, n_rows: int) -> np.ndarray:
    """Exclusions as a padded int64 matrix (n_queries, e); -1 marks padding.

    Accepts None, an (n_queries, e) integer array (negative entries = padding) or a list of 1-D
    arrays (one per query, lengths may differ).
    """
    if exclude_rows is None:
        return np.full((n_queries, 0), -1, dtype=np.int64)
    if isinstance(exclude_rows, np.ndarray) and exclude_rows.ndim == 2:
        mat = exclude_rows
        if not np.issubdtype(mat.dtype, np.integer):
            raise RetrievalError(f"exclude_rows: expected integer row indices, got dtype {mat.dtype}")
        mat = mat.astype(np.int64, copy=True)
    else:
        items = list(exclude_rows)
        if len(items) != n_queries:
            raise RetrievalError(f"exclude_rows: {len(items)} entries for {n_queries} queries")
        width = max((np.asarray(r).size for r in items), default=0)
        mat = np.full((n_queries, width), -1, dtype=np.int64)
        for i, r in enumerate(items):
            r = np.asarray(r).ravel()
            if r.size and not np.issubdtype(r.dtype, np.integer):
                raise RetrievalError(f"exclude_rows[{i}]: expected integer row indices, got dtype {r.dtype}")
            mat[i, : r.size] = r
    if mat.shape[0] != n_queries:
        raise RetrievalError(f"exclude_rows: {mat.shape[0]} rows for {n_queries} queries")
    mat[mat < 0] = -1
    if mat.size and mat.max() >= n_rows:
        raise RetrievalError(f"exclude_rows: row {int(mat.max())} out of range for a bank of {n_rows} rows")
    return mat


def _check_rows(rows: Any, n_rows: int, name: str) -> np.ndarray:
    arr = np.asarray(rows)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise RetrievalError(f"{name}: expected a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_rows):
        raise RetrievalError(f"{name}: row index out of range [0, {n_rows})")
    return arr


def _sorted_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per query row: best score first, ties by smaller row index."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        rows = np.take_along_axis(rows, part, axis=1)
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class ChunkBank:
    """All chunk vectors of a dataset (row i = chunks row i) with their article ids and text hashes.

    `search` returns top-k rows per query (excluding given rows, e.g. the query's context chunks);
    `rank_of` returns the exact 1-based rank of a known row.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        article_ids: np.ndarray | None = None,
        text_hash: Sequence[str] | np.ndarray | None = None,
        use_faiss: bool | None = None,
        *,
        faiss_index: FaissKind = "flat",
        block_rows: int = 8192,
        query_block: int = 512,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        ivf_nprobe: int = 16,
        check_block: int = VALIDATE_BLOCK_ROWS,
    ):
        self.vectors = bank_rows(vectors, "ChunkBank vectors", check_block)
        n = self.vectors.shape[0]
        self.article_ids = None
        if article_ids is not None:
            self.article_ids = np.asarray(article_ids).astype(np.int64, copy=False)
            if self.article_ids.shape != (n,):
                raise RetrievalError(f"ChunkBank article_ids: shape {self.article_ids.shape}, expected ({n},)")
        self.text_hash = None
        self._hash_codes = None
        if text_hash is not None:
            self.text_hash = np.asarray(text_hash)
            if self.text_hash.shape != (n,):
                raise RetrievalError(f"ChunkBank text_hash: shape {self.text_hash.shape}, expected ({n},)")
            _, codes = np.unique(self.text_hash, return_inverse=True)
            self._hash_codes = codes.astype(np.int64).reshape(n)
        if block_rows < 1 or query_block < 1:
            raise RetrievalError("ChunkBank: block_rows and query_block must be >= 1")
        self.block_rows = int(block_rows)
        self.query_block = int(query_block)
        self._article_rows: dict[int, np.ndarray] | None = None
        self._faiss_index: Any = None
        self._faiss_kind: FaissKind | None = None
        self.faiss_block_rows = FAISS_BLOCK_ROWS
        self.backend = "exact"
        want = use_faiss if use_faiss is not None else n >= FAISS_AUTO_THRESHOLD
        if want:
            if import_faiss() is None:
                if use_faiss:
                    raise RetrievalError("ChunkBank(use_faiss=True): faiss is not installed (pip install faiss-cpu)")
                logger.warning(
                    "faiss is not installed: the bank of %d rows (FAISS threshold %d) uses exact blockwise search "
                    "(pip install faiss-cpu for the faster path)", n, FAISS_AUTO_THRESHOLD,
                )
            else:
                self._build_faiss(faiss_index, hnsw_m, hnsw_ef_search, ivf_nprobe)

    # --- properties -------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"ChunkBank(n={self.n}, dim={self.dim}, backend={self.backend!r})"

    @property
    def hash_codes(self) -> np.ndarray | None:
        """Integer code per row; equal codes = equal text hashes."""
        return self._hash_codes

    def rows_of_article(self, article_id: int) -> np.ndarray:
        """Sorted bank rows of one article (empty when unknown)."""
        if self.article_ids is None:
            raise RetrievalError("ChunkBank: built without article_ids; within-article lookups need them")
        if self._article_rows is None:
            order = np.argsort(self.article_ids, kind="stable")
            ids, starts = np.unique(self.article_ids[order], return_index=True)
            ends = np.append(starts[1:], order.size)
            self._article_rows = {int(a): np.sort(order[s:e]) for a, s, e in zip(ids, starts, ends)}
        return self._article_rows.get(int(article_id), np.zeros(0, dtype=np.int64))

    # --- FAISS ------------------------------------------------------------------------------------

    def _build_faiss(self, kind: FaissKind, hnsw_m: int, ef_search: int, nprobe: int) -> None:
        import faiss

        d = self.dim
        if kind == "flat":  # no index: blockwise faiss.knn over the bank itself (see _search_faiss_flat)
            self._faiss_kind, self.backend = "flat", "faiss-flat"
            return
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = int(ef_search)
        elif kind == "ivf":
            nlist = max(1, min(self.n // 39, int(4 * np.sqrt(self.n))))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(training_sample(self.vectors, 64 * nlist))
            index.nprobe = int(min(nprobe, nlist))
            self._faiss_quantizer = quantizer  # keep alive: the IVF index does not own it
        else:
            raise RetrievalError(f"ChunkBank faiss_index: unknown kind {kind!r} (flat, hnsw, ivf)")
        for start, end in iter_row_blocks(self.n, self.faiss_block_rows):
            index.add(as_float32_block(self.vectors, slice(start, end)))
        self._faiss_index, self._faiss_kind = index, kind
        self.backend = f"faiss-{kind}"

    # --- search -----------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, exclude_rows: ExcludeRows = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k bank rows by cosine per query, never returning a row in that query's exclusions.

        Returns ``(scores (B, k) float32, rows (B, k) int64)``, best first (ties: smaller row first);
        when fewer than k rows are left after exclusion, the tail is ``score=-inf, row=-1``.
        """
        q = unit_rows(queries, "queries")
        if q.shape[1] != self.dim:
            raise RetrievalError(f"queries: dim {q.shape[1]} does not match the bank's dim {self.dim}")
        if int(k) < 1:
            raise RetrievalError(f"search: k must be >= 1, got {k}")
        k = int(k)
        excl = normalize_exclusions(exclude_rows, q.shape[0], self.n)
        if self._faiss_kind == "flat":
            return self._search_faiss_flat(q, k, excl)
        if self._faiss_index is not None:
            return self._search_faiss(q, k, excl)
        return self._search_exact(q, k, excl)

    def _block(self, start: int, end: int) -> np.ndarray:
        return as_float32_block(self.vectors, slice(start, end))

    def _search_exact(self, q: np.ndarray, k: int, excl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_q = q.shape[0]
        out_s = np.full((n_q, k), -np.inf, dtype=np.float32)
        out_r = np.full((n_q, k), -1, dtype=np.int64)
        for qs in range(0, n_q, self.query_block):
            qe = min(n_q, qs + self.query_block)
            qb, ex = q[qs:qe], excl[qs:qe]
            best_s = np.zeros((qe - qs, 0), dtype=np.float32)
            best_r = np.zeros((qe - qs, 0), dtype=np.int64)
            for bs in range(0, self.n, self.block_rows):
                be = min(self.n, bs + self.block_rows)
                scores = qb @ self._block(bs, be).T
                ii, jj = np.nonzero((ex >= bs) & (ex < be))
                scores[ii, ex[ii, jj] - bs] = -np.inf
                rows = np.broadcast_to(np.arange(bs, be, dtype=np.int64), scores.shape)
                s_top, r_top = _sorted_topk(scores, rows, min(k, be - bs))
                best_s, best_r = _sorted_topk(
                    np.concatenate([best_s, s_top], axis=1), np.concatenate([best_r, r_top], axis=1), k
                )
            width = best_s.shape[1]
            out_s[qs:qe, :width] = best_s
            out_r[qs:qe, :width] = np.where(np.isneginf(best_s), -1, best_r)
        return out_s, out_r

    def _search_faiss_flat(self, q: np.ndarray, k: int, excl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k with ``faiss.knn`` per bank block; each block returns k + (exclusions) candidates, so
        k non-excluded rows survive whenever the block has them."""
        import faiss

        n_q = q.shape[0]
        best_s = np.zeros((n_q, 0), dtype=np.float32)
        best_r = np.zeros((n_q, 0), dtype=np.int64)
        for bs, be in iter_row_blocks(self.n, self.faiss_block_rows):
            kk = min(k + excl.shape[1], be - bs)
            scores, rows = faiss.knn(q, self._block(bs, be), kk, metric=faiss.METRIC_INNER_PRODUCT)
            rows = rows.astype(np.int64)
            scores = scores.astype(np.float32)
            bad = rows < 0
            rows = np.where(bad, -1, rows + bs)
            if excl.shape[1]:
                bad |= (rows[:, :, None] == excl[:, None, :]).any(axis=2)
            scores[bad] = -np.inf
            best_s, best_r = _sorted_topk(
                np.concatenate([best_s, scores], axis=1), np.concatenate([best_r, rows], axis=1), k
            )
        out_s = np.full((n_q, k), -np.inf, dtype=np.float32)
        out_r = np.full((n_q, k), -1, dtype=np.int64)
        width = best_s.shape[1]
        out_s[:, :width] = best_s
        out_r[:, :width] = np.where(np.isneginf(best_s), -1, best_r)
        return out_s, out_r

    def _search_faiss(self, q: np.ndarray, k: int, excl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k_ask = min(self.n, k + excl.shape[1])
        scores, rows = self._faiss_index.search(q, k_ask)
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

    # --- exact ranks ------------------------------------------------------------------------------

    def rank_of(
        self,
        queries: np.ndarray,
        true_rows: np.ndarray,
        exclude_rows: ExcludeRows = None,
        *,
        tie_eps: float = TIE_EPS,
        same_hash_is_target: bool = True,
    ) -> np.ndarray:
        """Exact 1-based rank of `true_rows[i]` among all bank rows for query i (any backend).

        rank = 1 + number of non-excluded rows scoring at least ``score(true) - tie_eps`` (pessimistic
        ties). With ``same_hash_is_target`` rows sharing the true row's text hash are not competitors.
        """
        q = unit_rows(queries, "queries")
        if q.shape[1] != self.dim:
            raise RetrievalError(f"queries: dim {q.shape[1]} does not match the bank's dim {self.dim}")
        true_rows = _check_rows(true_rows, self.n, "true_rows")
        if true_rows.shape[0] != q.shape[0]:
            raise RetrievalError(f"true_rows: {true_rows.shape[0]} rows for {q.shape[0]} queries")
        excl = normalize_exclusions(exclude_rows, q.shape[0], self.n)
        if excl.size and (excl == true_rows[:, None]).any():
            bad = int(np.flatnonzero((excl == true_rows[:, None]).any(axis=1))[0])
            raise RetrievalError(f"rank_of: query {bad} excludes its own true row {int(true_rows[bad])}")
        use_hash = same_hash_is_target and self._hash_codes is not None
        ranks = np.ones(q.shape[0], dtype=np.int64)
        for qs in range(0, q.shape[0], self.query_block):
            qe = min(q.shape[0], qs + self.query_block)
            qb, tr, ex = q[qs:qe], true_rows[qs:qe], excl[qs:qe]
            true_s = np.einsum("ij,ij->i", qb, as_float32_block(self.vectors, tr))
            thresh = (true_s - np.float32(tie_eps))[:, None]
            true_code = self._hash_codes[tr][:, None] if use_hash else None
            count = np.zeros(qe - qs, dtype=np.int64)
            for bs in range(0, self.n, self.block_rows):
                be = min(self.n, bs + self.block_rows)
                ahead = (qb @ self._block(bs, be).T) >= thresh
                if use_hash:
                    ahead &= self._hash_codes[bs:be][None, :] != true_code
                else:
                    inb = np.flatnonzero((tr >= bs) & (tr < be))
                    ahead[inb, tr[inb] - bs] = False
                ii, jj = np.nonzero((ex >= bs) & (ex < be))
                ahead[ii, ex[ii, jj] - bs] = False
                count += ahead.sum(axis=1)
            ranks[qs:qe] += count
        return ranks


#: From this many bank rows on, `max_cosine` finds candidates with an IVF index (then scores them exactly).
APPROX_MAX_COSINE_THRESHOLD = 1_000_000
MaxCosineBackend = Literal["exact", "faiss-flat", "faiss-ivf"]


def max_cosine_backend(n_bank: int, use_faiss: bool | None = None) -> MaxCosineBackend:
    """Which backend `max_cosine` uses for a bank of `n_bank` rows (a warning when faiss is missing)."""
    want = use_faiss if use_faiss is not None else n_bank >= FAISS_AUTO_THRESHOLD
    if not want:
        return "exact"
    if import_faiss() is None:
        if use_faiss:
            raise RetrievalError("max_cosine(use_faiss=True): faiss is not installed (pip install faiss-cpu)")
        logger.warning(
            "faiss is not installed: the near-duplicate scan over %d rows (FAISS threshold %d) uses exact "
            "blockwise search (pip install faiss-cpu for the faster path)", n_bank, FAISS_AUTO_THRESHOLD,
        )
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


def training_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded float32 sample of at most `size` rows (sorted, so a memory map is read in order)."""
    n = vectors.shape[0]
    if n <= size:
        return as_float32_block(vectors, slice(0, n))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=int(size), replace=False))
    return as_float32_block(vectors, rows)


#: Oracle defaults (DESIGN "Oracle Recall@K"): K, the smallest re-encoded sample, and its seed.
ORACLE_K = 5
ORACLE_SAMPLE_SIZE = 500
ORACLE_SEED = 0


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
    target_rows = _check_rows(target_rows, bank.n, "target_rows")
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
        return (rows == target_rows[:, None]).any(axis=1)
    expected = np.asarray(target_hashes)
    if expected.shape != target_rows.shape:
        raise RetrievalError(f"target_hashes: shape {expected.shape}, expected {target_rows.shape}")
    if bank.text_hash is None:
        raise RetrievalError("oracle: target_hashes given but the bank has no text_hash")
    got = np.where(rows >= 0, bank.text_hash[np.clip(rows, 0, None)], None)
    return (got == expected[:, None]).any(axis=1)


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
