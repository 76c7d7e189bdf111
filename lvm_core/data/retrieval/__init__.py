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

Modules: `rows` (checked inputs, top-k merging), `faiss_index` (whether and how FAISS is used), `bank`
(ChunkBank: search, exact ranks), `nearest` (max cosine, the near-duplicate scan), `oracle` (Oracle
Recall@K).
"""
