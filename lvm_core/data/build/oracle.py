"""Oracle Recall@K of a dataset folder: can the stored vectors find their own chunks again?

Used by the build (manifest `oracle`) and recomputed independently by the data gate (`expectations/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.embedding.encoder import load_encoder
from lvm_core.data.embedding.fingerprint import EncoderFingerprint, FingerprintMismatchError
from lvm_core.data.hash_codes import read_hash_codes
from lvm_core.data.retrieval.bank import ChunkBank
from lvm_core.data.retrieval.oracle import (
    ORACLE_ALIGNED_COS,
    ORACLE_K,
    ORACLE_SAMPLE_SIZE,
    ORACLE_SEED,
    ORACLE_TRAIN_SAMPLE_SIZE,
    oracle_hits,
    oracle_sample,
)
from lvm_core.data.vector_files import as_float32_block
from lvm_core.io.storage import read_json

#: Rows per block when the oracle checks and searches the bank (16k x 384 float32 = 24 MiB).
_BLOCK_ROWS = 16384


def measure_oracle(
    root: Path,
    target_rows: np.ndarray,
    encoder_name: str | None = None,
    *,
    k: int | None = None,
    sample_size: int | None = None,
    seed: int | None = None,
    batch_size: int = 64,
    text_hash: np.ndarray | None = None,
    train_rows: np.ndarray | None = None,
    train_sample_size: int | None = None,
) -> dict[str, Any]:
    """Oracle Recall@K of a dataset folder (DESIGN "Oracle Recall@K").

    A seeded sample (`retrieval.oracle_sample`, >= 500 or all) of the distinct `target_rows` is re-encoded
    from its chunk *texts* with the dataset's own encoder (`encoder_name`, default the model named by
    ``encoder.json``; one whose fingerprint differs is refused) and searched in the bank of the stored
    vectors; a hit is the target row or a row with the same text hash in the top k. Vectors permuted
    against ``chunks.parquet`` score near 0. Only reads the folder. `text_hash`: the 64-bit codes of
    ``chunks.parquet``'s text hashes (`hash_codes`), when the caller holds them already (else they are read).
    `train_rows`: train targets, of which a seeded sample (`ORACLE_TRAIN_SAMPLE_SIZE`) is re-encoded too;
    ``recall`` and ``hits`` count both samples, ``misaligned`` the sampled rows whose stored vector has
    cosine < `ORACLE_ALIGNED_COS` to its re-encoded text (gated at 0).
    """
    paths = DatasetPaths(Path(root))
    k = ORACLE_K if k is None else int(k)
    sample_size = ORACLE_SAMPLE_SIZE if sample_size is None else int(sample_size)
    seed = ORACLE_SEED if seed is None else int(seed)
    encoder, stored = _dataset_encoder(paths, encoder_name)
    eval_rows = oracle_sample(target_rows, sample_size, seed)
    train_sample = ORACLE_TRAIN_SAMPLE_SIZE if train_sample_size is None else int(train_sample_size)
    train = (oracle_sample(train_rows, train_sample, seed + 1) if train_rows is not None and np.size(train_rows)
             and train_sample > 0 else np.zeros(0, dtype=np.int64))
    train = np.setdiff1d(train, eval_rows)
    rows = np.union1d(eval_rows, train)
    out: dict[str, Any] = {
        "k": k, "sample_size": int(eval_rows.size), "seed": seed, "n_targets": int(np.unique(target_rows).size),
        "train_sample_size": int(train.size), "query": "re-encoded target texts", "encoder": stored.id,
        "hits": 0, "recall": 0.0, "misaligned": 0, "aligned_cos": ORACLE_ALIGNED_COS,
    }
    if rows.size == 0:
        return out
    texts = read_rows(paths.chunks, rows, "text")
    vectors = np.load(paths.embeddings, mmap_mode="r", allow_pickle=False)
    codes = read_hash_codes(paths.chunks) if text_hash is None else text_hash
    bank = ChunkBank(vectors, text_hash=codes, check_block=_BLOCK_ROWS)
    bank.faiss_block_rows = _BLOCK_ROWS  # 24 MiB float32 blocks: the search streams the bank, holds one
    fresh = encoder.encode(texts, batch_size=batch_size)
    hits = oracle_hits(bank, rows, k, target_vectors=fresh)
    own = np.einsum("ij,ij->i", as_float32_block(vectors, rows), np.asarray(fresh, dtype=np.float32))
    out.update(hits=int(hits.sum()), recall=float(hits.mean()), misaligned=int((own < ORACLE_ALIGNED_COS).sum()),
               min_cos=float(own.min()))
    return out


def _dataset_encoder(paths: DatasetPaths, encoder_name: str | None) -> tuple[Any, EncoderFingerprint]:
    """The encoder that made the dataset's vectors (and its stored fingerprint); another one is refused."""
    try:
        stored = EncoderFingerprint.from_dict(read_json(paths.encoder))
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{paths.encoder}: {exc}") from exc
    encoder = load_encoder(encoder_name or stored)  # the stored fingerprint names its backend
    if encoder.fingerprint != stored:
        raise FingerprintMismatchError(
            f"{paths.root}: vectors were made by encoder {stored.model_name!r} (fingerprint {stored.id}), "
            f"but {encoder_name or stored.model_name!r} loads fingerprint {encoder.fingerprint.id}; "
            "the oracle needs the dataset's own encoder"
        )
    return encoder, stored


def read_rows(path: Path, rows: np.ndarray, column: str, batch_rows: int = 1 << 16) -> list[Any]:
    """Values of one column at sorted, distinct `rows` of a Parquet file, read batch by batch from only the
    row groups that hold them (the oracle's 500 texts, not the whole text column)."""
    pf = pq.ParquetFile(path)
    rows = np.asarray(rows, dtype=np.int64)
    sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    bounds = np.cumsum([0, *sizes])
    if rows.size and (rows.min() < 0 or rows.max() >= bounds[-1]):
        raise DataContractError(f"{path}: rows {int(rows.min())}..{int(rows.max())} outside its {int(bounds[-1])} rows")
    out: list[Any] = []
    for g in np.unique(np.searchsorted(bounds, rows, side="right") - 1):
        pos = int(bounds[g])
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[int(g)], columns=[column]):
            local = rows[(rows >= pos) & (rows < pos + batch.num_rows)] - pos
            if local.size:
                out.extend(batch.column(0).take(pa.array(local)).to_pylist())
            pos += batch.num_rows
    pa.default_memory_pool().release_unused()  # the text batches' pages, kept by the pool otherwise
    return out
