"""Re-run every pre-training data gate on an existing dataset folder, without modifying it (`lvm check`).

The oracle is recomputed from the folder's stored vectors and chunk texts (`lvm_core.data.build.measure_oracle`,
with the sample size, seed and K the manifest recorded), and so are the raw leakage (`scan_leakage` over the
chunk table, vectors and splits.parquet, with the recorded near-duplicate threshold) and the split parity
(`coherence_parity` over the articles that still have windows); the recomputed values replace the
manifest's in the copy of the manifest the gates read (a parity that differs from splits.json then fails
manifest_consistent), and the Great Expectations checkpoint of `expectations.runner`
runs over the folder's files. Data Docs, the validated frames and ``validation_result.json`` go to
`docs_dir` (default: a new temporary folder), never into the dataset folder. Thresholds are the ones the
dataset was built with (``build_config.thresholds`` in the manifest), then the caller's overrides.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from expectations.runner import run_pre_training_gates
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.gates import GateReport, GateThresholds
from lvm_core.contracts.layout import SPLIT_NAMES, DatasetPaths


@dataclass
class CheckResult:
    report: GateReport
    oracle: dict[str, Any]  # the recomputed oracle (recall, k, sample_size, seed, hits, ...)
    recorded_oracle: Any  # oracle_recall_at_5 as the manifest recorded it
    thresholds: GateThresholds
    docs_dir: Path
    recomputed: dict[str, Any] | None = None  # leakage_raw and parity recomputed from the files
    recorded: dict[str, Any] | None = None  # the same two as the manifest recorded them

    @property
    def passed(self) -> bool:
        return self.report.passed


def check_dataset(
    dataset_dir: Path,
    overrides: dict[str, Any] | None = None,
    docs_dir: Path | None = None,
    data_docs: bool = True,
    encoder: str | None = None,
) -> CheckResult:
    """Recompute the oracle and re-run the data gates on `dataset_dir`; only `docs_dir` is written."""
    from lvm_core.data.build.oracle import measure_oracle

    root = Path(dataset_dir).resolve()
    paths = DatasetPaths(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    if docs_dir is not None and Path(docs_dir).resolve().is_relative_to(root):
        raise ValueError(f"--docs-dir {docs_dir} is inside the dataset folder; `lvm check` never writes there")
    try:
        manifest = json.loads(paths.manifest.read_text())
    except (OSError, ValueError):
        manifest = None  # the gates report it (manifest_consistent)
    m = manifest if isinstance(manifest, dict) else {}
    build_config = m.get("build_config")
    build: dict[str, Any] = build_config if isinstance(build_config, dict) else {}
    stored = {k: v for k, v in dict(build.get("thresholds") or {}).items() if k in GateThresholds.__dataclass_fields__}
    thresholds = GateThresholds.from_dict({**stored, **dict(overrides or {})})

    recorded_oracle = m.get("oracle")
    recorded: dict[str, Any] = recorded_oracle if isinstance(recorded_oracle, dict) else {}
    oracle = measure_oracle(
        root,
        _target_rows(paths.sequences, eval_splits=True),
        encoder_name=encoder or build.get("encoder"),
        k=recorded.get("k"),
        sample_size=recorded.get("sample_size") if recorded.get("sample_size") else None,
        seed=recorded.get("seed"),
        train_rows=_target_rows(paths.sequences, eval_splits=False),
        train_sample_size=recorded.get("train_sample_size"),
    )
    if oracle["sample_size"] < int(recorded.get("sample_size") or 0):
        oracle["note"] = f"the manifest recorded a sample of {recorded['sample_size']}"
    checked = None
    recomputed: dict[str, Any] | None = None
    if isinstance(manifest, dict):
        checked = copy.deepcopy(manifest)
        checked["oracle_recall_at_5"] = oracle["recall"] if oracle["k"] == 5 else None
        checked["oracle"] = oracle
        recomputed = recompute_leakage_and_parity(paths, _near_dup_threshold(m, build))
        checked["leakage_raw"] = recomputed["leakage_raw"]
        if isinstance(checked.get("splits"), dict):
            checked["splits"]["parity"] = recomputed["parity"]

    docs = Path(docs_dir) if docs_dir is not None else Path(tempfile.mkdtemp(prefix="lvm-check-"))
    report = run_pre_training_gates(root, manifest=checked, thresholds=thresholds, docs_dir=docs, data_docs=data_docs)
    recorded = {"leakage_raw": m.get("leakage_raw"), "parity": (m.get("splits") or {}).get("parity")}
    return CheckResult(report, oracle, m.get("oracle_recall_at_5"), thresholds, docs, recomputed, recorded)


def recompute_leakage_and_parity(paths: DatasetPaths, near_dup_threshold: float) -> dict[str, Any]:
    """Raw leakage (before the purge) and split parity (articles with windows) from the folder's files only."""
    import polars as pl
    import pyarrow.parquet as pq

    from lvm_core.data.hash_codes import read_hash_codes
    from lvm_core.data.leakage import UNSPLIT, scan_leakage, split_codes
    from lvm_core.data.splits import coherence_parity

    try:
        article_ids = pq.read_table(paths.chunks, columns=["article_id"]).column(0).to_numpy().astype(np.int64)
        codes = read_hash_codes(paths.chunks)
        vectors = np.load(paths.embeddings, mmap_mode="r", allow_pickle=False)
        splits = pl.read_parquet(paths.splits)
        with np.load(paths.sequences, allow_pickle=False) as npz:
            windowed = [np.asarray(npz[f"{s}_article_ids"]).ravel() for s in SPLIT_NAMES
                        if s != "train" and f"{s}_article_ids" in npz.files]
    except (OSError, ValueError, KeyError) as exc:
        raise DataContractError(f"{paths.root}: cannot recompute leakage and parity: {exc}") from exc
    ids = splits["article_id"].to_numpy().astype(np.int64)
    split_of = split_codes(splits["split"].to_numpy())
    order = np.argsort(ids, kind="stable")
    ids, split_of = ids[order], split_of[order]
    pos = np.minimum(np.searchsorted(ids, article_ids), max(ids.size - 1, 0))
    row_split = (np.where(ids[pos] == article_ids, split_of[pos], UNSPLIT) if ids.size
                 else np.full(article_ids.shape, UNSPLIT)).astype(np.int8)
    leakage_raw = scan_leakage(article_ids, codes, vectors, row_split, near_dup_threshold=near_dup_threshold).report()
    kept = np.unique(np.concatenate(windowed)) if windowed else np.zeros(0, dtype=np.int64)
    after_purge = splits.filter((pl.col("split") == "train") | pl.col("article_id").is_in(kept.tolist()))
    return {"leakage_raw": leakage_raw, "parity": coherence_parity(after_purge)}


def _near_dup_threshold(manifest: dict[str, Any], build: dict[str, Any]) -> float:
    """The near-duplicate cosine the dataset was built with (leakage record, then build config; 0.995)."""
    recorded = ((manifest.get("leakage_raw") or {}).get("near_duplicates") or {}).get("threshold")
    value = recorded if recorded is not None else build.get("near_dup_threshold", 0.995)
    return float(value)


def _target_rows(path: Path, eval_splits: bool) -> np.ndarray:
    """Target rows of every evaluation split present in sequences.npz (val/test/ood), or of train."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            parts = [
                np.asarray(npz[f"{s}_target_rows"], dtype=np.int64).ravel()
                for s in SPLIT_NAMES
                if (s != "train") == eval_splits and f"{s}_target_rows" in npz.files
            ]
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}: cannot read the evaluation targets: {exc}") from exc
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
