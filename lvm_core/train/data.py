"""One shape for what training and evaluation consume, whether it comes from a built dataset folder or
from the reference project's sequence NPZ files: a vector array, row-index windows per split, the
encoder fingerprint and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvm_core.contracts.manifest import DatasetManifest
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.windows import SequenceSet
from lvm_core.io.storage import file_digest


@dataclass
class TrainingData:
    vectors: np.ndarray
    sequences: dict[str, SequenceSet]
    fingerprint: EncoderFingerprint
    dataset_id: str
    source: Path
    manifest_path: Path | None = None
    manifest: DatasetManifest | None = None  # None for reference NPZ files, which carry none

    @property
    def context_len(self) -> int:
        return int(self.sequences["train"].context_rows.shape[1])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def split(self, name: str) -> SequenceSet | None:
        seqs = self.sequences.get(name)
        return seqs if seqs is not None and len(seqs) > 0 else None


def from_dataset(root: Path, force: bool = False) -> TrainingData:
    """A published dataset folder; one that failed its gates only with `force`."""
    from lvm_core.data.build.load import load_dataset

    ds = load_dataset(Path(root), require_ready=not force)
    return TrainingData(
        vectors=ds.vectors,
        sequences=ds.sequences,
        fingerprint=ds.fingerprint,
        dataset_id=ds.manifest.dataset_id,
        source=Path(root),
        manifest_path=ds.paths.manifest,
        manifest=ds.manifest,
    )


def from_reference_npz(train_npz: Path, val_npz: Path | None = None, val_fraction: float = 0.1, seed: int = 0) -> TrainingData:
    """Reference-format sequence files → one vector array + row windows (val: `val_npz` or held-out articles).

    These files carry no encoder fingerprint; the model is tagged with the file digest instead, so it can
    never be mistaken for one trained on platform-built vectors.
    """
    from lvm_core.data.npz_compat import load_reference_sequences

    ctx, tgt, meta = load_reference_sequences(Path(train_npz))
    parts = [_as_rows(ctx, tgt, meta, offset=0)]
    if val_npz is not None:
        vctx, vtgt, vmeta = load_reference_sequences(Path(val_npz))
        if vctx.shape[1:] != ctx.shape[1:]:
            raise ValueError(f"{Path(val_npz).name}: windows {vctx.shape[1:]} do not match {Path(train_npz).name} {ctx.shape[1:]}")
        parts.append(_as_rows(vctx, vtgt, vmeta, offset=parts[0][0].shape[0]))
        vectors = np.concatenate([parts[0][0], parts[1][0]])
        seqs = {"train": parts[0][1], "val": parts[1][1]}
    else:
        vectors, all_seqs = parts[0]
        seqs = _hold_out_articles(all_seqs, val_fraction, seed)
    digest = file_digest(Path(train_npz))
    fp = EncoderFingerprint(model_name=f"reference-npz:{Path(train_npz).name}", weights_digest=digest, dim=int(vectors.shape[1]))
    return TrainingData(vectors=vectors, sequences=seqs, fingerprint=fp, dataset_id=Path(train_npz).stem, source=Path(train_npz))


def _as_rows(ctx: np.ndarray, tgt: np.ndarray, meta: dict[str, Any], offset: int) -> tuple[np.ndarray, SequenceSet]:
    m, c, d = ctx.shape
    vectors = np.concatenate([ctx.reshape(m * c, d), tgt]).astype(np.float32, copy=False)
    context_rows = offset + np.arange(m * c, dtype=np.int64).reshape(m, c)
    target_rows = offset + m * c + np.arange(m, dtype=np.int64)
    article = np.asarray(meta.get("article_index", np.zeros(m)), dtype=np.int64)
    chunk = np.asarray(meta.get("target_chunk_index", np.arange(m)), dtype=np.int32)
    return vectors, SequenceSet(context_rows, target_rows, article, chunk)


def _hold_out_articles(seqs: SequenceSet, val_fraction: float, seed: int) -> dict[str, SequenceSet]:
    articles = np.unique(seqs.article_ids)
    if len(articles) < 2:
        raise ValueError("a single-article NPZ cannot be split into train and val; pass --val")
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(articles) * val_fraction)))
    val_articles = rng.choice(articles, size=n_val, replace=False)
    is_val = np.isin(seqs.article_ids, val_articles)
    return {"train": seqs.subset(~is_val), "val": seqs.subset(is_val)}
