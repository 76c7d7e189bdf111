"""Article-level bootstrap intervals for means over windows and for paired deltas of two predictors.

Windows of one article are not independent (neighbouring windows share four of five context chunks), so
resampling windows would make intervals far too narrow. Here the unit of resampling is the ARTICLE: each
resample draws as many articles as there are, with replacement, and takes the mean over all windows of
the drawn articles (an article drawn twice counts twice). The interval is the percentile interval of
those resampled means (default 95 %, 1,000 resamples, seeded, so the same inputs and seed give the
same interval).

A paired delta (model − baseline on the SAME windows) is the bootstrap of the per-window difference with
the same resampled articles for both, so what the two predictors share (hard articles, easy articles)
cancels. The delta of a predictor against itself is exactly 0 in every resample, so its interval is
exactly [0, 0].

With fewer than two articles no interval can be estimated: low and high are NaN (and a NaN lower bound
never passes a gate). Non-finite per-window values (e.g. a window without valid negatives) are left out
of both the numerator and the denominator of its resample's mean.

Pure numpy; nothing here knows about predictors, splits or Prefect.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from lvm_core.contracts.errors import UserError

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
#: Resamples × articles entries of the count matrix generated at once (int32: 64 MiB).
_BLOCK_ENTRIES = 1 << 24


class BootstrapError(UserError, ValueError):
    """Bad input to a bootstrap (misaligned arrays, bad level or resample count)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate (mean over windows, or mean paired delta) with its percentile interval."""

    mean: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL
    n_resamples: int = DEFAULT_RESAMPLES
    n_articles: int = 0
    n_windows: int = 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def excludes(self, value: float = 0.0) -> bool:
        """True when `value` lies outside [low, high] (False when the interval is undefined)."""
        return bool(math.isfinite(self.low) and math.isfinite(self.high) and (value < self.low or value > self.high))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise BootstrapError(f"level must be in (0, 1), got {level}")
    return level


class ArticleBootstrap:
    """Seeded article resamples over one fixed set of windows, shared by every statistic asked of it.

    Every call to `intervals` / `mean` / `delta` replays the same resamples (same seed), so intervals of
    different metrics and predictors on these windows come from identical article draws.
    """

    def __init__(
        self,
        article_ids: np.ndarray,
        n_resamples: int = DEFAULT_RESAMPLES,
        level: float = DEFAULT_LEVEL,
        seed: int = 0,
    ):
        if int(n_resamples) < 1:
            raise BootstrapError(f"n_resamples must be >= 1, got {n_resamples}")
        self.level = _check_level(level)
        self.n_resamples = int(n_resamples)
        self.seed = int(seed)
        aids = np.asarray(article_ids).reshape(-1)
        _, self.codes = np.unique(aids, return_inverse=True)
        self.codes = self.codes.reshape(-1)
        self.n_windows = int(aids.shape[0])
        self.n_articles = int(self.codes.max() + 1) if self.n_windows else 0

    def _count_blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, counts (b, n_articles)) blocks of article draw counts, same sequence every call."""
        rng = np.random.default_rng(self.seed)
        k = self.n_articles
        block = max(1, _BLOCK_ENTRIES // max(k, 1))
        p = np.full(k, 1.0 / k)
        for s in range(0, self.n_resamples, block):
            b = min(block, self.n_resamples - s)
            yield s, rng.multinomial(k, p, size=b).astype(np.float64)

    def _column(self, name: str, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.shape[0] != self.n_windows:
            raise BootstrapError(f"{name}: {v.shape[0]} values for {self.n_windows} windows")
        return v

    def intervals(self, columns: Mapping[str, np.ndarray]) -> dict[str, Interval]:
        """Mean and percentile interval of each per-window column (name -> values (n_windows,))."""
        names = list(columns)
        out: dict[str, Interval] = {}
        if not names:
            return out
        vals = np.stack([self._column(n, columns[n]) for n in names], axis=1)  # (n_windows, m)
        finite = np.isfinite(vals)
        safe = np.where(finite, vals, 0.0)
        k, m = self.n_articles, len(names)
        points = [
            float(safe[:, j].sum() / finite[:, j].sum()) if finite[:, j].any() else float("nan") for j in range(m)
        ]
        if k < 2:
            for j, n in enumerate(names):
                out[n] = Interval(points[j], float("nan"), float("nan"), self.level, self.n_resamples, k, self.n_windows)
            return out
        sums = np.zeros((k, m))
        counts = np.zeros((k, m))
        np.add.at(sums, self.codes, safe)
        np.add.at(counts, self.codes, finite.astype(np.float64))
        boot = np.empty((self.n_resamples, m))
        with np.errstate(invalid="ignore", divide="ignore"):
            for s, w in self._count_blocks():
                boot[s : s + w.shape[0]] = (w @ sums) / (w @ counts)
        alpha = (1.0 - self.level) / 2.0
        for j, n in enumerate(names):
            col = boot[:, j]
            col = col[np.isfinite(col)]
            if col.size == 0 or not math.isfinite(points[j]):
                low = high = float("nan")
            else:
                low, high = (float(x) for x in np.quantile(col, [alpha, 1.0 - alpha]))
            out[n] = Interval(points[j], low, high, self.level, self.n_resamples, k, self.n_windows)
        return out

    def mean(self, values: np.ndarray) -> Interval:
        """Mean over windows with its article-bootstrap interval."""
        return self.intervals({"x": values})["x"]

    def delta(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """Paired delta mean(a − b) over the same windows, articles resampled jointly."""
        return self.intervals({"d": self._column("a", a) - self._column("b", b)})["d"]


def bootstrap_mean(
    values: np.ndarray,
    article_ids: np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Mean of per-window `values` with a percentile interval from resampling ARTICLES with replacement."""
    return ArticleBootstrap(article_ids, n_resamples, level, seed).mean(values)


def bootstrap_delta(
    values: np.ndarray,
    baseline_values: np.ndarray,
    article_ids: np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> Interval:
    """Paired delta mean(values − baseline_values) on the same windows, articles resampled with replacement.

    Use it for model − baseline: a predictor against itself gives exactly [0, 0]; the interval excludes 0
    only when the difference holds across articles, not just on a few of them.
    """
    return ArticleBootstrap(article_ids, n_resamples, level, seed).delta(values, baseline_values)


# --- formatting (report, model card) -------------------------------------------------------------------

_MINUS = "\u2212"


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}".replace("-", _MINUS)


def format_interval(mean: float | None, low: float | None = None, high: float | None = None, digits: int = 4) -> str:
    """`0.5690 [0.5610, 0.5770]`; just the number when the interval is missing; "—" for no number."""
    if mean is None or not math.isfinite(float(mean)):
        return "—"
    text = f"{float(mean):.{digits}f}"
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return text
    return f"{text} [{float(low):.{digits}f}, {float(high):.{digits}f}]".replace("-", _MINUS)


def format_delta(delta: float | None, low: float | None = None, high: float | None = None, digits: int = 4) -> str:
    """`Δ +0.0030 [−0.0020, +0.0080]` (signed, with a true minus sign); "—" for no number."""
    if delta is None or not math.isfinite(float(delta)):
        return "—"
    text = f"Δ {_signed(float(delta), digits)}"
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return text
    return f"{text} [{_signed(float(low), digits)}, {_signed(float(high), digits)}]"
