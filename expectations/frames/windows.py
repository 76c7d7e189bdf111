"""The sequence windows recounted from sequences.npz and chunks.parquet (DESIGN "Sequence").

Feeds the ``dataset_metrics`` suite (crossing and misaligned windows) and ``eval_splits`` (windows per
split). The definition is the one of `lvm_core.data.windows.count_crossing_windows`, computed here on its
own so the gate does not trust the code it checks.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from expectations.frames.common import require_file
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import SPLIT_NAMES

_WINDOW_ARRAYS = ("context_rows", "target_rows", "article_ids", "target_chunk_index")


def read_sequences(path: Path) -> dict[str, np.ndarray | str]:
    """Every array of sequences.npz; an array that cannot be loaded becomes its error text."""
    require_file(path)
    out: dict[str, np.ndarray | str] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    out[key] = npz[key]
                except ValueError as exc:  # object arrays need pickle: refused
                    out[key] = f"{key}: {exc}"
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataContractError(f"{path}: cannot read sequences archive: {exc}") from exc
    return out


def check_windows(
    sequences: dict[str, np.ndarray | str], chunk_article: np.ndarray, chunk_index: np.ndarray
) -> dict[str, Any]:
    """Recount crossing windows from the raw arrays: {"crossing", "misaligned", "problems", "counts"}.

    A window is sound when all ctx + 1 rows (context, then target) lie in the chunk table, belong to
    the window's recorded article and carry chunk_index t-ctx, ..., t-1, t with t its recorded
    target_chunk_index; every other window is crossing. Misaligned windows, a diagnosis within those,
    have rows outside the table or a target row whose article / chunk_index differs from the record.
    `counts` is the number of windows per split (None where the split's arrays are unusable).
    """
    crossing = misaligned = 0
    problems: list[str] = []
    counts: dict[str, int | None] = {}
    for split in SPLIT_NAMES:
        counts[split], split_crossing, split_misaligned, split_problems = _recount_split(
            split, sequences, chunk_article, chunk_index
        )
        crossing += split_crossing
        misaligned += split_misaligned
        problems.extend(split_problems)
    return {"crossing": crossing, "misaligned": misaligned, "problems": problems, "counts": counts}


def _recount_split(
    split: str, sequences: dict[str, np.ndarray | str], chunk_article: np.ndarray, chunk_index: np.ndarray
) -> tuple[int | None, int, int, list[str]]:
    """(windows, crossing, misaligned, problems) of one split; unusable arrays count as one misaligned."""
    keys = {name: f"{split}_{name}" for name in _WINDOW_ARRAYS}
    arrays = {name: sequences.get(key) for name, key in keys.items()}
    bad = [
        f"{keys[name]} {'missing' if arr is None else arr if isinstance(arr, str) else 'is not an integer array'}"
        for name, arr in arrays.items()
        if not (isinstance(arr, np.ndarray) and np.issubdtype(arr.dtype, np.integer))
    ]
    if bad:
        return None, 0, 1, bad
    ctx_rows = np.asarray(arrays["context_rows"]).astype(np.int64)
    target = np.asarray(arrays["target_rows"]).astype(np.int64)
    rec_article = np.asarray(arrays["article_ids"]).astype(np.int64)
    rec_index = np.asarray(arrays["target_chunk_index"]).astype(np.int64)
    n = len(target) if target.ndim == 1 else -1
    shapes_ok = ctx_rows.ndim == 2 and n >= 0 and ctx_rows.shape[0] == n
    if not shapes_ok or rec_article.shape != (n,) or rec_index.shape != (n,):
        problem = (
            f"{split}: array shapes disagree (context_rows {ctx_rows.shape}, target_rows {target.shape}, "
            f"article_ids {rec_article.shape}, target_chunk_index {rec_index.shape})"
        )
        return None, 0, 1, [problem]
    if n == 0:
        return n, 0, 0, []
    n_chunks = len(chunk_article)
    ctx = ctx_rows.shape[1]
    rows = np.concatenate([ctx_rows, target[:, None]], axis=1)
    in_range = (rows >= 0) & (rows < n_chunks)
    safe = np.where(in_range, rows, 0)
    same_article = chunk_article[safe] == rec_article[:, None]
    right_index = chunk_index[safe] == rec_index[:, None] + np.arange(-ctx, 1)[None, :]
    crossing = int((~(in_range & same_article & right_index).all(axis=1)).sum())

    problems: list[str] = []
    n_out = int((~in_range.all(axis=1)).sum())
    if n_out:
        problems.append(f"{split}: {n_out} window(s) reference rows outside chunks.parquet (0..{n_chunks - 1})")
    t_ok = in_range[:, -1]
    n_wrong = int((t_ok & ~(same_article[:, -1] & right_index[:, -1])).sum())
    if n_wrong:
        problems.append(
            f"{split}: {n_wrong} window(s) record an article id or target chunk index "
            "that differs from chunks.parquet"
        )
    return n, crossing, n_out + n_wrong, problems
