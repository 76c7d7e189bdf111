"""Frame of the ``eval_splits`` suite: one row per evaluation split present (val/test/ood with windows, raw
leaking rows or purged windows).

It holds the numbers DESIGN "Leakage" gates: the raw (pre-purge) text-hash and near-duplicate rates and
the purged-window fraction, not the post-purge remainder (0 by construction).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from expectations.frames.common import as_number, get_key, get_path
from lvm_core.contracts.layout import SPLIT_NAMES

EVAL_SPLITS_COLUMNS: tuple[str, ...] = (
    "split",
    "rows",  # manifest leakage_raw.rows.<split>: chunk rows of the split
    "text_hash_overlap",  # manifest leakage_raw.text_hash_overlap.<split> (before the purge)
    "text_hash_overlap_rate",  # text_hash_overlap / rows
    "near_duplicates",  # manifest leakage_raw.near_duplicates.<split>
    "near_duplicate_rate",  # near_duplicates / rows
    "windows",  # windows in sequences.npz (after the purge)
    "purged_windows",  # manifest purged_windows.<split>
    "windows_before_purge",  # windows + purged_windows
    "purged_fraction",  # purged_windows / windows_before_purge (0 when the split had no window)
)


def eval_splits_frame(manifest: dict[str, Any], windows: dict[str, Any], problems: list[str]) -> pd.DataFrame:
    """Raw leakage rates and purged fraction per present evaluation split. A present split whose manifest
    numbers are missing gets NaN (failing the gates) and a line in `problems`."""
    rows_out = [
        _split_row(manifest, split, windows["counts"].get(split) or 0, problems)
        for split in (s for s in SPLIT_NAMES if s != "train")
    ]
    frame = pd.DataFrame([row for row in rows_out if row is not None], columns=list(EVAL_SPLITS_COLUMNS))
    return frame.astype({c: "float64" for c in EVAL_SPLITS_COLUMNS if c != "split"}).astype({"split": "string"})


def _split_row(manifest: dict[str, Any], split: str, after: int, problems: list[str]) -> dict[str, Any] | None:
    """The split's row, None when the split has no windows, leaking rows or purged windows."""
    raw = get_key(manifest, "leakage_raw")
    n_rows, purged = get_path(raw, "rows", split), get_path(manifest, "purged_windows", split)
    if not (after or as_number(n_rows) > 0 or as_number(purged) > 0):
        return None
    text, near = get_path(raw, "text_hash_overlap", split), get_path(raw, "near_duplicates", split)
    if manifest:
        for key, value in [(f"leakage_raw.rows.{split}", n_rows), (f"leakage_raw.text_hash_overlap.{split}", text),
                           (f"leakage_raw.near_duplicates.{split}", near), (f"purged_windows.{split}", purged)]:
            if value is None:
                problems.append(f"manifest lacks {key}")
            elif isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"manifest {key} is not an integer ({value!r})")
    n_rows_f, purged_f = as_number(n_rows), as_number(purged)
    before = after + purged_f
    recorded = get_path(manifest, "windows_before_purge", split)
    if recorded is not None and not math.isnan(before) and recorded != before:
        problems.append(f"manifest windows_before_purge.{split}={recorded} but the files and purged_windows give {int(before)}")
    return {
        "split": split,
        "rows": n_rows_f,
        "text_hash_overlap": as_number(text),
        "text_hash_overlap_rate": _rate(as_number(text), n_rows_f),
        "near_duplicates": as_number(near),
        "near_duplicate_rate": _rate(as_number(near), n_rows_f),
        "windows": float(after),
        "purged_windows": purged_f,
        "windows_before_purge": before,
        "purged_fraction": _rate(purged_f, before),
    }


def _rate(part: float, whole: float) -> float:
    """part / whole; 0 when whole is 0, NaN when whole is unknown."""
    return part / whole if whole > 0 else (0.0 if whole == 0 else math.nan)
