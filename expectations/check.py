"""Re-run every pre-training data gate on an existing dataset folder, without modifying it (`lvm check`).

The oracle is recomputed from the folder's stored vectors and chunk texts (`lvm_core.data.build.measure_oracle`,
with the sample size, seed and K the manifest recorded), the recomputed value replaces the manifest's in
the copy of the manifest the gates read, and the Great Expectations checkpoint of `expectations.runner`
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
        _eval_target_rows(paths.sequences),
        encoder_name=encoder or build.get("encoder"),
        k=recorded.get("k"),
        sample_size=recorded.get("sample_size") if recorded.get("sample_size") else None,
        seed=recorded.get("seed"),
    )
    if oracle["sample_size"] < int(recorded.get("sample_size") or 0):
        oracle["note"] = f"the manifest recorded a sample of {recorded['sample_size']}"
    checked = None
    if isinstance(manifest, dict):
        checked = copy.deepcopy(manifest)
        checked["oracle_recall_at_5"] = oracle["recall"] if oracle["k"] == 5 else None
        checked["oracle"] = oracle

    docs = Path(docs_dir) if docs_dir is not None else Path(tempfile.mkdtemp(prefix="lvm-check-"))
    report = run_pre_training_gates(root, manifest=checked, thresholds=thresholds, docs_dir=docs, data_docs=data_docs)
    return CheckResult(report, oracle, m.get("oracle_recall_at_5"), thresholds, docs)


def _eval_target_rows(path: Path) -> np.ndarray:
    """Target rows of every evaluation split present in sequences.npz (val/test/ood)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            parts = [
                np.asarray(npz[f"{s}_target_rows"], dtype=np.int64).ravel()
                for s in SPLIT_NAMES
                if s != "train" and f"{s}_target_rows" in npz.files
            ]
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{path}: cannot read the evaluation targets: {exc}") from exc
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
