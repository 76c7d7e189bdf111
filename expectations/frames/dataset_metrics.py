"""Frame of the ``dataset_metrics`` suite (one row): dataset-wide numbers from the manifest and the recount.

Post-purge leakage (recorded, not gated), crossing and misaligned windows, split parity against train,
oracle recall and the manifest problems that fail ``manifest_consistent``; see DATASET_METRICS_COLUMNS.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from expectations.frames.common import as_number, get_key, get_path
from lvm_core.contracts.manifest import ood_is_shift

DATASET_METRICS_COLUMNS: tuple[str, ...] = (
    "article_overlap",  # max of manifest leakage_raw.article_overlap and leakage.article_overlap
    "text_hash_overlap_rate",  # manifest leakage.text_hash_overlap.rate, after the purge: recorded, not gated
    "near_duplicate_rate",  # manifest leakage.near_duplicates.rate, after the purge: recorded, not gated
    "val_test_overlap_rate",  # manifest leakage_raw.val_test.rate: test rows repeating a val chunk (null: not recorded)
    "crossing_windows",  # recomputed
    "misaligned_windows",  # recomputed: out-of-range rows, wrong recorded article/target index, bad arrays
    "sequence_problems",  # text describing misaligned windows / malformed arrays
    "ks_val",
    "ks_test",  # null for datasets built before the test split
    "ks_ood",
    "abs_mean_diff_val",
    "abs_mean_diff_test",
    "abs_mean_diff_ood",
    # what the split_parity_ood gate bounds: ks_ood / abs_mean_diff_ood, or null (not gated) where ood is a
    # real shift (ranges or titles held out): a held-out topic is expected to differ in coherence
    "ks_ood_gated",
    "abs_mean_diff_ood_gated",
    "ood_is_shift",  # 1.0 when the manifest's ood_kind is "shift", else 0.0
    "oracle_recall_at_5",
    "oracle_misaligned",  # manifest oracle.misaligned: sampled rows whose vector disagrees with their text (null: not recorded)
    "n_manifest_problems",
    "manifest_problems",  # text, "; "-joined
)


def dataset_metrics_frame(
    manifest: dict[str, Any], windows: dict[str, Any], parity: dict[str, Any], problems: list[str]
) -> pd.DataFrame:
    """The one row; `problems` must already hold every manifest problem (the last two columns)."""
    leak = get_key(manifest, "leakage")
    shift = ood_is_shift(get_key(manifest, "splits"))
    ks_ood = as_number(get_key(parity.get("ood"), "ks"))
    diff_ood = abs(as_number(get_key(parity.get("ood"), "mean_diff")))
    metrics = {
        "article_overlap": max(
            as_number(get_key(leak, "article_overlap")), as_number(get_path(manifest, "leakage_raw", "article_overlap")),
            key=lambda x: math.inf if math.isnan(x) else x,
        ),
        "text_hash_overlap_rate": as_number(get_path(leak, "text_hash_overlap", "rate")),
        "near_duplicate_rate": as_number(get_path(leak, "near_duplicates", "rate")),
        "val_test_overlap_rate": as_number(get_path(manifest, "leakage_raw", "val_test", "rate")),
        "crossing_windows": windows["crossing"],
        "misaligned_windows": windows["misaligned"],
        "sequence_problems": "; ".join(windows["problems"]),
        "ks_val": as_number(get_key(parity.get("val"), "ks")),
        "ks_test": as_number(get_key(parity.get("test"), "ks")),
        "ks_ood": ks_ood,
        "abs_mean_diff_val": abs(as_number(get_key(parity.get("val"), "mean_diff"))),
        "abs_mean_diff_test": abs(as_number(get_key(parity.get("test"), "mean_diff"))),
        "abs_mean_diff_ood": diff_ood,
        "ks_ood_gated": math.nan if shift else ks_ood,
        "abs_mean_diff_ood_gated": math.nan if shift else diff_ood,
        "ood_is_shift": 1.0 if shift else 0.0,
        "oracle_recall_at_5": as_number(get_key(manifest, "oracle_recall_at_5")),
        "oracle_misaligned": as_number(get_path(manifest, "oracle", "misaligned")),
        "n_manifest_problems": len(problems),
        "manifest_problems": "; ".join(problems),
    }
    return pd.DataFrame([metrics], columns=list(DATASET_METRICS_COLUMNS))
