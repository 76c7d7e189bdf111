"""The chunk bank: all chunk vectors of a dataset, top-k search and exact ranks of known rows.

`search` is exact by default (blockwise matrix products) and uses FAISS for large banks (`faiss_index`);
`rank_of` is always exact, with a pessimistic tie policy (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lvm_core.data.retrieval.faiss_index import (
    FAISS_BLOCK_ROWS,
    FaissKind,
    build_faiss_index,
    faiss_wanted,
    search_faiss_flat,
    search_faiss_index,
)
from lvm_core.data.retrieval.rows import (
    ExcludeRows,
    RetrievalError,
    bank_rows,
    check_rows,
    normalize_exclusions,
    sorted_topk,
    unit_rows,
)
from lvm_core.data.vector_files import VALIDATE_BLOCK_ROWS, as_float32_block

__all__ = ["TIE_EPS", "ChunkBank"]

#: Scores closer than this are treated as ties (float32 products of unit vectors differ by ~1e-7).
TIE_EPS = 1e-6


class ChunkBank:
    """All chunk vectors of a dataset (row i = chunks row i) with their article ids and text hashes.

    `search` returns top-k rows per query (excluding given rows, e.g. the query's context chunks);
    `rank_of` returns the exact 1-based rank of a known row.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        article_ids: np.ndarray | None = None,
        text_hash: Sequence[str] | np.ndarray | None = None,  # strings, or uint64 codes (8 bytes a row)
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
            if np.issubdtype(self.text_hash.dtype, np.integer):  # 64-bit codes (`hash_codes`): used as they are
                self._hash_codes = self.text_hash
            else:
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
        if faiss_wanted(n, use_faiss, "ChunkBank", "the bank of"):
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
        if kind == "flat":  # no index: blockwise faiss.knn over the bank itself (`search_faiss_flat`)
            self._faiss_kind, self.backend = "flat", "faiss-flat"
            return
        index, quantizer = build_faiss_index(
            self.vectors, kind, hnsw_m=hnsw_m, ef_search=ef_search, nprobe=nprobe, block_rows=self.faiss_block_rows
        )
        if quantizer is not None:
            self._faiss_quantizer = quantizer  # keep alive: the IVF index does not own it
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
            return search_faiss_flat(self.vectors, q, k, excl, self.faiss_block_rows)
        if self._faiss_index is not None:
            return search_faiss_index(self._faiss_index, self.n, q, k, excl)
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
                s_top, r_top = sorted_topk(scores, rows, min(k, be - bs))
                best_s, best_r = sorted_topk(
                    np.concatenate([best_s, s_top], axis=1), np.concatenate([best_r, r_top], axis=1), k
                )
            width = best_s.shape[1]
            out_s[qs:qe, :width] = best_s
            out_r[qs:qe, :width] = np.where(np.isneginf(best_s), -1, best_r)
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
        true_rows = check_rows(true_rows, self.n, "true_rows")
        if true_rows.shape[0] != q.shape[0]:
            raise RetrievalError(f"true_rows: {true_rows.shape[0]} rows for {q.shape[0]} queries")
        excl = normalize_exclusions(exclude_rows, q.shape[0], self.n)
        if excl.size and (excl == true_rows[:, None]).any():
            bad = int(np.flatnonzero((excl == true_rows[:, None]).any(axis=1))[0])
            raise RetrievalError(f"rank_of: query {bad} excludes its own true row {int(true_rows[bad])}")
        codes = self._hash_codes if same_hash_is_target else None
        ranks = np.ones(q.shape[0], dtype=np.int64)
        for qs in range(0, q.shape[0], self.query_block):
            qe = min(q.shape[0], qs + self.query_block)
            qb, tr, ex = q[qs:qe], true_rows[qs:qe], excl[qs:qe]
            true_s = np.einsum("ij,ij->i", qb, as_float32_block(self.vectors, tr))
            thresh = (true_s - np.float32(tie_eps))[:, None]
            true_code = codes[tr][:, None] if codes is not None else None
            count = np.zeros(qe - qs, dtype=np.int64)
            for bs in range(0, self.n, self.block_rows):
                be = min(self.n, bs + self.block_rows)
                ahead = (qb @ self._block(bs, be).T) >= thresh
                if codes is not None:
                    ahead &= codes[bs:be][None, :] != true_code
                else:
                    inb = np.flatnonzero((tr >= bs) & (tr < be))
                    ahead[inb, tr[inb] - bs] = False
                ii, jj = np.nonzero((ex >= bs) & (ex < be))
                ahead[ii, ex[ii, jj] - bs] = False
                count += ahead.sum(axis=1)
            ranks[qs:qe] += count
        return ranks
