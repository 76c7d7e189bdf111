"""What each pre-training gate reports beside pass/fail: the value measured and the threshold, read from the frames.

Pass/fail always comes from GX; these numbers fill `GateResult.value` / `threshold` (hence the manifest's
gate outcomes). Gates over rows report the exact counts of the ``*_exact`` frames, never sample counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from lvm_core.contracts.gates import GateThresholds
from lvm_core.io.plain import to_plain

_Measure = Callable[[dict[str, pd.DataFrame], GateThresholds], tuple[Any, Any]]


def no_measure(frames: dict[str, pd.DataFrame], t: GateThresholds) -> tuple[Any, Any]:
    return None, None


def _metric(frames: dict[str, pd.DataFrame], column: str) -> Any:
    return frames["dataset_metrics"][column].iloc[0]


def _whole(value: Any) -> Any:
    """An integral float read back from a frame as int (NaN stays as is)."""
    return int(value) if isinstance(value, (int, float, np.number)) and float(value).is_integer() else value


def _per_split(frames: dict[str, pd.DataFrame], column: str) -> dict[str, Any]:
    """{split: value} of an eval_splits column (raw leakage rates, purged fraction)."""
    e = frames["eval_splits"]
    return {str(s): to_plain(float(v), nan_to_none=True) for s, v in zip(e["split"], e[column])}


def _exact(frames: dict[str, pd.DataFrame], frame: str, *columns: str) -> int:
    """Sum of counts of a one-row ``*_exact`` frame."""
    return sum(int(frames[frame][c].iloc[0]) for c in columns)


def _chunk_ids(frames: dict[str, pd.DataFrame], t: GateThresholds) -> tuple[Any, Any]:
    return _exact(frames, "chunks_exact", "n_null_chunk_id", "n_empty_chunk_id", "n_duplicate_chunk_id"), 0


def _chunk_text(frames: dict[str, pd.DataFrame], t: GateThresholds) -> tuple[Any, Any]:
    return _exact(frames, "chunks_exact", "n_empty_rows"), 0


def _unit_norm(frames: dict[str, pd.DataFrame], t: GateThresholds) -> tuple[Any, Any]:
    exact = frames["vectors_exact"].iloc[0]
    gaps = [abs(float(exact[c]) - 1.0) for c in ("min_norm", "max_norm") if not pd.isna(exact[c])]
    return (max(gaps) if gaps else None), t.unit_norm_tolerance


def _vector_dim(frames: dict[str, pd.DataFrame], t: GateThresholds) -> tuple[Any, Any]:
    meta = frames["vector_meta"].iloc[0]
    expected = meta["expected_dim"]
    return int(meta["dim"]), None if pd.isna(expected) else int(expected)


def _parity(split: str) -> _Measure:
    def measure(frames: dict[str, pd.DataFrame], t: GateThresholds) -> tuple[Any, Any]:
        value = {"ks": _metric(frames, f"ks_{split}"), "abs_mean_diff": _metric(frames, f"abs_mean_diff_{split}")}
        if split == "ood" and float(_metric(frames, "ood_is_shift")) > 0:
            return value, "not gated: ood is a real shift"  # recorded; a held-out topic may differ
        return value, {"ks": t.max_split_ks, "abs_mean_diff": t.max_split_mean_diff}

    return measure


# gate name -> (observed value, threshold) for the report; pass/fail always comes from GX.
GATE_MEASURES: dict[str, _Measure] = {
    "chunk_ids_unique": _chunk_ids,
    "chunk_text_nonempty": _chunk_text,
    "vectors_finite": lambda f, t: (_exact(f, "vectors_exact", "n_non_finite"), 0),
    "unit_norm": _unit_norm,
    "vector_dim": _vector_dim,
    "vector_dtype": lambda f, t: (
        str(f["vector_meta"]["dtype"].iloc[0]),
        str(f["vector_meta"]["expected_dtype"].iloc[0]),
    ),
    "vectors_aligned": lambda f, t: (
        int(f["vector_meta"]["n_rows"].iloc[0]),
        int(f["vector_meta"]["n_chunks"].iloc[0]),
    ),
    "chunk_index_contiguous": lambda f, t: (_exact(f, "article_chunks_exact", "n_not_contiguous"), 0),
    "chunk_rows_ordered": lambda f, t: (_exact(f, "article_chunks_exact", "n_out_of_order"), 0),
    "chunk_articles_known": lambda f, t: (_exact(f, "article_chunks_exact", "n_unknown_articles"), 0),
    "splits_disjoint": lambda f, t: (_exact(f, "article_splits_exact", "n_split_conflicts"), 0),
    "sequence_articles_assigned": lambda f, t: (_exact(f, "article_splits_exact", "n_not_in_split_table"), 0),
    "leakage_zero": lambda f, t: (
        {
            "article_overlap": _whole(_metric(f, "article_overlap")),
            "text_hash_overlap_rate": _per_split(f, "text_hash_overlap_rate"),
            "val_test_overlap_rate": to_plain(float(_metric(f, "val_test_overlap_rate")), nan_to_none=True),
        },
        {"article_overlap": 0, "text_hash_overlap_rate": t.max_leakage_rate, "val_test_overlap_rate": t.max_leakage_rate},
    ),
    "near_duplicates_zero": lambda f, t: (_per_split(f, "near_duplicate_rate"), t.max_near_duplicate_rate),
    "purged_fraction": lambda f, t: (_per_split(f, "purged_fraction"), t.max_purged_fraction),
    "crossing_windows_zero": lambda f, t: (int(_metric(f, "crossing_windows")), t.max_crossing_windows),
    "sequences_aligned": lambda f, t: (int(_metric(f, "misaligned_windows")), 0),
    "split_parity_val": _parity("val"),
    "split_parity_test": _parity("test"),
    "split_parity_ood": _parity("ood"),
    "oracle_recall_at_5": lambda f, t: (_metric(f, "oracle_recall_at_5"), t.min_oracle_recall_at_5),
    "manifest_consistent": lambda f, t: (int(_metric(f, "n_manifest_problems")), 0),
}

# gates whose failure detail starts with a text column of dataset_metrics
GATE_DETAIL = {"manifest_consistent": "manifest_problems", "sequences_aligned": "sequence_problems"}
