"""Article coherence: how smoothly an article's chunk embeddings move from one chunk to the next.

coherence(article) = mean over i of cos(v_i, v_{i+1}) for consecutive chunks (rows are unit vectors, so
the cosine is a dot product). Quantile bins of coherence drive the stratified split, so that val/ood see
the same mix of smooth and jumpy articles as train (the reference project's generalisation failure came
from splits that differed in exactly this).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from lvm_core.contracts.errors import DataContractError
from lvm_core.data.chunk_layout import check_chunk_order
from lvm_core.io.storage import atomic_path
from lvm_core.io.vectors import float32_rows

COHERENCE_SCHEMA: dict[str, type[pl.DataType]] = {
    "article_id": pl.Int64,
    "n_chunks": pl.Int32,
    "coherence": pl.Float64,
    "coherence_std": pl.Float64,
}


def consecutive_cosines(vectors: np.ndarray, block: int = 1 << 14) -> np.ndarray:
    """cos(v_i, v_{i+1}) for every pair of adjacent rows, (n-1,) float64.

    Works in row blocks so that a memory-mapped matrix is streamed once and no (n, D) temporary exists;
    the pages of each block are released after use, so the process never holds the file.
    """
    n = vectors.shape[0]
    out = np.empty(max(n - 1, 0), dtype=np.float64)
    for s in range(0, n - 1, block):
        e = min(s + block, n - 1)
        slab = float32_rows(vectors, slice(s, e + 1))  # e-s+1 rows: pairs s..e-1; read from the file, not mapped
        out[s:e] = np.einsum("ij,ij->i", slab[:-1], slab[1:])  # float32 dot, stored as float64
    return out


def article_coherence(
    vectors: np.ndarray, article_ids: np.ndarray, chunk_index: np.ndarray, block: int = 1 << 14
) -> pl.DataFrame:
    """Per-article coherence in dataset order (vectors streamed in row blocks: a memory-mapped float32 or
    float16 matrix is read once, cast to float32 one block at a time).

    Columns: article_id, n_chunks, coherence (mean consecutive cosine; null when n_chunks < 2),
    coherence_std (population std of those cosines; 0.0 for a 2-chunk article, null when n_chunks < 2).
    Rows must be grouped by article with chunk_index 0..n-1 (DataContractError otherwise).
    """
    if vectors.ndim != 2:
        raise DataContractError(f"vectors must be 2-D (n, D), got shape {vectors.shape}")
    if vectors.shape[0] != len(article_ids):
        raise DataContractError(
            f"vectors has {vectors.shape[0]} rows but article_ids has {len(article_ids)}: not aligned"
        )
    runs = check_chunk_order(article_ids, chunk_index)
    n_articles = runs.article_ids.shape[0]
    if n_articles == 0:
        return pl.DataFrame(schema=COHERENCE_SCHEMA)

    cos = consecutive_cosines(vectors, block)
    # pair (i, i+1) belongs to an article iff row i+1 is not the start of a new article
    run_of_row = np.repeat(np.arange(n_articles), runs.lengths)
    within = ~runs.is_start[1:]
    pair_run = run_of_row[:-1][within]
    pair_cos = cos[within]
    n_pairs = runs.lengths - 1
    sums = np.bincount(pair_run, weights=pair_cos, minlength=n_articles)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / n_pairs
        dev2 = np.bincount(pair_run, weights=(pair_cos - mean[pair_run]) ** 2, minlength=n_articles)
        std = np.sqrt(dev2 / n_pairs)
    has_pairs = n_pairs > 0
    return pl.DataFrame(
        {
            "article_id": runs.article_ids.astype(np.int64),
            "n_chunks": runs.lengths.astype(np.int32),
            "coherence": pl.Series(np.where(has_pairs, mean, np.nan)).fill_nan(None),
            "coherence_std": pl.Series(np.where(has_pairs, std, np.nan)).fill_nan(None),
        },
        schema=COHERENCE_SCHEMA,
    )


def assign_bins(
    coh: pl.DataFrame, n_bins: int = 5, min_chunks: int = 6
) -> tuple[pl.DataFrame, list[float]]:
    """Quantile bins of coherence over eligible articles; adds ``coherence_bin`` (Int32).

    Eligible: ``n_chunks >= min_chunks`` (pass ``context_len + 1``: long enough for one window) and
    non-null coherence; other articles get a null bin. Edges are the 0, 1/k, ..., 1 quantiles of the
    eligible coherences; a value equal to an inner edge goes to the upper bin and the maximum to the last.
    Fewer bins than ``n_bins`` result when there are fewer eligible articles than bins (one bin per
    article at most) or when ties make quantile edges coincide or leave a bin empty: duplicate edges
    are merged and empty bins dropped, so bins are 0..k-1 and all non-empty. Returns (frame, edges)
    with ``len(edges) == k + 1`` (``[]`` when no article is eligible). Deterministic.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if min_chunks < 2:
        raise ValueError(f"min_chunks must be >= 2 (coherence needs two chunks), got {min_chunks}")
    for col in ("article_id", "n_chunks", "coherence"):
        if col not in coh.columns:
            raise DataContractError(f"coherence frame lacks column {col!r} (has {coh.columns})")
    eligible = (coh["n_chunks"] >= min_chunks) & coh["coherence"].is_not_null()
    eligible_np = eligible.to_numpy()
    values = coh["coherence"].to_numpy()[eligible_np].astype(np.float64)
    n_eligible = values.shape[0]
    bins = np.full(coh.height, -1, dtype=np.int64)
    if n_eligible == 0:
        edges: np.ndarray = np.empty(0)
    else:
        k = min(n_bins, n_eligible)
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, k + 1)))
        if edges.shape[0] == 1:  # all values equal
            edges = np.array([edges[0], edges[0]])
        while True:
            b = np.searchsorted(edges[1:-1], values, side="right")
            counts = np.bincount(b, minlength=edges.shape[0] - 1)
            empty = np.flatnonzero(counts == 0)
            if empty.size == 0:
                break
            j = int(empty[0])
            # merge the empty bin into a neighbour by dropping one of its inner edges
            drop = j + 1 if j + 1 < edges.shape[0] - 1 else j
            edges = np.delete(edges, drop)
        bins[eligible_np] = b
    out = coh.with_columns(
        pl.Series("coherence_bin", bins).cast(pl.Int32).replace(-1, None)
    )
    return out, [float(x) for x in edges]


def plot_coherence_histogram(
    coh: pl.DataFrame, edges: list[float], path: Path, title: str = "Article coherence"
) -> Path:
    """PNG histogram of article coherence with the bin edges as vertical lines (written atomically)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

    values = coh["coherence"].drop_nulls().to_numpy()
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    if values.size:
        ax.hist(values, bins=min(50, max(10, values.size // 5)), color="#4C72B0", alpha=0.85)
    for i, x in enumerate(edges):
        ax.axvline(x, color="#C44E52", linestyle="--", linewidth=1, label="bin edges" if i == 0 else None)
    ax.set_xlabel("coherence: mean cos(chunk i, chunk i+1)")
    ax.set_ylabel("articles")
    mean = float(values.mean()) if values.size else float("nan")
    ax.set_title(f"{title} (n={values.size}, mean={mean:.3f})")
    if edges:
        ax.legend(loc="upper left")
    fig.tight_layout()
    return _save_figure(fig, Path(path))


def coherence_drift(coh_a: pl.DataFrame, coh_b: pl.DataFrame, min_chunks: int = 2) -> dict[str, Any]:
    """Compare the coherence distributions of two builds (e.g. two snapshots): means and two-sample KS.

    Only articles with ``n_chunks >= min_chunks`` and a coherence value count. KS fields are None when
    either side is empty.
    """
    a = _coherence_values(coh_a, min_chunks)
    b = _coherence_values(coh_b, min_chunks)
    mean_a = float(a.mean()) if a.size else None
    mean_b = float(b.mean()) if b.size else None
    out: dict[str, Any] = {
        "n_a": int(a.size),
        "n_b": int(b.size),
        "mean_a": mean_a,
        "mean_b": mean_b,
        "mean_diff": (mean_b - mean_a) if mean_a is not None and mean_b is not None else None,
        "ks_statistic": None,
        "ks_pvalue": None,
    }
    if a.size and b.size:
        res = stats.ks_2samp(a, b)
        out["ks_statistic"] = float(res.statistic)
        out["ks_pvalue"] = float(res.pvalue)
    return out


def plot_coherence_drift(
    coh_a: pl.DataFrame,
    coh_b: pl.DataFrame,
    path: Path,
    labels: tuple[str, str] = ("a", "b"),
    title: str = "Coherence drift",
    min_chunks: int = 2,
) -> Path:
    """Overlaid density histograms of two builds' coherence, with the KS statistic in the title."""
    from matplotlib.figure import Figure

    a = _coherence_values(coh_a, min_chunks)
    b = _coherence_values(coh_b, min_chunks)
    drift = coherence_drift(coh_a, coh_b, min_chunks)
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    both = np.concatenate([a, b])
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            hi = lo + 1e-6
        grid = np.linspace(lo, hi, 41)
        for vals, label, color in ((a, labels[0], "#4C72B0"), (b, labels[1], "#DD8452")):
            if vals.size:
                # matplotlib's stub leaves arrays out of `bins`
                ax.hist(
                    vals, bins=grid, density=True, alpha=0.5, color=color, label=f"{label} (n={vals.size})"  # type: ignore[arg-type]
                )
        ax.legend(loc="upper left")
    ks = drift["ks_statistic"]
    ax.set_title(f"{title}" + (f" (KS={ks:.3f}, mean diff={drift['mean_diff']:+.3f})" if ks is not None else ""))
    ax.set_xlabel("coherence")
    ax.set_ylabel("density")
    fig.tight_layout()
    return _save_figure(fig, Path(path))


def _coherence_values(coh: pl.DataFrame, min_chunks: int) -> np.ndarray:
    sel = coh.filter((pl.col("n_chunks") >= min_chunks) & pl.col("coherence").is_not_null())
    return sel["coherence"].to_numpy().astype(np.float64)


def _save_figure(fig: Any, path: Path) -> Path:
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt)
    return path
