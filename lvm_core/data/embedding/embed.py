"""Embed chunk texts: each distinct hash encoded once, cached vectors reused, new ones stored as they come.

`embed_texts` is what the dataset build calls; it refuses a cache of another encoder and reports what
it did (`EmbedStats`: reused, encoded, speed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.embedding.cache import EmbeddingCache
from lvm_core.data.embedding.fingerprint import Encoder, EncoderFingerprint, ensure_same_fingerprint
from lvm_core.runtime.faults import crash_point

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["EmbedStats", "embed_texts"]


@dataclass
class EmbedStats:
    """What one `embed_texts` call did; `chunks_per_second` counts encoded texts only."""

    n_total: int
    n_unique: int
    n_reused: int
    n_encoded: int
    seconds_encoding: float
    chunks_per_second: float
    agreement: dict[str, Any] | None = None  # a non-reference backend's cosine to fp32 (`check_agreement`)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_total": self.n_total,
            "n_unique": self.n_unique,
            "n_reused": self.n_reused,
            "n_encoded": self.n_encoded,
            "seconds_encoding": self.seconds_encoding,
            "chunks_per_second": self.chunks_per_second,
        }
        if self.agreement is not None:
            out["agreement"] = dict(self.agreement)
        return out


def _block_progress(total: int, enabled: bool) -> tqdm[Any] | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encoding chunks", unit="chunk")


def embed_texts(
    texts: Sequence[str],
    hashes: Sequence[str],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    batch_size: int = 64,
    show_progress: bool = False,
    flush_every: int = 512,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for `texts` (row i <-> texts[i]), encoding each distinct hash once and only if not cached.

    New vectors reach the cache every `flush_every` texts, so an interrupted build loses little work.

    Identical hashes are assumed to be identical texts (hashes are of normalised text), so duplicates
    share one vector.
    """
    n = len(texts)
    if len(hashes) != n:
        raise ValueError(f"embed_texts: {n} texts but {len(hashes)} hashes")
    fp = encoder.fingerprint
    if cache is not None:
        ensure_same_fingerprint(fp, cache.fingerprint, f"embedding cache {cache.dir}")

    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    unique_hashes = list(first)
    unique_vecs, found, missing = _cached_vectors(unique_hashes, cache)

    seconds = 0.0
    if len(missing):
        if unique_vecs is None:
            unique_vecs = np.empty((len(unique_hashes), fp.dim), dtype=np.float32)
        seconds = _encode_missing(
            [texts[first_row] for first_row in first.values()], unique_hashes, missing, unique_vecs,
            encoder, fp, cache, batch_size=batch_size, show_progress=show_progress, flush_every=flush_every,
        )
    elif unique_vecs is None:
        unique_vecs = np.zeros((0, fp.dim), dtype=np.float32)

    n_encoded = int(len(missing))
    stats = EmbedStats(
        n_total=n,
        n_unique=len(unique_hashes),
        n_reused=int(found.sum()),
        n_encoded=n_encoded,
        seconds_encoding=seconds,
        chunks_per_second=(n_encoded / seconds) if seconds > 0 else 0.0,
        agreement=getattr(encoder, "agreement", None),
    )
    return _spread(unique_vecs, unique_hashes, hashes), stats


def _cached_vectors(
    unique_hashes: list[str], cache: EmbeddingCache | None
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(vectors found in the cache or None without one, found mask, positions still to encode)."""
    if cache is None:
        return None, np.zeros(len(unique_hashes), dtype=bool), np.arange(len(unique_hashes))
    unique_vecs, found = cache.get_many(unique_hashes)
    return unique_vecs, found, np.flatnonzero(~found)


def _encode_missing(
    unique_texts: list[str],
    unique_hashes: list[str],
    missing: np.ndarray,
    unique_vecs: np.ndarray,
    encoder: Encoder,
    fp: EncoderFingerprint,
    cache: EmbeddingCache | None,
    *,
    batch_size: int,
    show_progress: bool,
    flush_every: int,
) -> float:
    """Encode the `missing` unique texts into `unique_vecs`; returns the seconds spent encoding.

    Encodes in blocks and stores each block in the cache at once, so a killed run resumes where it was.
    """
    seconds = 0.0
    block = max(flush_every, batch_size)
    bar = _block_progress(len(missing), show_progress and len(missing) > block)
    for start in range(0, len(missing), block):
        part = missing[start : start + block]
        to_encode = [unique_texts[j] for j in part.tolist()]
        t0 = time.perf_counter()
        encoded = encoder.encode(to_encode, batch_size=batch_size, show_progress=show_progress and bar is None)
        seconds += time.perf_counter() - t0
        if encoded.dtype != np.float32 or encoded.shape != (len(to_encode), fp.dim):
            raise DataContractError(
                f"encoder {fp.model_name!r} returned {encoded.dtype}{encoded.shape}, "
                f"expected float32 {(len(to_encode), fp.dim)}"
            )
        unique_vecs[part] = encoded
        crash_point("embed.batch")
        if cache is not None:
            cache.put_many([unique_hashes[j] for j in part.tolist()], encoded)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return seconds


def _spread(unique_vecs: np.ndarray, unique_hashes: list[str], hashes: Sequence[str]) -> np.ndarray:
    """One row per input hash from the rows of the unique hashes (duplicates share a vector)."""
    if len(unique_hashes) == len(hashes):
        return unique_vecs  # no duplicates: unique order is input order, no copy needed
    pos = {h: j for j, h in enumerate(unique_hashes)}
    inverse = np.fromiter((pos[h] for h in hashes), dtype=np.int64, count=len(hashes))
    return unique_vecs[inverse]
