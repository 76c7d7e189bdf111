"""Training windows as row indices into the chunk table / embedding matrix.

A sequence is ``context = chunks i..i+ctx-1`` and ``target = chunk i+ctx`` of one article, stride 1.
Windows are stored as row indices (``(n, ctx)`` int64 + target row), never as ``n x ctx`` vector copies:
at 500k chunks x 768 dims a copied context tensor would be ~5x the embedding matrix.

Inputs are arrays aligned with chunk rows (``contracts.CHUNKS_SCHEMA``): ``article_ids (n,) int64`` and
``chunk_index (n,) int32``, rows grouped by article (dataset order) and sorted by chunk_index, which runs
0..n_i-1 within each article. ``chunk_layout.check_chunk_order`` enforces exactly that, because a window
built on misordered rows silently crosses chunks or articles.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.chunk_layout import check_chunk_order
from lvm_core.io.storage import atomic_path
from lvm_core.io.vectors import float32_rows

SEQUENCE_KEYS: tuple[str, ...] = ("context_rows", "target_rows", "article_ids", "target_chunk_index")
_KEY_DTYPES: dict[str, type] = {
    "context_rows": np.int64,
    "target_rows": np.int64,
    "article_ids": np.int64,
    "target_chunk_index": np.int32,
}


class SequenceLike(Protocol):
    """Anything with the four SequenceSet arrays; :meth:`SequenceSet.of` turns it into a checked SequenceSet."""

    context_rows: np.ndarray  # (n, ctx) rows of the context chunks, oldest first
    target_rows: np.ndarray  # (n,)
    article_ids: np.ndarray  # (n,)
    target_chunk_index: np.ndarray  # (n,)


@dataclass
class SequenceSet:
    """Windows of one split: row indices plus the article and chunk position of each target.

    The one window type of the project: datasets, training, baselines, evaluation and drift all use it.
    Construction checks shapes and dtypes; :func:`check_windows` checks it against the vectors and the
    chunk table.
    """

    context_rows: np.ndarray  # (n, ctx) int64; column-major when made by build_windows
    target_rows: np.ndarray  # (n,) int64
    article_ids: np.ndarray  # (n,) int64
    target_chunk_index: np.ndarray  # (n,) int32

    def __post_init__(self) -> None:
        for name in SEQUENCE_KEYS:
            arr = np.asarray(getattr(self, name))
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise DataContractError(f"SequenceSet: {name} must hold integers, got dtype {arr.dtype}")
            setattr(self, name, arr.astype(_KEY_DTYPES[name], copy=False))
        if self.context_rows.ndim != 2 or self.context_rows.shape[1] < 1:
            raise DataContractError(
                f"SequenceSet: context_rows must be 2-D (n, ctx) with ctx >= 1, got shape {self.context_rows.shape}"
            )
        n = self.context_rows.shape[0]
        for name in ("target_rows", "article_ids", "target_chunk_index"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise DataContractError(
                    f"SequenceSet: {name} has shape {arr.shape}, expected ({n},) to match context_rows"
                )

    @classmethod
    def of(cls, seqs: SequenceLike) -> SequenceSet:
        """``seqs`` itself when it is a SequenceSet, else a checked SequenceSet of its four arrays."""
        if isinstance(seqs, cls):
            return seqs
        missing = [k for k in SEQUENCE_KEYS if not hasattr(seqs, k)]
        if missing:
            raise DataContractError(
                f"{type(seqs).__name__} has no {', '.join(missing)}; expected a SequenceSet-like object"
            )
        return cls(*(getattr(seqs, k) for k in SEQUENCE_KEYS))

    @property
    def ctx(self) -> int:
        return int(self.context_rows.shape[1])

    @property
    def n(self) -> int:
        return len(self)

    def __len__(self) -> int:
        return int(self.context_rows.shape[0])

    @classmethod
    def concat(cls, sets: Sequence[SequenceSet]) -> SequenceSet:
        """The windows of ``sets`` one after the other (e.g. several splits)."""
        return cls(*(np.concatenate([getattr(s, k) for s in sets]) for k in SEQUENCE_KEYS))

    def subset(self, idx: np.ndarray) -> SequenceSet:
        """Windows selected by a boolean mask or an index array (copies only the index arrays)."""
        return SequenceSet(
            self.context_rows[idx],
            self.target_rows[idx],
            self.article_ids[idx],
            self.target_chunk_index[idx],
        )


def check_windows(
    seqs: SequenceLike,
    vectors: np.ndarray | None = None,
    article_ids: np.ndarray | None = None,
    chunk_index: np.ndarray | None = None,
    *,
    what: str = "windows",
    allow_empty: bool = True,
) -> SequenceSet:
    """The one validation of a window set; returns it as a SequenceSet.

    Always: shapes and integer dtypes (:class:`SequenceSet`). With ``vectors``: a 2-D matrix whose rows
    every index falls in. With the chunk table (``article_ids``, ``chunk_index``, aligned with the rows):
    every window is ``ctx`` consecutive chunks of its own article followed by the target, as recorded.
    A misaligned or crossing window otherwise shows up much later as a silently wrong number, so the
    error names ``what`` and the first offending window. Raises DataContractError (a ValueError).
    """
    if vectors is not None and (not hasattr(vectors, "shape") or len(vectors.shape) != 2):
        raise DataContractError(
            f"vectors must be a 2-d array (n_chunks, dim), got shape {getattr(vectors, 'shape', None)}"
        )
    try:
        w = SequenceSet.of(seqs)
    except DataContractError as exc:
        raise DataContractError(f"{what}: {exc}") from exc
    if len(w) == 0 and not allow_empty:
        raise DataContractError(f"{what} holds no windows")
    table = None
    if article_ids is not None or chunk_index is not None:
        if article_ids is None or chunk_index is None:
            raise DataContractError("check_windows: pass both article_ids and chunk_index, or neither")
        table = np.asarray(article_ids), np.asarray(chunk_index).astype(np.int64, copy=False)
        if table[1].shape != table[0].shape or table[0].ndim != 1:
            raise DataContractError(
                f"chunk_index: shape {table[1].shape}, expected ({table[0].shape[0]},) to match article_ids"
            )
    bounds = [int(vectors.shape[0])] if vectors is not None else []
    bounds += [int(table[0].shape[0])] if table is not None else []
    if len(w) == 0 or not bounds:
        return w
    n_rows = min(bounds)
    for name, rows in (("context_rows", w.context_rows), ("target_rows", w.target_rows)):
        lo, hi = int(rows.min()), int(rows.max())
        if lo < 0 or hi >= n_rows:
            raise DataContractError(f"{what}.{name} indexes rows {lo}..{hi}, out of range [0, {n_rows})")
    if table is not None:
        aids, cidx = table
        bad = aids[w.target_rows] != w.article_ids
        bad |= cidx[w.target_rows] != w.target_chunk_index
        offsets = np.arange(-w.ctx, 0)[None, :]
        bad |= (aids[w.context_rows] != w.article_ids[:, None]).any(axis=1)
        bad |= (cidx[w.context_rows] != w.target_chunk_index[:, None] + offsets).any(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataContractError(
                f"{what}: {int(bad.sum())} of {len(w)} windows are not 'ctx consecutive chunks of one article "
                f"followed by the target' (first: window {first}, target row {int(w.target_rows[first])})"
            )
    return w


def build_windows(
    article_ids: np.ndarray,
    chunk_index: np.ndarray,
    context_len: int = 5,
    articles: np.ndarray | None = None,
) -> SequenceSet:
    """All stride-1 windows strictly inside one article, in row order.

    A window starting at row r has context rows r..r+ctx-1 and target row r+ctx; it exists when at least
    ``ctx`` rows of the same article follow r, so an article of n chunks gives max(0, n - ctx) windows.
    ``articles`` restricts the output to windows of those article ids (e.g. one split).
    Vectorised: no Python loop per window or per article.
    """
    if int(context_len) != context_len or context_len < 1:
        raise ValueError(f"context_len must be a positive integer, got {context_len!r}")
    ctx = int(context_len)
    check_chunk_order(article_ids, chunk_index)
    article_ids = np.asarray(article_ids)
    chunk_index = np.asarray(chunk_index)
    # With articles contiguous (checked above), rows r and r+ctx share an article iff the whole window does.
    ok = article_ids[:-ctx] == article_ids[ctx:] if article_ids.shape[0] > ctx else np.zeros(0, dtype=bool)
    if articles is not None:
        ok &= np.isin(article_ids[: ok.shape[0]], np.asarray(articles, dtype=np.int64))
    starts = np.flatnonzero(ok).astype(np.int64, copy=False)
    context_rows = _window_rows(starts, ctx)
    target_rows = starts + ctx
    return SequenceSet(
        context_rows=context_rows,
        target_rows=target_rows,
        article_ids=article_ids[starts].astype(np.int64, copy=False),
        target_chunk_index=chunk_index[target_rows].astype(np.int32, copy=False),
    )


def _window_rows(starts: np.ndarray, ctx: int) -> np.ndarray:
    """``starts[:, None] + arange(ctx)`` as an (m, ctx) int64 array stored column-major.

    Column j is the contiguous array ``starts + j``, written with one long ufunc loop per column.
    The row-major broadcast runs numpy's inner loop over only ctx elements per row and takes about
    twice as long. Values and indexing semantics are the same in either layout; callers that need a
    C-ordered buffer use ``np.ascontiguousarray`` (``save_sequences`` does).
    """
    cols = np.empty((ctx, starts.shape[0]), dtype=np.int64)
    for j in range(ctx):  # ctx columns, not windows
        np.add(starts, j, out=cols[j])
    return cols.T


def count_crossing_windows(
    seqs: SequenceSet, article_ids: np.ndarray, chunk_index: np.ndarray, block: int = 1 << 18
) -> int:
    """Count windows that are not ``ctx + 1`` consecutive chunks of their own article.

    Independent of :func:`build_windows`: it looks up every context and target row and checks that each
    belongs to ``seqs.article_ids`` and that the chunk indices are ``t-ctx, ..., t-1, t`` with
    ``t = target_chunk_index``. Rows outside the table count as crossing. The data gate requires 0.
    """
    article_ids = np.asarray(article_ids)
    chunk_index = np.asarray(chunk_index)
    n_rows = article_ids.shape[0]
    ctx = seqs.ctx
    offsets = np.arange(-ctx, 1, dtype=np.int64)[None, :]  # chunk offsets relative to the target
    bad_total = 0
    for s in range(0, len(seqs), block):
        e = min(s + block, len(seqs))
        rows = np.concatenate([seqs.context_rows[s:e], seqs.target_rows[s:e, None]], axis=1)
        in_range = (rows >= 0) & (rows < n_rows)
        safe = np.where(in_range, rows, 0)
        same_article = article_ids[safe] == seqs.article_ids[s:e, None]
        expected_ci = seqs.target_chunk_index[s:e, None].astype(np.int64) + offsets
        right_chunk = chunk_index[safe].astype(np.int64) == expected_ci
        ok = (in_range & same_article & right_chunk).all(axis=1)
        bad_total += int((~ok).sum())
    return bad_total


def data_direction(vectors: np.ndarray, seqs: SequenceSet, block: int = 4096) -> list[float]:
    """Mean cos(ctx[j], target) for each context position j (rows are unit vectors).

    Windows built by :func:`build_windows` (context = the ctx rows just before the target) are scored
    by streaming contiguous row blocks of ``vectors`` and taking row-wise dot products at offsets
    1..ctx: sequential reads (good for a memory-mapped matrix) and no gathered copies. Sparse row blocks
    and any other windows fall back to gathering (block, D) slabs. Memory stays at a few blocks; no
    (n, ctx, D) tensor is formed. Returns [] for an empty set.
    """
    n = len(seqs)
    if n == 0:
        return []
    ctx = seqs.ctx
    n_rows = vectors.shape[0]
    lo = min(int(seqs.context_rows.min()), int(seqs.target_rows.min()))
    hi = max(int(seqs.context_rows.max()), int(seqs.target_rows.max()))
    if lo < 0 or hi >= n_rows:
        raise DataContractError(f"window rows span {lo}..{hi}, outside the {n_rows} rows of vectors")
    sums = np.zeros(ctx, dtype=np.float64)
    offsets = np.arange(-ctx, 0, dtype=np.int64)
    contiguous = (seqs.context_rows == seqs.target_rows[:, None] + offsets).all(axis=1)

    # windows whose context is the ctx rows right before the target: weight per target row
    counts = np.bincount(seqs.target_rows[contiguous], minlength=n_rows)
    for s0 in range(ctx, n_rows, block):
        e = min(s0 + block, n_rows)
        w = counts[s0:e]
        nz = np.flatnonzero(w)
        if nz.size == 0:
            continue
        if nz.size * 4 >= e - s0:  # dense block: stream it
            slab = float32_rows(vectors, slice(s0 - ctx, e))
            tgt = slab[ctx:]
            for j in range(ctx):
                dots = np.einsum("ij,ij->i", slab[j : j + e - s0], tgt)
                sums[j] += float(np.dot(dots.astype(np.float64), w))
        else:
            rows = s0 + nz
            tgt = float32_rows(vectors, rows)
            wz = w[nz].astype(np.float64)
            for j in range(ctx):
                c = float32_rows(vectors, rows - ctx + j)
                sums[j] += float(np.dot(np.einsum("ij,ij->i", c, tgt).astype(np.float64), wz))

    # any other windows: gather context and target slabs
    other = np.flatnonzero(~contiguous)
    for s0 in range(0, other.size, block):
        idx = other[s0 : s0 + block]
        tgt = float32_rows(vectors, seqs.target_rows[idx])
        for j in range(ctx):
            c = float32_rows(vectors, seqs.context_rows[idx, j])
            sums[j] += float(np.einsum("ij,ij->i", c, tgt).sum(dtype=np.float64))
    return [float(x) for x in sums / n]


def gather_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Vectors of row indices of any shape, as a float32 copy of shape ``(*rows.shape, D)``."""
    rows = np.asarray(rows)
    return np.asarray(vectors[rows.reshape(-1)], dtype=np.float32).reshape(*rows.shape, -1)


def gather(
    vectors: np.ndarray, seqs: SequenceSet, idx: np.ndarray | slice | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of a (small) batch of windows: context (b, ctx, D) and target (b, D), float32 copies."""
    ctx_rows = seqs.context_rows if idx is None else seqs.context_rows[idx]
    tgt_rows = seqs.target_rows if idx is None else seqs.target_rows[idx]
    return gather_rows(vectors, ctx_rows), gather_rows(vectors, tgt_rows)


def iter_gathered(
    vectors: np.ndarray, seqs: SequenceSet, batch_size: int, index: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`gather` over ``index`` (default: every window) in batches of ``batch_size`` windows, so memory
    stays at one ``(batch_size, ctx, D)`` slab whatever the number of windows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.arange(len(seqs)) if index is None else np.asarray(index)
    for start in range(0, order.shape[0], batch_size):
        yield gather(vectors, seqs, order[start : start + batch_size])


def save_sequences(path: Path, sets: Mapping[str, SequenceSet]) -> None:
    """Write all splits to one .npz (keys ``{split}_context_rows`` etc.), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for split, seqs in sets.items():
        if not split or not split.replace("_", "").isalnum():
            raise ValueError(f"split name must be alphanumeric/underscore, got {split!r}")
        for key in SEQUENCE_KEYS:
            arrays[f"{split}_{key}"] = np.ascontiguousarray(getattr(seqs, key), dtype=_KEY_DTYPES[key])
    with atomic_path(Path(path)) as tmp:
        # an open handle keeps np.savez from appending ".npz" to the temp name
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # the stub reads **arrays as if it held allow_pickle


def load_sequences(path: Path) -> dict[str, SequenceSet]:
    """Read a sequences .npz written by :func:`save_sequences`; validate keys, shapes and dtypes."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataContractError(f"{path}: not a readable sequences .npz ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataContractError(f"{path}: expected an .npz archive of sequence arrays, got a single array")
    with npz:
        by_split: dict[str, dict[str, np.ndarray]] = {}
        for name in npz.files:
            key = next((k for k in SEQUENCE_KEYS if name.endswith("_" + k)), None)
            if key is None:
                raise DataContractError(
                    f"{path}: unexpected array {name!r} (expected {{split}}_{{{'|'.join(SEQUENCE_KEYS)}}})"
                )
            split = name[: -len(key) - 1]
            try:
                arr = npz[name]
            except ValueError as exc:
                raise DataContractError(f"{path}: array {name!r} cannot be loaded without pickle ({exc})") from exc
            if not np.issubdtype(arr.dtype, np.integer):
                raise DataContractError(f"{path}: array {name!r} has dtype {arr.dtype}, expected an integer type")
            by_split.setdefault(split, {})[key] = arr
    out: dict[str, SequenceSet] = {}
    for split, arrays in by_split.items():
        missing = [k for k in SEQUENCE_KEYS if k not in arrays]
        if missing:
            names = ", ".join(f"{split}_{m}" for m in missing)
            raise DataContractError(f"{path}: split {split!r} lacks array(s) {names}")
        for key in ("context_rows", "target_rows"):
            if arrays[key].size and arrays[key].min() < 0:
                raise DataContractError(f"{path}: {split}_{key} has negative row indices")
        try:
            out[split] = SequenceSet(**{k: arrays[k] for k in SEQUENCE_KEYS})
        except DataContractError as exc:
            raise DataContractError(f"{path}: split {split!r}: {exc}") from exc
    return out
