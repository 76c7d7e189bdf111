"""Loading a published dataset (`Dataset`, `load_dataset`) and listing the published ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from lvm_core.contracts.errors import UserError
from lvm_core.contracts.layout import DatasetPaths, datasets_root
from lvm_core.contracts.manifest import DatasetManifest, read_manifest
from lvm_core.data import windows
from lvm_core.data.vector_files import load_embeddings
from lvm_core.io.parquet_rows import ColumnRows


class DatasetNotReadyError(UserError, RuntimeError):
    """The dataset folder is missing, incomplete or did not pass its gates."""


@dataclass
class Dataset:
    """A published dataset: chunk metadata, vectors (memory-mapped), sequences per split, manifest."""

    root: Path
    manifest: DatasetManifest
    vectors: np.ndarray
    fingerprint: Any  # lvm_core.data.embedding.EncoderFingerprint
    article_ids: np.ndarray
    chunk_index: np.ndarray
    text_hash: np.ndarray
    sequences: dict[str, Any]
    _texts: ColumnRows | None = field(default=None, repr=False)

    @property
    def paths(self) -> DatasetPaths:
        return DatasetPaths(self.root)

    @property
    def context_len(self) -> int:
        ctx = self.manifest.context_len
        return int(ctx if ctx is not None else self.sequences["train"].context_rows.shape[1])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def texts(self) -> ColumnRows:
        """Chunk texts by row, read on demand (only the rows asked for, by row group): never the whole column."""
        if self._texts is None:
            self._texts = ColumnRows(self.paths.chunks, "text")
        return self._texts

    def article_bins(self) -> dict[int, int]:
        split_df = pq.read_table(self.paths.splits, columns=["article_id", "coherence_bin"]).to_pylist()
        return {r["article_id"]: r["coherence_bin"] for r in split_df if r["coherence_bin"] is not None}


def load_dataset(root: Path, require_ready: bool = True) -> Dataset:
    """Open a dataset folder; refuses one that did not pass its gates unless `require_ready=False`."""
    paths = DatasetPaths(Path(root))
    if not paths.root.is_dir():
        raise DatasetNotReadyError(f"{paths.root}: no such dataset folder")
    if not paths.manifest.exists():
        raise DatasetNotReadyError(f"{paths.root}: no manifest.json (not a built dataset)")
    if require_ready and not paths.ready.exists():
        raise DatasetNotReadyError(
            f"{paths.root}: dataset did not pass its gates (no READY marker); use --force to train anyway"
        )
    manifest = read_manifest(paths.manifest)  # DataContractError naming the file and field
    vectors, fingerprint = load_embeddings(paths.root)
    chunks = pq.read_table(paths.chunks, columns=["article_id", "chunk_index", "text_hash"])
    seqs = windows.load_sequences(paths.sequences)
    return Dataset(
        root=paths.root,
        manifest=manifest,
        vectors=vectors,
        fingerprint=fingerprint,
        article_ids=chunks.column("article_id").to_numpy(),
        chunk_index=chunks.column("chunk_index").to_numpy(),
        text_hash=np.asarray(chunks.column("text_hash").to_pylist()),
        sequences=seqs,
    )


def list_datasets(data_dir: Path) -> list[dict[str, Any]]:
    """Published datasets with their headline numbers (for `lvm datasets`)."""
    rows: list[dict[str, Any]] = []
    root = datasets_root(data_dir)
    if not root.exists():
        return rows
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        paths = DatasetPaths(d)
        try:
            m = read_manifest(paths.manifest)
        except (OSError, ValueError):
            continue
        rows.append(
            {
                "dataset": d.name,
                "ready": paths.ready.exists(),
                "articles": m.counts.articles,
                "chunks": m.counts.chunks,
                "sequences": m.sequences,
                "created_at": m.created_at,
                "path": str(d),
            }
        )
    return rows
