"""The reference project's NPZ files: read its vector dumps, write and read its training-sequence layout.

Input (vector dump): ``vectors (N, D) float32``, ``article_indices (N,)``, ``chunk_indices (N,)``, optional
``concept_texts (N,)`` and ``article_titles (N,)`` (one per vector, like the other arrays).
Output (training sequences): ``context_sequences (M, ctx, D) float32``, ``target_vectors (M, D)``,
``context_texts (M, ctx)`` and ``target_texts (M,)`` unicode, aligned with the vectors (empty strings when
the input has no texts), ``article_index (M,)``, ``target_chunk_index (M,)``, ``context_length``,
``vector_dim`` (0-d scalars).

Files are read with ``allow_pickle=False`` only: the reference project saved texts as object arrays,
which would execute pickled code on load; such files are refused with a message saying how to re-save
them. The output is streamed block by block into the zip archive, so converting never holds the
``M x ctx x D`` context tensor in memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.splits import format_ranges, parse_ranges, ranges_mask
from lvm_core.io.storage import atomic_path

REQUIRED_VECTOR_KEYS: tuple[str, ...] = ("vectors", "article_indices", "chunk_indices")
REQUIRED_SEQUENCE_KEYS: tuple[str, ...] = ("context_sequences", "target_vectors")


class NpzFormatError(DataContractError):
    """A reference-format .npz is missing keys, has bad values, or would need unpickling."""


@dataclass
class ReferenceVectors:
    """Contents of a reference vector dump, validated and aligned (row i of every array = vector i)."""

    path: Path
    vectors: np.ndarray  # (N, D) float32
    article_indices: np.ndarray  # (N,) int64
    chunk_indices: np.ndarray  # (N,) int64
    concept_texts: np.ndarray | None = None  # (N,) unicode
    article_titles: np.ndarray | None = None  # (N,) unicode

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _require_keys(npz: Any, keys: Any, path: Path) -> None:
    missing = [k for k in keys if k not in npz.files]
    if missing:
        raise NpzFormatError(
            f"{path.name}: missing array(s) {', '.join(repr(k) for k in missing)} (has {sorted(npz.files)})"
        )


def read_reference_vectors(path: Path) -> ReferenceVectors:
    """Load and validate a reference vector dump (NpzFormatError naming the key and the problem)."""
    path = Path(path)
    with _open_npz(path) as npz:
        _require_keys(npz, REQUIRED_VECTOR_KEYS, path)
        vectors = _get(npz, "vectors", path)
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise NpzFormatError(f"{path.name}: array 'vectors' must be 2-D (N, D), got shape {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise NpzFormatError(f"{path.name}: array 'vectors' has dtype {vectors.dtype}, expected float32")
        vectors = vectors.astype(np.float32, copy=False)
        _check_finite(vectors, "vectors", path)
        n = vectors.shape[0]
        ints = {k: _int_array(npz, k, path, n) for k in ("article_indices", "chunk_indices")}
        texts = {
            k: _text_array(npz, k, path, n) if k in npz.files else None for k in ("concept_texts", "article_titles")
        }
    return ReferenceVectors(
        path=path,
        vectors=vectors,
        article_indices=ints["article_indices"],
        chunk_indices=ints["chunk_indices"],
        concept_texts=texts["concept_texts"],
        article_titles=texts["article_titles"],
    )


def reference_windows(
    article_indices: np.ndarray, chunk_indices: np.ndarray, context_len: int, path: Path | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Stride-1 windows over rows ordered by (article, chunk index).

    Returns (order, starts, n_gaps): ``order`` sorts the input rows; window w has context rows
    ``order[starts[w] + 0..ctx-1]`` and target row ``order[starts[w] + ctx]``. A window never spans two
    articles or a gap in chunk_indices (a missing chunk breaks the run: the target must be the next chunk).
    """
    name = Path(path).name if path is not None else "input"
    order = np.lexsort((chunk_indices, article_indices))
    art = article_indices[order]
    chk = chunk_indices[order]
    same_art = art[1:] == art[:-1]
    dup = np.flatnonzero(same_art & (chk[1:] == chk[:-1]))
    if dup.size:
        p = int(dup[0])
        raise NpzFormatError(
            f"{name}: article {int(art[p])} has chunk index {int(chk[p])} twice "
            "(chunk_indices must be unique per article)"
        )
    link = same_art & (chk[1:] == chk[:-1] + 1)
    n_gaps = int((same_art & ~link).sum())
    if link.shape[0] < context_len:
        return order, np.empty(0, np.int64), n_gaps
    ok = np.lib.stride_tricks.sliding_window_view(link, context_len).all(axis=1)
    return order, np.flatnonzero(ok).astype(np.int64), n_gaps


def convert_reference_npz(
    npz_in: Path,
    output: Path,
    exclude_articles: str | None = None,
    context_len: int = 5,
    include_articles: str | None = None,
    block: int = 4096,
) -> dict[str, Any]:
    """Build the reference training-sequence file from a reference vector dump.

    ``exclude_articles`` / ``include_articles`` are inclusive ranges over ``article_indices`` VALUES
    (``"1500-1999,4000-4499"``); each range must match at least one article (ValueError otherwise).
    Excluding the held-out ranges gives the training file; including only them gives the matching
    validation file. ``output`` gets a ``.npz`` suffix when it has none (as ``np.savez`` would) and is
    written atomically. Returns a summary dict (counts, ranges, output path).
    """
    if int(context_len) != context_len or context_len < 1:
        raise ValueError(f"context_len must be a positive integer, got {context_len!r}")
    ctx = int(context_len)
    output = Path(output)
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    ref = read_reference_vectors(Path(npz_in))
    uniq_articles = np.unique(ref.article_indices)
    keep_rows, excl, incl = _kept_rows(ref, uniq_articles, exclude_articles, include_articles)

    order, starts, n_gaps = reference_windows(ref.article_indices, ref.chunk_indices, ctx, ref.path)
    starts = starts[keep_rows[order[starts]]]  # a window's rows share one article: check its first row
    tgt_rows = _write_sequence_file(output, ref, order, starts, ctx, block)
    m, dim = int(starts.shape[0]), ref.dim

    kept_articles = np.unique(ref.article_indices[keep_rows])
    return {
        "input": str(ref.path),
        "output": str(output),
        "n_vectors": len(ref),
        "vector_dim": dim,
        "context_length": ctx,
        "n_articles": int(uniq_articles.shape[0]),
        "n_articles_kept": int(kept_articles.shape[0]),
        "n_articles_with_sequences": int(np.unique(ref.article_indices[tgt_rows]).shape[0]),
        "n_vectors_excluded": int((~keep_rows).sum()),
        "n_sequences": m,
        "n_chunk_gaps": n_gaps,
        "exclude_articles": format_ranges(excl) if excl else None,
        "include_articles": format_ranges(incl) if incl else None,
        "has_texts": ref.concept_texts is not None,
    }


def _kept_rows(
    ref: ReferenceVectors, uniq_articles: np.ndarray, exclude_articles: str | None, include_articles: str | None
) -> tuple[np.ndarray, Any, Any]:
    """Rows whose article survives the exclude/include ranges, and the parsed ranges (None when not given)."""
    keep_rows = np.ones(len(ref), dtype=bool)
    excl = incl = None
    if exclude_articles:
        excl = parse_ranges(exclude_articles)
        _check_ranges_match(excl, uniq_articles, "--exclude-articles", ref.path)
        keep_rows &= ~ranges_mask(ref.article_indices, excl)
    if include_articles:
        incl = parse_ranges(include_articles)
        _check_ranges_match(incl, uniq_articles, "--include-articles", ref.path)
        keep_rows &= ranges_mask(ref.article_indices, incl)
    return keep_rows, excl, incl


def _write_sequence_file(
    output: Path, ref: ReferenceVectors, order: np.ndarray, starts: np.ndarray, ctx: int, block: int
) -> np.ndarray:
    """Write the reference sequence arrays of the windows at ``starts`` (context slabs streamed in blocks of
    ``block`` windows) atomically to ``output``; returns the target rows."""
    m, dim = int(starts.shape[0]), ref.dim
    ctx_rows_of: Callable[[np.ndarray], np.ndarray] = lambda s: order[s[:, None] + np.arange(ctx)[None, :]]  # noqa: E731
    tgt_rows: np.ndarray = order[starts + ctx]

    texts = ref.concept_texts
    text_dtype = texts.dtype if texts is not None else np.dtype("<U1")

    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with _NpyStream(zf, "context_sequences", np.float32, (m, ctx, dim)) as w:
                for s in range(0, m, block):
                    w.write(ref.vectors[ctx_rows_of(starts[s : s + block])])
            _write_npy(zf, "target_vectors", ref.vectors[tgt_rows])
            with _NpyStream(zf, "context_texts", text_dtype, (m, ctx)) as w:
                for s in range(0, m, block):
                    rows = ctx_rows_of(starts[s : s + block])
                    w.write(texts[rows] if texts is not None else np.zeros(rows.shape, text_dtype))
            _write_npy(zf, "target_texts", texts[tgt_rows] if texts is not None else np.zeros(m, text_dtype))
            _write_npy(zf, "article_index", ref.article_indices[tgt_rows])
            _write_npy(zf, "target_chunk_index", ref.chunk_indices[tgt_rows])
            _write_npy(zf, "context_length", np.array(ctx, dtype=np.int64))
            _write_npy(zf, "vector_dim", np.array(dim, dtype=np.int64))
    return tgt_rows


def load_reference_sequences(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a reference training-sequence file: (context (M, ctx, D) float32, target (M, D) float32, meta).

    ``meta`` holds context_length, vector_dim and, when present, article_index, target_chunk_index,
    context_texts, target_texts. Inconsistent shapes, non-finite values or object arrays raise
    NpzFormatError.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        _require_keys(npz, REQUIRED_SEQUENCE_KEYS, path)
        context = _get(npz, "context_sequences", path)
        target = _get(npz, "target_vectors", path)
        if context.ndim != 3 or not np.issubdtype(context.dtype, np.floating):
            raise NpzFormatError(
                f"{path.name}: array 'context_sequences' must be float (M, ctx, D), got {context.dtype} {context.shape}"
            )
        m, ctx, dim = context.shape
        if target.shape != (m, dim) or not np.issubdtype(target.dtype, np.floating):
            raise NpzFormatError(
                f"{path.name}: array 'target_vectors' must be float ({m}, {dim}) to match context_sequences, "
                f"got {target.dtype} {target.shape}"
            )
        context = context.astype(np.float32, copy=False)
        target = target.astype(np.float32, copy=False)
        _check_finite(context, "context_sequences", path)
        _check_finite(target, "target_vectors", path)
        meta: dict[str, Any] = {"path": str(path), "context_length": ctx, "vector_dim": dim}
        for key, expected in (("context_length", ctx), ("vector_dim", dim)):
            if key in npz.files:
                val = _get(npz, key, path)
                if val.size != 1 or int(val.reshape(-1)[0]) != expected:
                    raise NpzFormatError(
                        f"{path.name}: array {key!r} is {val.reshape(-1)[:3].tolist()}, but context_sequences "
                        f"implies {expected}"
                    )
        for key in ("article_index", "target_chunk_index"):
            if key in npz.files:
                meta[key] = _int_array(npz, key, path, m)
        if "target_texts" in npz.files:
            meta["target_texts"] = _text_array(npz, "target_texts", path, m)
        if "context_texts" in npz.files:
            ct = _get(npz, "context_texts", path)
            if ct.shape != (m, ctx) or ct.dtype.kind not in "US":
                raise NpzFormatError(
                    f"{path.name}: array 'context_texts' must be a ({m}, {ctx}) string array, got {ct.dtype} {ct.shape}"
                )
            meta["context_texts"] = ct.astype(str) if ct.dtype.kind == "S" else ct
    return context, target, meta


# --- internals -------------------------------------------------------------------------------------


def _open_npz(path: Path) -> Any:
    if not path.exists():
        raise NpzFormatError(f"{path}: file not found")
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError as exc:  # a plain .npy holding an object array
        raise NpzFormatError(f"{path.name}: contains an object array; refusing to unpickle ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise NpzFormatError(f"{path.name}: not a readable .npz archive ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise NpzFormatError(f"{path.name}: expected an .npz archive of named arrays, got a single .npy array")
    return npz


def _get(npz: Any, key: str, path: Path) -> np.ndarray:
    try:
        return cast(np.ndarray, npz[key])
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise NpzFormatError(
                f"{path.name}: array {key!r} is an object array; refusing to unpickle "
                "(re-save texts as a unicode array)"
            ) from exc
        raise NpzFormatError(f"{path.name}: array {key!r} cannot be read ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise NpzFormatError(f"{path.name}: array {key!r} cannot be read ({exc})") from exc


def _int_array(npz: Any, key: str, path: Path, n: int) -> np.ndarray:
    arr = _get(npz, key, path)
    if arr.ndim != 1:
        raise NpzFormatError(f"{path.name}: array {key!r} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise NpzFormatError(f"{path.name}: array {key!r} has length {arr.shape[0]}, expected {n} (one per vector)")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise NpzFormatError(f"{path.name}: array {key!r} has non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise NpzFormatError(f"{path.name}: array {key!r} has dtype {arr.dtype}, expected integers")
    return arr.astype(np.int64, copy=False)


def _text_array(npz: Any, key: str, path: Path, n: int) -> np.ndarray:
    arr = _get(npz, key, path)
    if arr.dtype.kind not in "US":
        raise NpzFormatError(f"{path.name}: array {key!r} has dtype {arr.dtype}, expected a unicode string array")
    if arr.shape != (n,):
        raise NpzFormatError(f"{path.name}: array {key!r} has shape {arr.shape}, expected ({n},) (one per vector)")
    return np.char.decode(arr, "utf-8") if arr.dtype.kind == "S" else arr


def _check_finite(arr: np.ndarray, key: str, path: Path, block: int = 1 << 16) -> None:
    for s in range(0, arr.shape[0], block):
        ok = np.isfinite(arr[s : s + block]).all(axis=tuple(range(1, arr.ndim)))
        if not ok.all():
            row = s + int(np.flatnonzero(~ok)[0])
            raise NpzFormatError(f"{path.name}: array {key!r} has NaN/Inf values (first at row {row})")


def _check_ranges_match(ranges: list[tuple[int, int]], articles: np.ndarray, flag: str, path: Path) -> None:
    for a, b in ranges:
        if not ((articles >= a) & (articles <= b)).any():
            span = f"{int(articles.min())}-{int(articles.max())}" if articles.size else "none"
            raise ValueError(
                f"{flag} range {a}-{b} matches no article in {path.name} (article_indices span {span})"
            )


def _write_npy(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    arr = np.asarray(arr, order="C")  # not ascontiguousarray: it turns 0-d scalars into 1-d
    with _NpyStream(zf, name, arr.dtype, arr.shape) as w:
        w.write(arr)


class _NpyStream:
    """Write one ``name.npy`` member into an open zip in pieces (C order), checking the byte count."""

    def __init__(self, zf: zipfile.ZipFile, name: str, dtype: Any, shape: tuple[int, ...]) -> None:
        self._zf, self._name = zf, name
        self._dtype, self._shape = np.dtype(dtype), tuple(int(x) for x in shape)
        self._expected = int(np.prod(self._shape, dtype=np.int64)) * self._dtype.itemsize
        self._written = 0

    def __enter__(self) -> _NpyStream:
        self._fh = self._zf.open(self._name + ".npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False, "shape": self._shape}
        np.lib.format.write_array_header_1_0(self._fh, header)
        return self

    def write(self, block: np.ndarray) -> None:
        data = np.asarray(block, dtype=self._dtype, order="C")
        self._fh.write(data.tobytes())
        self._written += data.nbytes

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._fh.close()
        if exc_type is None and self._written != self._expected:
            raise RuntimeError(f"{self._name}: wrote {self._written} bytes, expected {self._expected}")
