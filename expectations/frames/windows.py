"""The sequence windows recounted from sequences.npz and chunks.parquet (DESIGN "Sequence").

Feeds the ``dataset_metrics`` suite (crossing and misaligned windows) and ``eval_splits`` (windows per
split). The definition is the one of `lvm_core.data.windows.count_crossing_windows`, computed here on its
own so the gate does not trust the code it checks. The window arrays are read block by block
(`expectations.frames.npz_blocks`); only chunks.parquet's article ids and chunk indexes are held whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from expectations.frames.npz_blocks import Header, SequenceArrays
from lvm_core.contracts.layout import SPLIT_NAMES

_WINDOW_ARRAYS = ("context_rows", "target_rows", "article_ids", "target_chunk_index")


def read_sequences(path: Path) -> SequenceArrays:
    """sequences.npz, read block by block later; a missing or unreadable archive is refused now."""
    return SequenceArrays(path)


def check_windows(
    sequences: SequenceArrays, chunk_article: np.ndarray, chunk_index: np.ndarray
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
    split: str, sequences: SequenceArrays, chunk_article: np.ndarray, chunk_index: np.ndarray
) -> tuple[int | None, int, int, list[str]]:
    """(windows, crossing, misaligned, problems) of one split; unusable arrays count as one misaligned."""
    keys = {name: f"{split}_{name}" for name in _WINDOW_ARRAYS}
    heads = {name: sequences.header(key) for name, key in keys.items()}
    bad = [
        f"{keys[name]} {'missing' if head is None else head if isinstance(head, str) else 'is not an integer array'}"
        for name, head in heads.items()
        if not (isinstance(head, Header) and np.issubdtype(head.dtype, np.integer))
    ]
    if bad:
        return None, 0, 1, bad
    shapes = {name: head.shape for name, head in heads.items() if isinstance(head, Header)}
    n = shapes["target_rows"][0] if len(shapes["target_rows"]) == 1 else -1
    ctx_shape = shapes["context_rows"]
    if not (len(ctx_shape) == 2 and n >= 0 and ctx_shape[0] == n) or shapes["article_ids"] != (n,) or (
        shapes["target_chunk_index"] != (n,)
    ):
        problem = (
            f"{split}: array shapes disagree (context_rows {ctx_shape}, target_rows {shapes['target_rows']}, "
            f"article_ids {shapes['article_ids']}, target_chunk_index {shapes['target_chunk_index']})"
        )
        return None, 0, 1, [problem]
    if n == 0:
        return n, 0, 0, []
    n_chunks = len(chunk_article)
    crossing = n_out = n_wrong = 0
    for block in sequences.blocks([keys[name] for name in _WINDOW_ARRAYS]):
        ctx_rows, target, rec_article, rec_index = (np.asarray(b).astype(np.int64, copy=False) for b in block)
        counts = _recount_block(ctx_rows, target, rec_article, rec_index, chunk_article, chunk_index)
        crossing, n_out, n_wrong = crossing + counts[0], n_out + counts[1], n_wrong + counts[2]

    problems: list[str] = []
    if n_out:
        problems.append(f"{split}: {n_out} window(s) reference rows outside chunks.parquet (0..{n_chunks - 1})")
    if n_wrong:
        problems.append(
            f"{split}: {n_wrong} window(s) record an article id or target chunk index "
            "that differs from chunks.parquet"
        )
    return n, crossing, n_out + n_wrong, problems


def _recount_block(
    ctx_rows: np.ndarray,
    target: np.ndarray,
    rec_article: np.ndarray,
    rec_index: np.ndarray,
    chunk_article: np.ndarray,
    chunk_index: np.ndarray,
) -> tuple[int, int, int]:
    """(crossing, rows out of range, wrong target record) of a block of windows; temporaries stay block-sized."""
    n_chunks = len(chunk_article)
    ctx = ctx_rows.shape[1]
    rows = np.concatenate([ctx_rows, target[:, None]], axis=1)
    in_range = (rows >= 0) & (rows < n_chunks)
    safe = np.where(in_range, rows, 0)
    same_article = chunk_article[safe] == rec_article[:, None]
    right_index = chunk_index[safe] == rec_index[:, None] + np.arange(-ctx, 1)[None, :]
    crossing = int((~(in_range & same_article & right_index).all(axis=1)).sum())
    n_out = int((~in_range.all(axis=1)).sum())
    n_wrong = int((in_range[:, -1] & ~(same_article[:, -1] & right_index[:, -1])).sum())
    return crossing, n_out, n_wrong
