"""Compact per-row summaries of a built dataset folder, the frames the pre-training suites validate.

No frame holds vector components: `vectors` has one norm and one finiteness flag per embedding row,
so validating a million-chunk dataset stays cheap. Files are read directly (pyarrow, numpy with
``allow_pickle=False``) so the gates do not depend on the code that built the folder.

Frames (name -> columns):

- ``chunks``: chunk_id, article_id, chunk_index, n_words, text_chars (length of the stripped text).
- ``vectors``: norm (L2, float64; NaN when the row is not finite), is_finite — one row per embedding row.
- ``vector_meta`` (one row): ndim, dim, expected_dim (``encoder.json`` "dim"), dtype, expected_dtype
  (``encoder.json`` "vector_dtype", float32 when absent), n_rows, n_chunks.
- ``article_chunks``: per article in chunks.parquet: n_chunks, min_index, max_index, n_distinct_index,
  span (max - min + 1), rows_in_order (its rows form one block in chunk_index order), in_articles
  (the article id is in articles.parquet).
- ``article_splits``: per article in splits.parquet or in the sequences: n_splits (distinct splits over
  both sources), n_split_rows (rows in splits.parquet), in_split_table, splits (comma-joined names).
- ``eval_splits``: one row per evaluation split present (val/test/ood with windows, raw leaking rows or
  purged windows): raw (pre-purge) text-hash and near-duplicate rates and the purged-window fraction
  (purged / windows before the purge, windows counted in sequences.npz); see EVAL_SPLITS_COLUMNS.
  These, not the post-purge remainder (0 by construction), are what the leakage gates read.
- ``dataset_metrics`` (one row): see DATASET_METRICS_COLUMNS.

Manifest keys read (all required; a missing key, a wrong type, unreadable JSON or a count that does not
match the files is a manifest problem that fails the ``manifest_consistent`` gate instead of raising):

- ``counts.articles`` (int) == rows of articles.parquet
- ``counts.chunks`` (int) == rows of chunks.parquet
- ``sequences.{train,val,ood}`` (int) == length of ``{split}_target_rows`` in sequences.npz
- ``leakage.article_overlap`` (int), ``leakage.text_hash_overlap.rate`` (float),
  ``leakage.near_duplicates.rate`` (float) — post-purge values, recorded
- per evaluation split present: ``leakage_raw.rows.<split>``, ``leakage_raw.text_hash_overlap.<split>``,
  ``leakage_raw.near_duplicates.<split>``, ``purged_windows.<split>`` (int); ``leakage_raw.article_overlap``;
  ``windows_before_purge.<split>`` when recorded must equal the windows in sequences.npz + purged
- ``crossing_windows`` (int) == the count recomputed here from sequences.npz and chunks.parquet
  (same definition as `lvm_core.data.windows.count_crossing_windows`, computed independently)
- split parity, KS statistic and mean coherence difference of val and ood vs train (float; the mean
  difference may be signed, its absolute value is gated), read from ``splits`` in one of two shapes:
  ``splits.parity.{val,ood}.{ks,mean_diff}`` or, as `lvm_core.data.splits.split_report` writes splits.json,
  ``splits.splits.{val,ood}.{ks_statistic_vs_train,mean_diff_vs_train}``. It must equal the parity in
  splits.json (either shape). The builder writes ``splits.parity`` measured after the leakage purge
  (the articles that still have windows), with ``splits.parity_before_purge`` beside it.
- ``oracle_recall_at_5`` (float)

Data files that are missing or unreadable (chunks, embeddings, articles, splits, sequences) raise
`DataContractError` naming the file: without them no gate can be evaluated.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lvm_core.contracts.layout import EVAL_SPLITS, SPLIT_NAMES, DatasetPaths, DEFAULT_VECTOR_DTYPE, VECTOR_DTYPE_KEY
from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.manifest import DatasetManifest

FRAME_NAMES: tuple[str, ...] = (
    "chunks",
    "vectors",
    "vector_meta",
    "article_chunks",
    "article_splits",
    "eval_splits",
    "dataset_metrics",
)

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

DATASET_METRICS_COLUMNS: tuple[str, ...] = (
    "article_overlap",  # max of manifest leakage_raw.article_overlap and leakage.article_overlap
    "text_hash_overlap_rate",  # manifest leakage.text_hash_overlap.rate, after the purge: recorded, not gated
    "near_duplicate_rate",  # manifest leakage.near_duplicates.rate, after the purge: recorded, not gated
    "crossing_windows",  # recomputed
    "misaligned_windows",  # recomputed: out-of-range rows, wrong recorded article/target index, bad arrays
    "sequence_problems",  # text describing misaligned windows / malformed arrays
    "ks_val",
    "ks_test",  # null for datasets built before the test split
    "ks_ood",
    "abs_mean_diff_val",
    "abs_mean_diff_test",
    "abs_mean_diff_ood",
    "oracle_recall_at_5",
    "n_manifest_problems",
    "manifest_problems",  # text, "; "-joined
)

_BLOCK_ROWS = 1 << 16  # embedding rows per norm block: bounded memory on large datasets
_PARITY_TOL = 1e-9
_EVAL_SPLITS: tuple[str, ...] = EVAL_SPLITS


def build_gate_frames(dataset_dir: Path, manifest: DatasetManifest | dict[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """Frames the pre-training suites validate, keyed by FRAME_NAMES.

    `manifest` is the manifest as the build holds it; None reads ``manifest.json`` from the folder.
    When a manifest is given and ``manifest.json`` also exists, the file must still parse.
    """
    paths = DatasetPaths(Path(dataset_dir))
    problems: list[str] = []
    manifest = _resolve_manifest(paths, manifest, problems)

    chunks = _read_chunks(paths.chunks)
    article_ids = _read_article_ids(paths.articles)
    splits_table = _read_splits(paths.splits)
    sequences = _read_sequences(paths.sequences)

    chunk_article = chunks["article_id"].to_numpy(dtype=np.int64)
    chunk_index = chunks["chunk_index"].to_numpy(dtype=np.int64)

    vectors, vector_meta = _vector_frames(paths, n_chunks=len(chunks))
    windows = _check_windows(sequences, chunk_article, chunk_index)
    parity = _parity_from_manifest(manifest, problems)
    _check_manifest(manifest, paths, problems, len(article_ids), len(chunks), windows, parity)
    eval_splits = _eval_splits(manifest, windows, problems)

    leak = _get(manifest, "leakage")
    metrics = {
        "article_overlap": max(
            _num(_get(leak, "article_overlap")), _num(_path(manifest, "leakage_raw", "article_overlap")),
            key=lambda x: math.inf if math.isnan(x) else x,
        ),
        "text_hash_overlap_rate": _num(_get(_get(leak, "text_hash_overlap"), "rate")),
        "near_duplicate_rate": _num(_get(_get(leak, "near_duplicates"), "rate")),
        "crossing_windows": windows["crossing"],
        "misaligned_windows": windows["misaligned"],
        "sequence_problems": "; ".join(windows["problems"]),
        "ks_val": _num(_get(parity.get("val"), "ks")),
        "ks_test": _num(_get(parity.get("test"), "ks")),
        "ks_ood": _num(_get(parity.get("ood"), "ks")),
        "abs_mean_diff_val": abs(_num(_get(parity.get("val"), "mean_diff"))),
        "abs_mean_diff_test": abs(_num(_get(parity.get("test"), "mean_diff"))),
        "abs_mean_diff_ood": abs(_num(_get(parity.get("ood"), "mean_diff"))),
        "oracle_recall_at_5": _num(_get(manifest, "oracle_recall_at_5")),
        "n_manifest_problems": len(problems),
        "manifest_problems": "; ".join(problems),
    }
    return {
        "chunks": chunks,
        "vectors": vectors,
        "vector_meta": vector_meta,
        "article_chunks": _article_chunks(chunks, article_ids),
        "article_splits": _article_splits(splits_table, sequences),
        "eval_splits": eval_splits,
        "dataset_metrics": pd.DataFrame([metrics], columns=list(DATASET_METRICS_COLUMNS)),
    }


# --- file readers ----------------------------------------------------------------------------------


def _require(path: Path) -> None:
    if not path.is_file():
        raise DataContractError(f"{path}: required dataset file is missing")


def _read_chunks(path: Path) -> pd.DataFrame:
    """chunk rows without their text: the text is reduced to its stripped length."""
    _require(path)
    cols = ["chunk_id", "article_id", "chunk_index", "text", "n_words"]
    try:
        table = pq.read_table(path, columns=cols)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read columns {cols}: {exc}") from exc
    text_chars = pc.utf8_length(pc.utf8_trim_whitespace(table["text"]))
    return pd.DataFrame(
        {
            "chunk_id": table["chunk_id"].to_pandas(),
            "article_id": table["article_id"].to_numpy().astype(np.int64),
            "chunk_index": table["chunk_index"].to_numpy().astype(np.int64),
            "n_words": table["n_words"].to_numpy().astype(np.int64),
            "text_chars": text_chars.to_numpy(zero_copy_only=False),
        }
    )


def _read_article_ids(path: Path) -> np.ndarray:
    _require(path)
    try:
        return pq.read_table(path, columns=["article_id"])["article_id"].to_numpy().astype(np.int64)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read column article_id: {exc}") from exc


def _read_splits(path: Path) -> pd.DataFrame:
    _require(path)
    try:
        table = pq.read_table(path, columns=["article_id", "split"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataContractError(f"{path}: cannot read columns article_id, split: {exc}") from exc
    return pd.DataFrame(
        {
            "article_id": table["article_id"].to_numpy().astype(np.int64),
            "split": table["split"].to_pylist(),
        }
    )


def _read_sequences(path: Path) -> dict[str, np.ndarray | str]:
    """Every array of sequences.npz; an array that cannot be loaded becomes its error text."""
    _require(path)
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


def _read_json_file(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is not readable JSON ({exc})"


# --- frames ----------------------------------------------------------------------------------------


def _vector_frames(paths: DatasetPaths, n_chunks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-row norm/finiteness and the one-row shape summary, computed block by block from a mmap."""
    _require(paths.embeddings)
    try:
        emb = np.load(paths.embeddings, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataContractError(f"{paths.embeddings}: cannot load embeddings: {exc}") from exc

    encoder, err = _read_json_file(paths.encoder)
    expected_dim = encoder.get("dim") if isinstance(encoder, dict) and err is None else None
    if isinstance(expected_dim, bool) or not isinstance(expected_dim, int):
        expected_dim = None
    recorded = encoder.get(VECTOR_DTYPE_KEY) if isinstance(encoder, dict) and err is None else None
    expected_dtype = str(recorded) if recorded is not None else DEFAULT_VECTOR_DTYPE

    ndim = int(emb.ndim)
    n_rows = int(emb.shape[0]) if ndim >= 1 else 0
    dim = int(emb.shape[1]) if ndim == 2 else -1
    norms = np.full(n_rows, np.nan, dtype=np.float64)
    finite = np.zeros(n_rows, dtype=bool)
    if ndim == 2 and np.issubdtype(emb.dtype, np.number):
        for start in range(0, n_rows, _BLOCK_ROWS):
            block = np.asarray(emb[start : start + _BLOCK_ROWS], dtype=np.float64)
            ok = np.isfinite(block).all(axis=1)
            with np.errstate(invalid="ignore", over="ignore"):
                row_norms = np.sqrt(np.einsum("ij,ij->i", block, block))
            finite[start : start + len(block)] = ok
            norms[start : start + len(block)] = np.where(ok, row_norms, np.nan)
    vectors = pd.DataFrame({"norm": norms, "is_finite": finite})
    meta = pd.DataFrame(
        [
            {
                "ndim": ndim,
                "dim": dim,
                "expected_dim": float("nan") if expected_dim is None else expected_dim,
                "dtype": str(emb.dtype),
                "expected_dtype": expected_dtype,
                "n_rows": n_rows,
                "n_chunks": int(n_chunks),
            }
        ]
    )
    return vectors, meta


def _article_chunks(chunks: pd.DataFrame, article_ids: np.ndarray) -> pd.DataFrame:
    art = chunks["article_id"].to_numpy()
    idx = chunks["chunk_index"].to_numpy()
    row = np.arange(len(chunks))
    same_as_prev = np.r_[False, art[1:] == art[:-1]]
    # a row breaks the order when it continues its article but its chunk_index does not increase
    breaks = same_as_prev & np.r_[False, idx[1:] <= idx[:-1]]
    frame = pd.DataFrame({"article_id": art, "chunk_index": idx, "row": row, "breaks": breaks})
    g = frame.groupby("article_id", sort=False)
    out = g.agg(
        n_chunks=("chunk_index", "size"),
        min_index=("chunk_index", "min"),
        max_index=("chunk_index", "max"),
        n_distinct_index=("chunk_index", "nunique"),
        first_row=("row", "min"),
        last_row=("row", "max"),
        n_breaks=("breaks", "sum"),
    ).reset_index()
    out["span"] = out["max_index"] - out["min_index"] + 1
    one_block = (out["last_row"] - out["first_row"] + 1) == out["n_chunks"]
    out["rows_in_order"] = one_block & (out["n_breaks"] == 0)
    out["in_articles"] = np.isin(out["article_id"].to_numpy(), article_ids)
    return out[
        ["article_id", "n_chunks", "min_index", "max_index", "n_distinct_index", "span", "rows_in_order", "in_articles"]
    ]


def _article_splits(splits_table: pd.DataFrame, sequences: dict[str, np.ndarray | str]) -> pd.DataFrame:
    parts = [splits_table.assign(source="table")]
    for split in SPLIT_NAMES:
        ids = sequences.get(f"{split}_article_ids")
        if isinstance(ids, np.ndarray) and ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer):
            uniq = np.unique(ids).astype(np.int64)
            parts.append(pd.DataFrame({"article_id": uniq, "split": split, "source": "sequences"}))
    both = pd.concat(parts, ignore_index=True)
    g = both.groupby("article_id", sort=True)
    out = g.agg(
        n_splits=("split", "nunique"),
        splits=("split", lambda s: ",".join(sorted(set(map(str, s))))),
    ).reset_index()
    table_rows = splits_table.groupby("article_id").size()
    out["n_split_rows"] = out["article_id"].map(table_rows).fillna(0).astype(np.int64)
    out["in_split_table"] = out["n_split_rows"] > 0
    return out[["article_id", "n_splits", "n_split_rows", "in_split_table", "splits"]]


def _eval_splits(manifest: dict[str, Any], windows: dict[str, Any], problems: list[str]) -> pd.DataFrame:
    """One row per evaluation split present (windows, raw leaking rows or purged windows): raw leakage
    rates and the purged-window fraction, the numbers DESIGN "Leakage" gates. A present split whose
    manifest numbers are missing gets NaN (failing the gates) and a manifest problem."""
    raw = _get(manifest, "leakage_raw")
    purged_all = _get(manifest, "purged_windows")
    rows_out = []
    for split in (s for s in SPLIT_NAMES if s != "train"):
        after = windows["counts"].get(split) or 0
        n_rows, purged = _path(raw, "rows", split), _get(purged_all, split)
        if not (after or _num(n_rows) > 0 or _num(purged) > 0):
            continue
        text, near = _path(raw, "text_hash_overlap", split), _path(raw, "near_duplicates", split)
        if manifest:
            for key, value in [(f"leakage_raw.rows.{split}", n_rows), (f"leakage_raw.text_hash_overlap.{split}", text),
                               (f"leakage_raw.near_duplicates.{split}", near), (f"purged_windows.{split}", purged)]:
                if value is None:
                    problems.append(f"manifest lacks {key}")
                elif isinstance(value, bool) or not isinstance(value, int):
                    problems.append(f"manifest {key} is not an integer ({value!r})")
        n_rows_f, purged_f = _num(n_rows), _num(purged)
        before = after + purged_f
        recorded = _path(manifest, "windows_before_purge", split)
        if recorded is not None and not math.isnan(before) and recorded != before:
            problems.append(f"manifest windows_before_purge.{split}={recorded} but the files and purged_windows give {int(before)}")
        rows_out.append({
            "split": split,
            "rows": n_rows_f,
            "text_hash_overlap": _num(text),
            "text_hash_overlap_rate": _num(text) / n_rows_f if n_rows_f > 0 else (0.0 if n_rows_f == 0 else math.nan),
            "near_duplicates": _num(near),
            "near_duplicate_rate": _num(near) / n_rows_f if n_rows_f > 0 else (0.0 if n_rows_f == 0 else math.nan),
            "windows": float(after),
            "purged_windows": purged_f,
            "windows_before_purge": before,
            "purged_fraction": purged_f / before if before > 0 else (0.0 if before == 0 else math.nan),
        })
    frame = pd.DataFrame(rows_out, columns=list(EVAL_SPLITS_COLUMNS))
    return frame.astype({c: "float64" for c in EVAL_SPLITS_COLUMNS if c != "split"}).astype({"split": "string"})


# --- sequence windows ------------------------------------------------------------------------------


def _check_windows(
    sequences: dict[str, np.ndarray | str], chunk_article: np.ndarray, chunk_index: np.ndarray
) -> dict[str, Any]:
    """Recount crossing windows from the raw arrays (DESIGN "Sequence").

    A window is sound when all ctx + 1 rows (context, then target) lie in the chunk table, belong to
    the window's recorded article and carry chunk_index t-ctx, ..., t-1, t with t its recorded
    target_chunk_index; every other window is crossing. Misaligned windows, a diagnosis within those,
    have rows outside the table or a target row whose article / chunk_index differs from the record.
    """
    n_chunks = len(chunk_article)
    crossing = misaligned = 0
    problems: list[str] = []
    counts: dict[str, int | None] = {}
    for split in SPLIT_NAMES:
        keys = {
            name: f"{split}_{name}"
            for name in ("context_rows", "target_rows", "article_ids", "target_chunk_index")
        }
        arrays = {name: sequences.get(key) for name, key in keys.items()}
        counts[split] = None
        bad = [
            f"{keys[name]} {'missing' if arr is None else arr if isinstance(arr, str) else 'is not an integer array'}"
            for name, arr in arrays.items()
            if not (isinstance(arr, np.ndarray) and np.issubdtype(arr.dtype, np.integer))
        ]
        if bad:
            problems.extend(bad)
            misaligned += 1
            continue
        ctx_rows = arrays["context_rows"].astype(np.int64)
        target = arrays["target_rows"].astype(np.int64)
        rec_article = arrays["article_ids"].astype(np.int64)
        rec_index = arrays["target_chunk_index"].astype(np.int64)
        n = len(target) if target.ndim == 1 else -1
        shapes_ok = ctx_rows.ndim == 2 and n >= 0 and ctx_rows.shape[0] == n
        if not shapes_ok or rec_article.shape != (n,) or rec_index.shape != (n,):
            problems.append(
                f"{split}: array shapes disagree (context_rows {ctx_rows.shape}, target_rows {target.shape}, "
                f"article_ids {rec_article.shape}, target_chunk_index {rec_index.shape})"
            )
            misaligned += 1
            continue
        counts[split] = n
        if n == 0:
            continue
        ctx = ctx_rows.shape[1]
        rows = np.concatenate([ctx_rows, target[:, None]], axis=1)
        in_range = (rows >= 0) & (rows < n_chunks)
        safe = np.where(in_range, rows, 0)
        same_article = chunk_article[safe] == rec_article[:, None]
        right_index = chunk_index[safe] == rec_index[:, None] + np.arange(-ctx, 1)[None, :]
        crossing += int((~(in_range & same_article & right_index).all(axis=1)).sum())

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
        misaligned += n_out + n_wrong
    return {"crossing": crossing, "misaligned": misaligned, "problems": problems, "counts": counts}


# --- manifest --------------------------------------------------------------------------------------


def _resolve_manifest(paths: DatasetPaths, manifest: Any, problems: list[str]) -> dict[str, Any]:
    # The gates recount the JSON shape on their own, so a typed manifest is taken as the JSON it writes.
    if isinstance(manifest, DatasetManifest):
        manifest = manifest.to_dict()
    if manifest is None:
        data, err = _read_json_file(paths.manifest)
        if err:
            problems.append(err)
            return {}
        manifest = data
    elif paths.manifest.exists():
        _, err = _read_json_file(paths.manifest)
        if err:
            problems.append(err)
    if not isinstance(manifest, dict):
        problems.append(f"manifest is not a JSON object (got {type(manifest).__name__})")
        return {}
    return manifest


def _parity_of(report: Any) -> dict[str, dict[str, Any]] | None:
    """{"val"|"ood": {"ks", "mean_diff"}} from a split report, or None when it carries no parity.

    Two shapes are read: ``parity.{val,ood}.{ks,mean_diff}``, and the per-split entries of
    `lvm_core.data.splits.split_report`, ``splits.{val,ood}.{ks_statistic_vs_train,mean_diff_vs_train}``.
    """
    parity = _get(report, "parity")
    if isinstance(parity, dict):
        return {s: {"ks": _path(parity, s, "ks"), "mean_diff": _path(parity, s, "mean_diff")} for s in _EVAL_SPLITS}
    per_split = _get(report, "splits")
    if isinstance(per_split, dict) and any(isinstance(per_split.get(s), dict) for s in _EVAL_SPLITS):
        return {
            s: {
                "ks": _path(per_split, s, "ks_statistic_vs_train"),
                "mean_diff": _path(per_split, s, "mean_diff_vs_train"),
            }
            for s in _EVAL_SPLITS
        }
    return None


def _parity_from_manifest(manifest: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    parity = _parity_of(_get(manifest, "splits"))
    if parity is None:
        if manifest:
            problems.append(
                "manifest lacks split parity (splits.parity or splits.splits.<split>.ks_statistic_vs_train)"
            )
        return {}
    return parity


def _check_manifest(
    manifest: dict[str, Any],
    paths: DatasetPaths,
    problems: list[str],
    n_articles: int,
    n_chunks: int,
    windows: dict[str, Any],
    parity: dict[str, Any],
) -> None:
    """Append a readable line to `problems` for each missing key or count that disagrees with the files."""
    if not manifest:
        return  # unreadable / not an object: already recorded
    expected_ints: list[tuple[str, Any, int | None]] = [
        ("counts.articles", _path(manifest, "counts", "articles"), n_articles),
        ("counts.chunks", _path(manifest, "counts", "chunks"), n_chunks),
        ("crossing_windows", manifest.get("crossing_windows"), windows["crossing"]),
        ("leakage.article_overlap", _path(manifest, "leakage", "article_overlap"), None),
    ]
    for split in SPLIT_NAMES:
        expected_ints.append((f"sequences.{split}", _path(manifest, "sequences", split), windows["counts"][split]))
    for key, value, actual in expected_ints:
        if value is None:
            problems.append(f"manifest lacks {key}")
        elif isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"manifest {key} is not an integer ({value!r})")
        elif actual is not None and value != actual:
            problems.append(f"manifest {key}={value} but the files give {actual}")

    floats = [
        ("leakage.text_hash_overlap.rate", _path(manifest, "leakage", "text_hash_overlap", "rate")),
        ("leakage.near_duplicates.rate", _path(manifest, "leakage", "near_duplicates", "rate")),
        ("oracle_recall_at_5", manifest.get("oracle_recall_at_5")),
    ]
    for split in _EVAL_SPLITS:
        for field in ("ks", "mean_diff"):
            value = _path(parity, split, field)
            if split == "test" and value is None:
                continue  # a dataset built before the test split
            floats.append((f"split parity {split}.{field}", value))
    for key, value in floats:
        if value is None:
            problems.append(f"manifest lacks {key}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"manifest {key} is not a finite number ({value!r})")

    if parity:
        report, err = _read_json_file(paths.splits_manifest)
        if err:
            problems.append(err)
        elif not _same_parity(parity, _parity_of(report)):
            problems.append(f"manifest split parity differs from the parity in {paths.splits_manifest.name}")


def _same_parity(a: Any, b: Any) -> bool:
    if not isinstance(b, dict):
        return False
    for split in _EVAL_SPLITS:
        for field in ("ks", "mean_diff"):
            x, y = _num(_path(a, split, field)), _num(_path(b, split, field))
            if not (math.isnan(x) and math.isnan(y)) and not abs(x - y) <= _PARITY_TOL:
                return False
    return True


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _path(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = _get(obj, key)
    return obj


def _num(value: Any) -> float:
    """A finite number as float, anything else as NaN (a null that the not-null expectations fail)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")
