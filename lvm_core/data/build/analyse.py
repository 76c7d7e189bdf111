"""Analyse step: the staged dataset folder measured and cut into training windows, then its manifest.

A short driver over named steps (stage the files, coherence, splits, windows, leakage scan and purge,
crossing count, data direction, oracle, manifest), in the order their files are written, so a crash
leaves the same partial staging folder it always did. The analysis modules (coherence, splits, leakage:
scipy and polars, seconds to import) are imported by the steps that use them, so importing the build
package (`lvm datasets`, the Prefect task modules) stays as quick as before.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
from pydantic import ValidationError

from lvm_core.contracts.build_options import LINEAGE_OPTIONS, BuildConfig
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import EVAL_SPLITS, SPLIT_NAMES, DatasetPaths
from lvm_core.contracts.manifest import (
    CoherenceSummary,
    Counts,
    DatasetManifest,
    EncoderRef,
    ShardLayout,
    SourceRef,
    manifest_error,
    write_manifest,
)
from lvm_core.data import windows
from lvm_core.data.build.ingest import read_ingest_stats
from lvm_core.data.build.oracle import measure_oracle
from lvm_core.data.build.records import EmbedResult
from lvm_core.data.build.source import SourceInfo
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.data.ingest.duplicates import DuplicateReport
from lvm_core.io.storage import (
    link_or_copy,
    load_npy,
    read_json,
    write_json,
)
from lvm_core.runtime.faults import crash_point
from lvm_core.runtime.memory import return_freed_memory

if TYPE_CHECKING:
    from lvm_core.data.build.splitting import SplitOutcome


@dataclass(frozen=True)
class _Chunks:
    """The staged chunk rows the analysis reads, aligned with the vectors."""

    article_ids: np.ndarray  # (n,) int64
    chunk_index: np.ndarray  # (n,) int32
    text_hash: np.ndarray  # (n,) uint64 codes of the text hashes (`hash_codes`), not the strings
    vectors: np.ndarray  # memory-mapped; read in blocks whose pages are released
    encoder: dict[str, Any]


def analyse_step(
    stage_dir: Path,
    config: BuildConfig,
    source: SourceInfo,
    articles_path: Path,
    chunks_path: Path,
    embed: EmbedResult,
    ingest_stats: DuplicateReport | None = None,
    shards: ShardLayout | None = None,
) -> DatasetManifest:
    """Assemble the staging folder and compute coherence, splits, leakage, sequences and the oracle.

    Returns the manifest (also written to the staging folder), without gate results. `ingest_stats`
    defaults to the file beside `articles_path`; `shards` (the layout of a sharded build) is recorded.
    """
    from lvm_core.data import splits

    return_freed_memory()  # per-row arrays come and go step after step: what is freed goes back to the OS
    paths = _stage_inputs(Path(stage_dir), articles_path, chunks_path, embed)
    chunks = _read_chunks(paths)
    ctx = config.context_len
    coh, coh_binned, edges = _coherence(chunks, config, paths, source.dataset_id)
    split = _split(paths, coh_binned, config, source)
    n_articles, split_df, split_cfg, split_manifest = split.n_articles, split.splits, split.config, split.report
    row_split = _row_split(chunks.article_ids, split_df)
    seqs = _windows(chunks, split_df, ctx)
    leak = _purge_leakage(seqs, chunks, row_split, config.near_dup_threshold)
    del row_split
    # parity is gated on the articles that still have windows after the purge; the pre-purge one is kept beside it
    split_manifest["parity_before_purge"] = split_manifest["parity"]
    split_manifest["parity"] = _parity(splits.split_report(_articles_after_purge(split_df, seqs), split_cfg))
    write_json(paths.splits_manifest, split_manifest)

    crossing = int(sum(windows.count_crossing_windows(s, chunks.article_ids, chunks.chunk_index)
                       for s in seqs.values()))
    windows.save_sequences(paths.sequences, seqs)
    crash_point("analyse")
    direction = windows.data_direction(chunks.vectors, seqs["train"]) if len(seqs["train"]) else []

    # oracle recall: re-encode a seeded sample of eval target texts, search the stored bank with them
    eval_targets = np.concatenate([seqs[n].target_rows for n in _eval_split_names()])
    oracle = measure_oracle(paths.root, eval_targets, encoder_name=config.encoder, batch_size=config.batch_size,
                            text_hash=chunks.text_hash, train_rows=seqs["train"].target_rows)

    ingest = ingest_stats.to_dict() if ingest_stats is not None else read_ingest_stats(articles_path)
    try:
        manifest = _manifest(
            source, config, chunks, n_articles, seqs, ingest, _coherence_summary(coh, edges),
            split_manifest, leak, crossing, oracle, direction, embed.stats, shards,
        )
        manifest = manifest.with_fields(lineage={**(manifest.lineage or {}), **split.lineage})
    except ValidationError as exc:
        raise manifest_error(paths.manifest, exc) from None
    write_manifest(paths.manifest, manifest)
    return manifest


def _stage_inputs(stage_dir: Path, articles_path: Path, chunks_path: Path, embed: EmbedResult) -> DatasetPaths:
    """Link (or copy) the assembled files into the staging folder."""
    paths = DatasetPaths(stage_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    for src, dst in [
        (articles_path, paths.articles),
        (chunks_path, paths.chunks),
        (embed.embeddings, paths.embeddings),
        (embed.encoder_file, paths.encoder),
    ]:
        link_or_copy(Path(src), dst)
    return paths


def _read_chunks(paths: DatasetPaths) -> _Chunks:
    """The staged chunk columns, vectors and encoder record; refuses vectors not aligned with the chunks.

    Held per row: article id, chunk index and a 64-bit code of the text hash (20 bytes), filled one
    record batch at a time (whole columns held Arrow's copy beside numpy's, and the Arrow pool kept their
    pages: ~170 MiB at 10^6 rows); the vectors stay a memory map.
    """
    import pyarrow as pa

    article_ids, chunk_index, text_hash = _chunk_columns(paths.chunks)
    pa.default_memory_pool().release_unused()
    vectors = load_npy(paths.embeddings, mmap=True)
    encoder = read_json(paths.encoder)
    if vectors.shape[0] != len(article_ids):
        raise DataContractError(
            f"{paths.embeddings}: {vectors.shape[0]} vectors for {len(article_ids)} chunks"
        )
    return _Chunks(article_ids, chunk_index, text_hash, vectors, encoder)


def _chunk_columns(path: Path, batch_rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(article_id int64, chunk_index int32, text-hash code uint64) of every row of chunks.parquet."""
    from lvm_core.data.hash_codes import hash_codes

    parquet = pq.ParquetFile(path)
    n = int(parquet.metadata.num_rows)
    article_ids = np.empty(n, dtype=np.int64)
    chunk_index = np.empty(n, dtype=np.int32)
    text_hash = np.empty(n, dtype=np.uint64)
    pos = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=["article_id", "chunk_index", "text_hash"]):
        end = pos + batch.num_rows
        article_ids[pos:end] = batch.column(0).to_numpy()
        chunk_index[pos:end] = batch.column(1).to_numpy()
        text_hash[pos:end] = hash_codes(batch.column(2), f"{path}: text_hash")
        pos = end
    if pos != n:
        raise DataContractError(f"{path}: read {pos} rows, its metadata says {n}")
    return article_ids, chunk_index, text_hash


def _coherence(chunks: _Chunks, config: BuildConfig, paths: DatasetPaths, dataset_id: str) -> tuple[Any, Any, Any]:
    """Article coherence, its bins (articles long enough for a window) and the histogram plot."""
    from lvm_core.data import coherence

    coh = coherence.article_coherence(chunks.vectors, chunks.article_ids, chunks.chunk_index)
    coh_binned, edges = coherence.assign_bins(coh, n_bins=config.n_bins, min_chunks=config.context_len + 1)
    paths.plots.mkdir(exist_ok=True)
    coherence.plot_coherence_histogram(
        coh_binned, edges, paths.plots / "coherence_histogram.png", title=f"Article coherence — {dataset_id}"
    )
    return coh, coh_binned, edges


def _split(paths: DatasetPaths, coh_binned: Any, config: BuildConfig, source: SourceInfo) -> SplitOutcome:
    """Split the binned articles along the family's split registry (`build.splitting`): splits.parquet,
    split_registry.parquet, the split report with parity, and the lineage of the registry."""
    from lvm_core.data.build.splitting import split_step

    outcome = split_step(paths, coh_binned, config, source)
    outcome.report["parity"] = _parity(outcome.report)
    return outcome


def _row_split(article_ids: np.ndarray, split_df: Any) -> np.ndarray:
    """(n,) int8 split code of each chunk row (`leakage.SPLIT_CODES`; -1 for an article without a split)."""
    from lvm_core.data.leakage import UNSPLIT, split_codes

    ids = split_df["article_id"].to_numpy().astype(np.int64, copy=False)
    codes = split_codes(split_df["split"].to_numpy())
    order = np.argsort(ids, kind="stable")
    ids, codes = ids[order], codes[order]
    if ids.size == 0:
        return np.full(article_ids.shape[0], UNSPLIT, dtype=np.int8)
    pos = np.minimum(np.searchsorted(ids, article_ids), ids.size - 1)
    return np.where(ids[pos] == article_ids, codes[pos], UNSPLIT).astype(np.int8, copy=False)


def _windows(chunks: _Chunks, split_df: Any, ctx: int) -> dict[str, Any]:
    """The windows of each split, strictly inside articles."""
    ids = split_df["article_id"].to_numpy().astype(np.int64, copy=False)
    split = split_df["split"].to_numpy()
    seqs: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        members = ids[split == name]
        seqs[name] = windows.build_windows(chunks.article_ids, chunks.chunk_index, context_len=ctx, articles=members)
    return seqs


def _purge_leakage(
    seqs: dict[str, Any], chunks: _Chunks, row_split: np.ndarray, near_dup_threshold: float
) -> dict[str, Any]:
    """Leakage raw over val/ood articles, then purge leaking val/ood windows (in `seqs`) and measure again.

    `row_split` is the int8 split code of each row (`_row_split`). Returns the manifest's leakage fields,
    in manifest order.
    """
    from lvm_core.data import leakage

    scan = leakage.scan_leakage(
        chunks.article_ids, chunks.text_hash, chunks.vectors, row_split, near_dup_threshold=near_dup_threshold
    )
    leakage_raw, leaking = scan.report(), scan.leaking_rows
    purged: dict[str, int] = {}
    windows_before = {name: len(seqs[name]) for name in _eval_split_names()}
    for name in EVAL_SPLITS:
        seqs[name], purged[name] = leakage.purge_leaking_windows(seqs[name], leaking)
    eval_codes = [leakage.SPLIT_CODES[name] for name in EVAL_SPLITS]
    used_split = np.where(np.isin(row_split, eval_codes), np.int8(leakage.UNSPLIT), row_split).astype(np.int8)
    for name in EVAL_SPLITS:
        rows = np.unique(np.concatenate([seqs[name].context_rows.ravel(), seqs[name].target_rows]))
        used_split[rows] = leakage.SPLIT_CODES[name]
    # Train rows are unchanged, so each row's leak flags stand; only the val/ood rows still in use count.
    leakage_post = replace(scan, row_split=used_split).report()
    purged_fraction = {n: purged[n] / windows_before[n] if windows_before.get(n) else 0.0 for n in purged}
    return {
        "leakage": leakage_post,
        "leakage_raw": leakage_raw,
        "purged_windows": purged,
        "windows_before_purge": windows_before,
        "purged_fraction": purged_fraction,
    }


def _coherence_summary(coh: Any, edges: Any) -> CoherenceSummary:
    """The manifest's `coherence` block: mean and spread over the articles that have a coherence, and the bins."""
    coh_values = coh["coherence"].drop_nulls().to_numpy()
    return CoherenceSummary(
        mean=float(coh_values.mean()) if coh_values.size else None,
        std=float(coh_values.std()) if coh_values.size else None,
        n_articles=int(coh_values.size),
        bin_edges=[float(e) for e in edges],
        n_bins=max(len(edges) - 1, 0),
    )


def _manifest(
    source: SourceInfo, config: BuildConfig, chunks: _Chunks, n_articles: int, seqs: dict[str, Any],
    ingest_stats: dict[str, Any], coherence_summary: CoherenceSummary, split_manifest: dict[str, Any],
    leak: dict[str, Any], crossing: int, oracle: dict[str, Any], direction: list[float],
    embedding_stats: dict[str, Any], shards: ShardLayout | None,
) -> DatasetManifest:
    """The manifest of an analysed dataset (without gate results), its fields in the order they are written."""
    encoder = chunks.encoder
    counts = Counts(
        articles=n_articles,
        chunks=len(chunks.article_ids),
        sequences={k: len(v) for k, v in seqs.items()},
        duplicate_ids=ingest_stats.get("duplicate_ids"),
        duplicate_rows_dropped=ingest_stats.get("duplicate_rows_dropped"),
        duplicate_ids_conflicting=ingest_stats.get("duplicate_ids_conflicting"),
    )
    return DatasetManifest(
        dataset_id=source.dataset_id,
        snapshot_id=source.snapshot_id,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        source=SourceRef(**source.to_dict()),
        encoder=EncoderRef(
            name=encoder["model_name"],
            dim=int(encoder["dim"]),
            fingerprint=EncoderFingerprint.from_dict(encoder).id,
            weights_digest=encoder["weights_digest"],
            normalized=encoder.get("normalized", True),
        ),
        build_config=config.model_dump(mode="json", exclude=set(LINEAGE_OPTIONS)),
        counts=counts,
        ingest=ingest_stats,
        sequences={k: len(v) for k, v in seqs.items()},
        context_len=config.context_len,
        coherence=coherence_summary,
        splits=split_manifest,
        **leak,
        crossing_windows=crossing,
        oracle_recall_at_5=oracle["recall"],
        oracle=oracle,
        data_direction=[float(x) for x in direction],
        embedding=embedding_stats,
        **({} if shards is None else {"shards": shards}),
    )


def _parity(split_manifest: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """KS statistic and mean difference of article coherence, each evaluation split against train (gated)."""
    out = {}
    for name in EVAL_SPLITS:
        s = split_manifest.get("splits", {}).get(name, {})
        out[name] = {"ks": s.get("ks_statistic_vs_train"), "mean_diff": s.get("mean_diff_vs_train"),
                     "ks_pvalue": s.get("ks_pvalue_vs_train")}
    return out


def _eval_split_names() -> tuple[str, ...]:
    """The evaluation splits (every split but train) in contract order."""
    return tuple(s for s in SPLIT_NAMES if s != "train")


def _articles_after_purge(split_df: Any, seqs: dict[str, Any]) -> Any:
    """The split table without the evaluation articles that have no window left after the purge."""
    import polars as pl

    kept = np.unique(np.concatenate([s.article_ids for name, s in seqs.items() if name != "train"] or [np.zeros(0)]))
    kept_ids = pl.Series("kept", kept.astype(np.int64, copy=False))
    return split_df.filter((pl.col("split") == "train") | pl.col("article_id").is_in(kept_ids.implode()))
