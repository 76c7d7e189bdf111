"""The persistent embedding cache: vectors keyed by (encoder fingerprint, text hash), kept across builds."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lvm_core import storage
from lvm_core.contracts import DataContractError
from lvm_core.embedding import EncoderFingerprint, FingerprintMismatchError, ensure_same_fingerprint

__all__ = ["EmbeddingCache"]

_SHARD_RE = re.compile(r"^shard-[0-9]+-[0-9a-f]{32}\.npz$")
_FINGERPRINT_FILE = "fingerprint.json"


class EmbeddingCache:
    """Vectors keyed by (encoder fingerprint, text hash), kept across builds so a rebuild encodes only new text.

    Layout: `root/<fingerprint.id>/fingerprint.json` plus append-only `shard-<ns>-<uuid>.npz` files, each
    holding `hashes` (unicode) and `vectors` (float32, n x dim). A shard is written under a temp name and
    renamed into place, so concurrent writers never see or clobber each other's partial files. The
    index (hash -> row) is loaded lazily and refreshed with shards that appeared since.
    """

    def __init__(self, root: Path, fingerprint: EncoderFingerprint):
        self.fingerprint = fingerprint
        self.dir = Path(root) / fingerprint.id
        self.dir.mkdir(parents=True, exist_ok=True)
        fp_path = self.dir / _FINGERPRINT_FILE
        if fp_path.exists():
            try:
                stored = EncoderFingerprint.from_dict(storage.read_json(fp_path))
            except (ValueError, OSError) as exc:
                raise FingerprintMismatchError(
                    f"embedding cache {self.dir}: unreadable {_FINGERPRINT_FILE} ({exc}); "
                    f"expected {fingerprint.describe()}"
                ) from exc
            ensure_same_fingerprint(fingerprint, stored, f"embedding cache {self.dir}")
        else:
            storage.write_json(fp_path, fingerprint.to_dict())
        self._lock = threading.Lock()
        self._index: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray = np.zeros((0, fingerprint.dim), dtype=np.float32)
        self._seen_shards: set[str] = set()

    # internal ------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Load shards not seen yet (written by this or another process)."""
        names = sorted(n for n in os.listdir(self.dir) if n not in self._seen_shards and _SHARD_RE.match(n))
        for name in names:
            self._add_block(*self._read_shard(self.dir / name))
            self._seen_shards.add(name)

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                hashes, vectors = z["hashes"], z["vectors"]
        except Exception as exc:  # noqa: BLE001 - any read failure names the shard
            raise DataContractError(f"embedding cache shard {path} is unreadable: {exc}") from exc
        if (
            vectors.dtype != np.float32
            or vectors.ndim != 2
            or vectors.shape[1] != self.fingerprint.dim
            or hashes.ndim != 1
            or hashes.shape[0] != vectors.shape[0]
        ):
            raise DataContractError(
                f"embedding cache shard {path}: hashes {hashes.shape} / vectors {vectors.dtype}{vectors.shape} "
                f"do not match the contract (n,) / float32 (n, {self.fingerprint.dim})"
            )
        return hashes, vectors

    def _add_block(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        base = self._n_rows
        keep = []
        for i, h in enumerate(hashes.tolist()):
            if h not in self._index:  # two writers may have stored the same hash; first one wins
                self._index[h] = base + len(keep)
                keep.append(i)
        if len(keep) == len(hashes):
            self._blocks.append(vectors)
        elif keep:
            self._blocks.append(vectors[np.asarray(keep)])

    @property
    def _n_rows(self) -> int:
        return self._matrix.shape[0] + sum(b.shape[0] for b in self._blocks)

    def _vectors(self) -> np.ndarray:
        if self._blocks:
            self._matrix = np.concatenate([self._matrix, *self._blocks], axis=0)
            self._blocks = []
        return self._matrix

    # public --------------------------------------------------------------------------------------

    def get_many(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors float32 (n, dim), found bool (n,)); rows not found are zero."""
        with self._lock:
            self._refresh()
            index = self._index
            rows = np.fromiter((index.get(h, -1) for h in hashes), dtype=np.int64, count=len(hashes))
            found = rows >= 0
            if len(hashes) and found.all():
                return self._vectors()[rows], found  # fancy indexing already returns a fresh array
            out = np.zeros((len(hashes), self.fingerprint.dim), dtype=np.float32)
            if found.any():
                out[found] = self._vectors()[rows[found]]
        return out, found

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> int:
        """Store vectors for hashes not cached yet as one new shard; returns how many were added."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (len(hashes), self.fingerprint.dim):
            raise ValueError(
                f"put_many: vectors shape {vectors.shape} does not match {len(hashes)} hashes x dim "
                f"{self.fingerprint.dim}"
            )
        if vectors.dtype != np.float32:
            raise ValueError(f"put_many: vectors must be float32, got {vectors.dtype}")
        if not np.isfinite(vectors).all():
            raise ValueError("put_many: vectors contain non-finite values")
        with self._lock:
            self._refresh()
            seen: set[str] = set()
            keep = []
            for i, h in enumerate(hashes):
                if h not in self._index and h not in seen:
                    seen.add(h)
                    keep.append(i)
            if not keep:
                return 0
            if len(keep) == len(hashes):
                new_hashes, new_vectors = np.asarray(hashes, dtype=str), vectors
            else:
                sel = np.asarray(keep)
                new_hashes, new_vectors = np.asarray(hashes, dtype=str)[sel], vectors[sel]
            name = f"shard-{time.time_ns()}-{uuid.uuid4().hex}.npz"
            with storage.atomic_path(self.dir / name) as tmp:
                with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
                    np.savez(fh, hashes=new_hashes, vectors=new_vectors)
            self._add_block(new_hashes, new_vectors)
            self._seen_shards.add(name)
            return len(keep)

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)

    def __contains__(self, text_hash: object) -> bool:
        with self._lock:
            self._refresh()
            return text_hash in self._index

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.dir)!r}, {self.fingerprint.model_name!r})"


