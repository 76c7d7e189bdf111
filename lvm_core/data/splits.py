"""Article-level train/val/ood splits, stratified by coherence bin or held out by ranges/titles.

Splitting is by article, never by window, so no article's text is on both sides. Modes:

- ``stratified`` (default): within each coherence bin a seeded shuffle assigns train/val/ood by the
  fractions (largest-remainder rounding per bin), so every split sees the same coherence mix.
- ``ranges``: ``ood_ranges`` (and optionally ``val_ranges``) are inclusive ranges of article ORDINALS,
  positions 0..n_articles-1 in dataset order, like the reference project's
  ``--exclude-articles 1500-1999,4000-4499,7672-8470``. Without ``val_ranges`` val is drawn stratified
  from the remaining articles with the val fraction renormalised to val / (train + val).
- ``titles``: articles whose title matches any ``holdout_titles`` regex (``re.search``) go to ood; val
  is drawn stratified from the rest as in ``ranges``.

Articles with a null bin (too short for a window) go to train in the stratified draw: they contribute no
windows, but their chunks belong to the retrieval bank.

This is a family's first build. Later builds follow the family's split registry
(:mod:`lvm_core.data.split_registry`), which draws only the new articles with these same pieces
(:func:`explicit_assignment`, :func:`stratified_draw`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import stats

from lvm_core.contracts.errors import DataContractError
from lvm_core.contracts.layout import DEFAULT_FRACTIONS, DEFAULT_SPLIT_SEED, SPLIT_NAMES, SPLITS_SCHEMA, split_fractions

SplitMode = Literal["stratified", "ranges", "titles"]
_MODES = ("stratified", "ranges", "titles")
_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_ranges(spec: str) -> list[tuple[int, int]]:
    """Parse ``"1500-1999,4000-4499,17"`` into inclusive (start, end) pairs; overlaps are allowed.

    Raises ValueError naming the bad part for malformed specs (``"12-5"``, ``"a-b"``, empty parts,
    negative numbers).
    """
    if spec is None or not str(spec).strip():
        raise ValueError("empty range spec: expected e.g. '1500-1999,4000-4499'")
    out: list[tuple[int, int]] = []
    for part in str(spec).split(","):
        m = _RANGE_RE.match(part)
        if not part.strip() or m is None:
            raise ValueError(f"malformed range {part.strip()!r} in {spec!r}: expected START-END or N (integers)")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        if start < 0 or end < 0:
            raise ValueError(f"malformed range {part.strip()!r} in {spec!r}: negative numbers are not allowed")
        if end < start:
            raise ValueError(f"malformed range {part.strip()!r} in {spec!r}: end {end} is before start {start}")
        out.append((start, end))
    return out


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{b}" for a, b in ranges)


def ranges_mask(values: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Boolean mask of ``values`` inside any inclusive range."""
    values = np.asarray(values)
    mask = np.zeros(values.shape, dtype=bool)
    for a, b in ranges:
        mask |= (values >= a) & (values <= b)
    return mask


@dataclass(frozen=True)
class SplitConfig:
    """How articles are split; validated on construction (ValueError with the offending value)."""

    mode: SplitMode = "stratified"
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS  # train, val, test, ood
    seed: int = DEFAULT_SPLIT_SEED
    ood_ranges: str | None = None
    val_ranges: str | None = None
    holdout_titles: Sequence[str] | None = None  # stored as a tuple so the config stays hashable

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"unknown split mode {self.mode!r}: expected one of {', '.join(_MODES)}")
        fr = split_fractions(self.fractions)
        for name, x in zip(SPLIT_NAMES, fr):
            if not (0.0 <= x <= 1.0) or math.isnan(x):
                raise ValueError(f"split fraction {name}={x:g} must be in [0, 1] (fractions {fr})")
        total = sum(fr)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"split fractions sum to {total:g}, must be 1 (train, val, test, ood = {fr})")
        object.__setattr__(self, "fractions", fr)
        if self.holdout_titles is not None:
            if isinstance(self.holdout_titles, str):
                raise ValueError("holdout_titles must be a list of regex patterns, not one string")
            object.__setattr__(self, "holdout_titles", tuple(str(p) for p in self.holdout_titles))
        if self.ood_ranges is not None:
            parse_ranges(self.ood_ranges)
        if self.val_ranges is not None:
            parse_ranges(self.val_ranges)
        if self.mode == "ranges" and not self.ood_ranges:
            raise ValueError("split mode 'ranges' needs ood_ranges (e.g. '1500-1999,4000-4499')")
        if self.mode == "titles":
            if not self.holdout_titles:
                raise ValueError("split mode 'titles' needs holdout_titles (regex patterns)")
            for pat in self.holdout_titles:
                try:
                    re.compile(pat)
                except re.error as exc:
                    raise ValueError(f"invalid holdout_titles pattern {pat!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fractions"] = list(self.fractions)
        d["holdout_titles"] = list(self.holdout_titles) if self.holdout_titles is not None else None
        return d


def split_articles(
    coh_binned: pl.DataFrame, config: SplitConfig, titles: pl.Series | None = None
) -> pl.DataFrame:
    """Assign each article to train/val/test/ood; returns a frame with SPLITS_SCHEMA columns in input order.

    ``coh_binned`` is :func:`lvm_core.data.coherence.assign_bins` output in dataset order (row position =
    article ordinal for ``ranges`` mode). ``titles`` (titles mode) is aligned with its rows.
    Deterministic for a given seed and input; the draw within a bin depends on the article ids, not on
    row order.
    """
    ids, bins = split_inputs(coh_binned)
    assign, pool, fracs = explicit_assignment(ids.shape[0], config, titles)
    if pool.any():
        assign[pool] = stratified_draw(ids[pool], bins[pool], fracs, config.seed)
    return split_frame(coh_binned, assign)


def split_inputs(coh_binned: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The article ids and coherence bins (-1 for none) of a split input; refuses missing columns and repeated ids."""
    for col in ("article_id", "n_chunks", "coherence", "coherence_bin"):
        if col not in coh_binned.columns:
            raise DataContractError(f"split input lacks column {col!r} (has {coh_binned.columns})")
    ids = coh_binned["article_id"].to_numpy().astype(np.int64)
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise DataContractError("split input has duplicate article_id rows")
    return ids, coh_binned["coherence_bin"].fill_null(-1).to_numpy().astype(np.int64)


def explicit_assignment(
    n: int, config: SplitConfig, titles: pl.Series | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the mode decides by itself (ood ranges / titles, val ranges) as split names ("" elsewhere), the
    pool of articles left to the stratified draw and the fractions of that draw."""
    assign = np.full(n, "", dtype=object)
    if config.mode == "stratified":
        return assign, np.ones(n, dtype=bool), np.array(config.fractions, dtype=np.float64)
    if config.mode == "ranges":
        pool, fracs = _assign_ranges(assign, config)
    else:  # titles
        pool, fracs = _assign_titles(assign, config, titles)
    return assign, pool, fracs


def split_frame(coh_binned: pl.DataFrame, assign: np.ndarray) -> pl.DataFrame:
    """The split frame (SPLITS_SCHEMA columns, input order) of the articles of ``coh_binned`` and their splits."""
    out = coh_binned.select("article_id", "n_chunks", "coherence", "coherence_bin").with_columns(
        pl.Series("split", np.asarray(assign).astype(str), dtype=pl.Utf8)
    )
    return out.select(
        pl.col("article_id").cast(pl.Int64),
        pl.col("split"),
        pl.col("n_chunks").cast(pl.Int32),
        pl.col("coherence").cast(pl.Float64),
        pl.col("coherence_bin").cast(pl.Int32),
    )


def _assign_ranges(assign: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Ranges mode: article ordinals in `ood_ranges` (and `val_ranges`) are assigned in place.

    Returns the pool left to the stratified draw and its fractions.
    """
    n = assign.shape[0]
    train_f, val_f, test_f, _ = config.fractions
    ood_r = parse_ranges(config.ood_ranges or "")
    _check_ordinal_ranges(ood_r, n)
    ordinals = np.arange(n)
    ood = ranges_mask(ordinals, ood_r)
    assign[ood] = "ood"
    pool = ~ood
    if not config.val_ranges:
        return pool, _renormalised(train_f, val_f, test_f)
    val_r = parse_ranges(config.val_ranges)
    _check_ordinal_ranges(val_r, n)
    val = ranges_mask(ordinals, val_r)
    both = np.flatnonzero(val & ood)
    if both.size:
        raise ValueError(
            f"article ordinal {int(both[0])} is in both val_ranges {config.val_ranges!r} "
            f"and ood_ranges {config.ood_ranges!r}"
        )
    assign[val] = "val"
    pool &= ~val
    return pool, _renormalised(train_f, 0.0, test_f)  # the rest: train and test


def _assign_titles(
    assign: np.ndarray, config: SplitConfig, titles: pl.Series | None
) -> tuple[np.ndarray, np.ndarray]:
    """Titles mode: articles whose title matches a `holdout_titles` pattern go to ood, in place.

    Returns the pool left to the stratified draw and its fractions.
    """
    n = assign.shape[0]
    train_f, val_f, test_f, _ = config.fractions
    if titles is None:
        raise ValueError("split mode 'titles' needs the article titles (titles=...)")
    if len(titles) != n:
        raise DataContractError(f"titles has {len(titles)} rows but the split input has {n} articles")
    # Python `re` (not polars' Rust regex) so patterns mean what SplitConfig validated
    patterns = [re.compile(p) for p in config.holdout_titles or []]
    held = np.array(
        [t is not None and any(p.search(t) for p in patterns) for t in pl.Series(titles).cast(pl.Utf8).to_list()],
        dtype=bool,
    )
    assign[held] = "ood"
    return ~held, _renormalised(train_f, val_f, test_f)


def splits_table(splits: pl.DataFrame) -> pa.Table:
    """The splits frame as an Arrow table with exactly ``contracts.SPLITS_SCHEMA`` (for splits.parquet)."""
    cols = [f.name for f in SPLITS_SCHEMA]
    missing = [c for c in cols if c not in splits.columns]
    if missing:
        raise DataContractError(f"splits frame lacks column(s) {', '.join(missing)}")
    for c in ("article_id", "split", "n_chunks"):
        if splits[c].null_count():
            raise DataContractError(f"splits column {c!r} has nulls")
    return splits.select(cols).to_arrow().cast(SPLITS_SCHEMA)


def split_report(splits: pl.DataFrame, config: SplitConfig) -> dict[str, Any]:
    """The split manifest (splits.json): counts, coherence parity vs train, config and a content hash.

    Coherence statistics use the binned articles (those long enough for a window): those are the
    articles whose windows train and evaluate the model, and the ones the stratification balances.
    ``content_hash`` is sha256 over ``"article_id\\tsplit\\n"`` lines sorted by article id.
    """
    per_split: dict[str, Any] = {}
    binned = _binned(splits)
    parity = coherence_parity(splits)
    for name in SPLIT_NAMES:
        part = splits.filter(pl.col("split") == name)
        vals = binned.filter(pl.col("split") == name)["coherence"].to_numpy().astype(np.float64)
        entry: dict[str, Any] = {
            "articles": part.height,
            "chunks": int(part["n_chunks"].sum()) if part.height else 0,
            "articles_binned": int(vals.size),
            "coherence_mean": float(vals.mean()) if vals.size else None,
            "coherence_std": float(vals.std()) if vals.size else None,
        }
        if name != "train":
            p = parity[name]
            entry["mean_diff_vs_train"] = p["mean_diff"]
            entry["ks_statistic_vs_train"] = p["ks"]
            entry["ks_pvalue_vs_train"] = p["ks_pvalue"]
        per_split[name] = entry
    per_bin: dict[str, dict[str, int]] = {}
    if binned.height:
        counts = binned.group_by("coherence_bin", "split").len().sort("coherence_bin")
        for row in counts.iter_rows(named=True):
            per_bin.setdefault(str(row["coherence_bin"]), {s: 0 for s in SPLIT_NAMES})[row["split"]] = int(row["len"])
    unknown = set(splits["split"].unique().to_list()) - set(SPLIT_NAMES)
    if unknown:
        raise DataContractError(f"splits contain unknown split name(s): {sorted(unknown)}")
    return {
        "mode": config.mode,
        # what `ood` is: a real shift (held-out ranges or titles) or, stratified, a second in-distribution sample
        "ood_kind": "in_distribution" if config.mode == "stratified" else "shift",
        "seed": config.seed,
        "fractions": dict(zip(SPLIT_NAMES, config.fractions)),
        "ood_ranges": config.ood_ranges,
        "val_ranges": config.val_ranges,
        "holdout_titles": list(config.holdout_titles) if config.holdout_titles is not None else None,
        "n_articles": splits.height,
        "splits": per_split,
        "per_bin": per_bin,
        "content_hash": splits_content_hash(splits),
    }


def _binned(splits: pl.DataFrame) -> pl.DataFrame:
    """The articles long enough for a window (a bin and a coherence): the ones parity compares."""
    return splits.filter(pl.col("coherence_bin").is_not_null() & pl.col("coherence").is_not_null())


def coherence_parity(splits: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per evaluation split: KS statistic (and p-value) and mean difference of article coherence against train.

    `splits` has SPLITS_SCHEMA columns; the build passes the articles that still have windows after the
    purge (what is gated), `lvm check` recomputes the same from the folder's files.
    """
    binned = _binned(splits)
    train = binned.filter(pl.col("split") == "train")["coherence"].to_numpy().astype(np.float64)
    out: dict[str, dict[str, float | None]] = {}
    for name in (s for s in SPLIT_NAMES if s != "train"):
        vals = binned.filter(pl.col("split") == name)["coherence"].to_numpy().astype(np.float64)
        entry: dict[str, float | None] = {"ks": None, "mean_diff": None, "ks_pvalue": None}
        if vals.size and train.size:
            ks = stats.ks_2samp(vals, train)
            entry = {"ks": float(ks.statistic), "mean_diff": float(vals.mean() - train.mean()),
                     "ks_pvalue": float(ks.pvalue)}
        out[name] = entry
    return out


def splits_content_hash(splits: pl.DataFrame) -> str:
    """sha256 of the sorted (article_id, split) pairs: identical assignments give identical hashes."""
    pairs = splits.select("article_id", "split").sort("article_id")
    h = hashlib.sha256()
    for aid, split in pairs.iter_rows():
        h.update(f"{aid}\t{split}\n".encode())
    return h.hexdigest()


# --- internals -------------------------------------------------------------------------------------


def _renormalised(train_f: float, val_f: float, test_f: float) -> np.ndarray:
    """Fractions for drawing val and test from the non-ood rest: (train, val, test, 0) scaled to sum 1."""
    total = train_f + val_f + test_f
    if total <= 0:
        return np.array([1.0, 0.0, 0.0, 0.0])
    return np.array([train_f / total, val_f / total, test_f / total, 0.0])


def _check_ordinal_ranges(ranges: list[tuple[int, int]], n_articles: int) -> None:
    for a, b in ranges:
        if b >= n_articles:
            raise ValueError(
                f"unknown article range {a}-{b}: dataset has {n_articles} articles "
                f"(ordinals 0-{n_articles - 1})"
            )


def stratified_draw(ids: np.ndarray, bins: np.ndarray, fracs: np.ndarray, seed: int) -> np.ndarray:
    """Per-bin seeded shuffle -> split names; null bins (-1) go to train.

    Counts follow the fractions of the *running total* over bins (rounded half up), so each bin keeps
    its share and small bins still add up to held-out articles overall: 14 articles in 5 bins of 2-3
    get val, test and ood articles instead of none (per-bin rounding would give every small bin to train).
    """
    names = np.array(SPLIT_NAMES, dtype=object)
    out = np.full(ids.shape[0], "train", dtype=object)
    k = len(SPLIT_NAMES)
    given = np.zeros(k, dtype=np.int64)
    seen = 0
    for b in np.unique(bins[bins >= 0]):
        rows = np.flatnonzero(bins == b)
        rows = rows[np.argsort(ids[rows], kind="stable")]  # order-independent of input row order
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(b)])
        rows = rows[rng.permutation(rows.shape[0])]
        n = rows.shape[0]
        seen += n
        # held-out articles so far follow round-half-up of the running total; each one goes to the
        # held-out split furthest behind its own running target (the first such split on ties)
        held = min(int(np.floor(seen * fracs[1:].sum() + 0.5)) - int(given[1:].sum()), n)
        want = np.zeros(k, dtype=np.int64)
        for _ in range(max(held, 0)):
            behind = np.where(fracs[1:] > 0, seen * fracs[1:] - (given[1:] + want[1:]), -np.inf)
            want[1 + int(np.argmax(behind))] += 1
        want[0] = n - want[1:].sum()
        given += want
        out[rows] = np.repeat(names, want)
    return out
