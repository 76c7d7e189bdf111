"""`build_gate_frames`: a built dataset folder read once and summarised into the frame of each suite.

Files are read directly (pyarrow, numpy with ``allow_pickle=False``) so the gates do not depend on the
code that built the folder. Data files that are missing or unreadable (chunks, embeddings, articles,
splits, sequences) raise `DataContractError` naming the file: without them no gate can be evaluated.
Manifest problems never raise; they fail the ``manifest_consistent`` gate (`expectations.frames.manifest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations.frames.article_chunks import article_chunks_frame, read_article_ids
from expectations.frames.article_splits import article_splits_frame, read_splits
from expectations.frames.chunks import read_chunks
from expectations.frames.dataset_metrics import dataset_metrics_frame
from expectations.frames.eval_splits import eval_splits_frame
from expectations.frames.manifest import check_manifest, parity_from_manifest, resolve_manifest
from expectations.frames.vector_meta import vector_meta_frame
from expectations.frames.vectors import load_embeddings, vectors_frame
from expectations.frames.windows import check_windows, read_sequences
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.contracts.manifest import DatasetManifest

# one frame per suite, same name (expectations/suites/<name>.json)
FRAME_NAMES: tuple[str, ...] = (
    "chunks",
    "vectors",
    "vector_meta",
    "article_chunks",
    "article_splits",
    "eval_splits",
    "dataset_metrics",
)


def build_gate_frames(
    dataset_dir: Path, manifest: DatasetManifest | dict[str, Any] | None = None
) -> dict[str, pd.DataFrame]:
    """Frames the pre-training suites validate, keyed by FRAME_NAMES.

    `manifest` is the manifest as the build holds it; None reads ``manifest.json`` from the folder.
    When a manifest is given and ``manifest.json`` also exists, the file must still parse.
    """
    paths = DatasetPaths(Path(dataset_dir))
    problems: list[str] = []
    resolved = resolve_manifest(paths, manifest, problems)

    chunks = read_chunks(paths.chunks)
    article_ids = read_article_ids(paths.articles)
    splits_table = read_splits(paths.splits)
    sequences = read_sequences(paths.sequences)
    embeddings = load_embeddings(paths.embeddings)

    chunk_article = chunks["article_id"].to_numpy(dtype=np.int64)
    chunk_index = chunks["chunk_index"].to_numpy(dtype=np.int64)
    windows = check_windows(sequences, chunk_article, chunk_index)
    parity = parity_from_manifest(resolved, problems)
    check_manifest(resolved, paths, problems, len(article_ids), len(chunks), windows, parity)
    eval_splits = eval_splits_frame(resolved, windows, problems)  # adds its manifest problems first
    return {
        "chunks": chunks,
        "vectors": vectors_frame(embeddings),
        "vector_meta": vector_meta_frame(embeddings, paths.encoder, n_chunks=len(chunks)),
        "article_chunks": article_chunks_frame(chunks, article_ids),
        "article_splits": article_splits_frame(splits_table, sequences),
        "eval_splits": eval_splits,
        "dataset_metrics": dataset_metrics_frame(resolved, windows, parity, problems),
    }
