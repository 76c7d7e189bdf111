"""`build_gate_frames`: a built dataset folder read once and summarised into the frame of each suite.

Suites that look at rows come in pairs: ``<name>`` runs the row-level expectations on a seeded sample
(`expectations.frames.sample.SampleSpec`) and ``<name>_exact`` checks counts computed over every row in
one streaming pass, so a single bad row anywhere fails its gate while no frame grows with the dataset.

Files are read directly (pyarrow, numpy with ``allow_pickle=False``) so the gates do not depend on the
code that built the folder. Data files that are missing or unreadable (chunks, embeddings, articles,
splits, sequences) raise `DataContractError` naming the file: without them no gate can be evaluated.
Manifest problems never raise; they fail the ``manifest_consistent`` gate (`expectations.frames.manifest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from expectations.frames.article_chunks import article_chunks_frames, read_article_ids
from expectations.frames.article_splits import article_splits_frames, read_splits
from expectations.frames.chunks import scan_chunks
from expectations.frames.dataset_metrics import dataset_metrics_frame
from expectations.frames.eval_splits import eval_splits_frame
from expectations.frames.manifest import check_manifest, parity_from_manifest, resolve_manifest
from expectations.frames.sample import SampleSpec
from expectations.frames.vector_meta import vector_meta_frame
from expectations.frames.vectors import load_embeddings, vectors_frames
from expectations.frames.windows import check_windows, read_sequences
from lvm_core.contracts.layout import DatasetPaths
from lvm_core.contracts.manifest import DatasetManifest

# one frame per suite, same name (expectations/suites/<name>.json)
FRAME_NAMES: tuple[str, ...] = (
    "chunks",
    "chunks_exact",
    "vectors",
    "vectors_exact",
    "vector_meta",
    "article_chunks",
    "article_chunks_exact",
    "article_splits",
    "article_splits_exact",
    "eval_splits",
    "dataset_metrics",
)


def build_gate_frames(
    dataset_dir: Path, manifest: DatasetManifest | dict[str, Any] | None = None, sample: SampleSpec = SampleSpec()
) -> dict[str, pd.DataFrame]:
    """Frames the pre-training suites validate, keyed by FRAME_NAMES.

    `manifest` is the manifest as the build holds it; None reads ``manifest.json`` from the folder.
    When a manifest is given and ``manifest.json`` also exists, the file must still parse. `sample`
    bounds the sampled frames (chunks, vectors, article_chunks, article_splits).
    """
    paths = DatasetPaths(Path(dataset_dir))
    problems: list[str] = []
    resolved = resolve_manifest(paths, manifest, problems)

    chunks = scan_chunks(paths.chunks, sample)
    article_ids = read_article_ids(paths.articles)
    splits_table = read_splits(paths.splits)
    sequences = read_sequences(paths.sequences)
    embeddings = load_embeddings(paths.embeddings)

    windows = check_windows(sequences, chunks.article_id, chunks.chunk_index)
    parity = parity_from_manifest(resolved, problems)
    check_manifest(resolved, paths, problems, len(article_ids), chunks.n_rows, windows, parity)
    eval_splits = eval_splits_frame(resolved, windows, problems)  # adds its manifest problems first
    vectors, vectors_exact = vectors_frames(embeddings, sample)
    article_chunks, article_chunks_exact = article_chunks_frames(
        chunks.article_id, chunks.chunk_index, article_ids, sample
    )
    article_splits, article_splits_exact = article_splits_frames(splits_table, sequences, sample)
    return {
        "chunks": chunks.sample,
        "chunks_exact": chunks.exact,
        "vectors": vectors,
        "vectors_exact": vectors_exact,
        "vector_meta": vector_meta_frame(embeddings, paths.encoder, n_chunks=chunks.n_rows),
        "article_chunks": article_chunks,
        "article_chunks_exact": article_chunks_exact,
        "article_splits": article_splits,
        "article_splits_exact": article_splits_exact,
        "eval_splits": eval_splits,
        "dataset_metrics": dataset_metrics_frame(resolved, windows, parity, problems),
    }
