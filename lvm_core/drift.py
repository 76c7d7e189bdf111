"""Drift of served contexts against a model's held-out contexts, with the article / client as the unit.

The inference service receives contexts ``(n, ctx, D)`` of unit vectors. They have drifted when they no
longer look like the contexts of the snapshot the model was trained on. The windows of one article (or of
one client reading one article) overlap: consecutive windows share ctx - 1 of their vectors. Counting them
as independent rows makes *any* new article look like drift (a row-level classifier learns the article,
and sees its twin windows on the other side of every fold). So every test here works on **groups**: a
dataset window's group is its article, a served context's group its client session (client key; see
:func:`group_served` for requests without one). The two tests:

- :func:`domain_classifier_test`: a logistic regression tries to tell reference rows from current rows,
  cross-validated with whole groups held out (``StratifiedGroupKFold``). Its AUC over groups (a group's
  score: the mean held-out score of its windows) is the effect size: 0.5 means it cannot tell a session
  from a reference article, 1.0 every session is recognisable; the Mann-Whitney test of the same
  comparison, groups as units, gives its p-value.
- :func:`mmd_permutation_test`: the MMD² between the groups' kernel mean embeddings, a U-statistic over
  groups, for a linear kernel (mean shifts) and RBF kernels at 0.5, 1 and 2 times the median distance
  (spread, several modes), the largest of them on its own null's scale; its p-value comes from
  permutations of whole groups between the two sides: exact when groups are exchangeable, whatever the
  correlation inside a group.

:func:`drift_report` decides: **drift** when the AUC > ``threshold_auc`` (large: most sessions are
recognisable) **and** the MMD p-value < ``alpha`` (not a chance draw of articles: with a few groups the
AUC alone swings past the threshold, and the permutation p-value is exact, so new articles of the
reference's snapshot alert with probability at most ``alpha``); **insufficient data** when either side
has fewer than ``min_groups`` groups (no verdict, no alert); **no drift** otherwise. The classifier's own
Mann-Whitney p-value is reported, not used: cross-validation makes the group scores slightly dependent,
and on real articles it falls below 0.05 about twice as often as it should. Each side is capped at
``max_groups`` groups and ``max_per_group`` windows per group, so a check costs about a second whatever
the traffic.

Pure functions over numpy arrays (numpy, scipy, scikit-learn); loading grouped samples from a dataset
folder or from the service's window files is at the bottom. No Prefect here: see ``tasks/drift.py``.
"""

from __future__ import annotations

import glob
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from lvm_core.io.vectors import l2_normalize

Features = Literal["mean", "last", "mean_last"]
Verdict = Literal["drift", "no drift", "insufficient data"]

DEFAULT_THRESHOLD_AUC = 0.75
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_GROUPS = 10  # articles / sessions per side before any verdict
DEFAULT_MAX_GROUPS = 250  # groups per side the tests use
DEFAULT_MAX_PER_GROUP = 4  # windows per group the tests use
DEFAULT_PERMUTATIONS = 1000
DEFAULT_FEATURES: Features = "mean_last"
STALE_WINDOW_S = 24 * 3600  # a window file in a folder not rewritten for this long is a retired replica's
LINK_DECIMALS = 2  # chunk vectors equal at this rounding are the same chunk (see group_served)
_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)  # RBF bandwidths of the MMD test, times the median distance

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FEATURES",
    "DEFAULT_MAX_GROUPS",
    "DEFAULT_MAX_PER_GROUP",
    "DEFAULT_MIN_GROUPS",
    "DEFAULT_PERMUTATIONS",
    "DEFAULT_THRESHOLD_AUC",
    "ClassifierResult",
    "DriftReport",
    "GroupedSample",
    "MMDResult",
    "context_features",
    "domain_classifier_auc",
    "domain_classifier_test",
    "drift_report",
    "group_codes",
    "group_served",
    "link_shared_chunks",
    "load_current_sample",
    "load_reference_sample",
    "median_bandwidth",
    "mmd_permutation_test",
    "sample_groups",
]


# --- rows compared --------------------------------------------------------------------------------


def context_features(contexts: np.ndarray, features: Features = DEFAULT_FEATURES) -> np.ndarray:
    """One row per context ``(n, ctx, D)`` → ``(n, F)`` float64, the rows both tests compare.

    - ``"mean"``: the mean of the ctx vectors, L2-normalised (F = D): what the context is about.
    - ``"last"``: the last context vector (F = D), as received: where the article is now, the vector
      the next-chunk prediction depends on most.
    - ``"mean_last"`` (default): both, concatenated (F = 2D; each half is a unit vector).

    The mean of a zero-sum context (norm < 1e-12) stays zero rather than dividing by zero. Raises
    ValueError for a non-3-D array, an empty context axis or non-finite values.
    """
    contexts = np.asarray(contexts)
    if contexts.ndim != 3:
        raise ValueError(f"contexts must be (n, ctx, D), got shape {contexts.shape}")
    if contexts.shape[1] == 0 or contexts.shape[2] == 0:
        raise ValueError(f"contexts must have ctx >= 1 and D >= 1, got shape {contexts.shape}")
    contexts = contexts.astype(np.float64, copy=False)
    if not np.isfinite(contexts).all():
        raise ValueError("contexts contain NaN or infinite values")
    if features not in ("mean", "last", "mean_last"):
        raise ValueError(f"features must be 'mean', 'last' or 'mean_last', got {features!r}")
    parts = []
    if features in ("mean", "mean_last"):
        mean = contexts.mean(axis=1)
        parts.append(l2_normalize(mean, dtype=np.float64))
    if features in ("last", "mean_last"):
        parts.append(contexts[:, -1, :])
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


# --- groups ---------------------------------------------------------------------------------------


def group_codes(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Groups (any labels, ``(n,)``) as codes 0..G-1 in order of first label; None: each row its own group
    (the row-level analysis, for comparison only)."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) to match the rows, got {groups.shape}")
    _, codes = np.unique(groups, return_inverse=True)
    return cast(np.ndarray, codes.astype(np.int64).reshape(n))


def sample_groups(groups: np.ndarray, max_groups: int | None, max_per_group: int | None,
                  rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices: at most ``max_groups`` groups drawn at random, at most ``max_per_group`` rows
    drawn at random in each. Bounds the cost and keeps a long session from outweighing a short one."""
    codes = group_codes(groups, len(groups))
    chosen = np.unique(codes)
    if max_groups is not None and len(chosen) > max_groups:
        chosen = rng.choice(chosen, size=max_groups, replace=False)
    keep = np.isin(codes, chosen)
    if max_per_group is not None:
        rank = np.empty(len(codes), dtype=np.int64)
        order = rng.permutation(len(codes))
        order = order[np.argsort(codes[order], kind="stable")]  # rows of each group together, random order
        starts = np.searchsorted(codes[order], codes[order])  # first position of each row's group
        rank[order] = np.arange(len(codes)) - starts
        keep &= rank < max_per_group
    return np.flatnonzero(keep)


def link_shared_chunks(contexts: np.ndarray, decimals: int = LINK_DECIMALS) -> np.ndarray:
    """Group codes of contexts linked by a shared chunk vector (connected components).

    Overlapping windows of one article share ctx - 1 chunk vectors, so a reader's consecutive requests
    form one component even without a client key. Vectors are compared after rounding to ``decimals``
    (re-encoding a chunk in another batch moves it by ~1e-6; two different chunks never agree on hundreds
    of rounded components), so the link survives encoder noise.
    """
    contexts = np.asarray(contexts)
    n, ctx = contexts.shape[:2]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    scale = 10.0**decimals
    keys = np.rint(np.asarray(contexts, dtype=np.float32).reshape(n * ctx, -1) * scale).astype(np.int16)
    _, chunk = np.unique(keys, axis=0, return_inverse=True)
    chunk = chunk.reshape(-1)
    k = int(chunk.max()) + 1
    rows = np.repeat(np.arange(n), ctx)
    graph = coo_matrix((np.ones(n * ctx, np.int8), (rows, n + chunk)), shape=(n + k, n + k))
    _, labels = connected_components(graph, directed=False)
    return group_codes(labels[:n], n)


def group_served(contexts: np.ndarray, clients: np.ndarray | None) -> np.ndarray:
    """Group codes of served contexts: one group per client key; requests without one (client 0, or a window
    file with no groups at all) grouped by shared chunk vectors (:func:`link_shared_chunks`).

    Why not one group per anonymous request: a reader sends one overlapping window per request, so that
    would count each of its near-identical windows as an independent unit, the very error that made new
    articles look like drift. Linking by shared chunks recovers the reading sessions; a context that
    shares nothing with any other is its own unit, as it should be.
    """
    n = len(contexts)
    anonymous = np.ones(n, bool) if clients is None else np.asarray(clients) == 0
    labels = np.empty(n, dtype=np.int64)
    if clients is not None and (~anonymous).any():
        labels[~anonymous] = group_codes(np.asarray(clients)[~anonymous], int((~anonymous).sum()))
    offset = int(labels[~anonymous].max()) + 1 if (~anonymous).any() else 0
    if anonymous.any():
        labels[anonymous] = offset + link_shared_chunks(np.asarray(contexts)[anonymous])
    return group_codes(labels, n)


# --- domain classifier ----------------------------------------------------------------------------


def _check_pair(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    for name, a in (("reference", reference), ("current", current)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (rows, features), got shape {a.shape}")
        if a.shape[0] < 2:
            raise ValueError(f"{name} has {a.shape[0]} rows; at least 2 are needed")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"reference rows have {reference.shape[1]} features, current rows {current.shape[1]}")
    return reference, current


def _pooled_groups(reference: np.ndarray, current: np.ndarray, reference_groups: np.ndarray | None,
                   current_groups: np.ndarray | None) -> tuple[np.ndarray, int, int]:
    """Codes over both sides (a reference group never merges with a current one), and each side's count."""
    ref = group_codes(reference_groups, len(reference))
    cur = group_codes(current_groups, len(current))
    g_ref = int(ref.max()) + 1
    return np.concatenate([ref, g_ref + cur]), g_ref, int(cur.max()) + 1


@dataclass(frozen=True)
class ClassifierResult:
    """Grouped domain classifier: the AUC over groups, its p-value, and how many groups each side had."""

    auc: float
    p_value: float
    n_reference: int
    n_current: int


def domain_classifier_test(
    reference: np.ndarray,
    current: np.ndarray,
    reference_groups: np.ndarray | None = None,
    current_groups: np.ndarray | None = None,
    seed: int = 0,
    folds: int = 5,
    C: float = 0.1,
) -> ClassifierResult:
    """A logistic regression tells ``current`` rows from ``reference`` rows; its held-out AUC over groups.

    Cross-validation holds out whole groups (``StratifiedGroupKFold``, shuffled with ``seed``): a row is
    scored by a model that saw no window of its article or session, so the classifier cannot win by
    recognising an article it has already met. Each group's score is the mean of its rows' held-out
    scores; the AUC is the probability that a current group scores above a reference group (each group
    counts once, however many windows it sent), and the p-value is the one-sided Mann-Whitney U test of
    the same comparison, groups as the independent units. Rows are standardised on each training fold;
    the regression is L2-regularised (``C``). Groups None: each row its own group (the row-level analysis
    that misreads overlapping windows, kept to show the difference).

    Reading the AUC: 0.5 — indistinguishable (a little below 0.5 is noise of the same meaning); 0.6-0.7 —
    a weak, systematic difference; > 0.75 (default threshold) — most sessions are recognisably unlike the
    reference articles; 1.0 — fully separable (another encoder, another language, broken input). Each
    side needs at least ``folds`` groups.
    """
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    reference, current = _check_pair(reference, current)
    groups, g_ref, g_cur = _pooled_groups(reference, current, reference_groups, current_groups)
    if min(g_ref, g_cur) < folds:
        raise ValueError(f"{min(g_ref, g_cur)} groups on one side; {folds}-fold grouped cross-validation needs "
                         f"at least {folds} on each")
    x = np.concatenate([reference, current])
    y = np.concatenate([np.zeros(len(reference), int), np.ones(len(current), int)])
    scores = np.empty(len(y))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y, groups):  # a plain loop: cross_val_predict's machinery costs more here
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0
        model = LogisticRegression(C=C, solver="liblinear", max_iter=1000)
        model.fit((x[train] - mean) / std, y[train])
        scores[test] = model.decision_function((x[test] - mean) / std)
    group_score = np.bincount(groups, weights=scores) / np.bincount(groups)
    u = mannwhitneyu(group_score[g_ref:], group_score[:g_ref], alternative="greater")
    return ClassifierResult(auc=float(u.statistic) / (g_ref * g_cur), p_value=float(u.pvalue), n_reference=g_ref,
                            n_current=g_cur)


def domain_classifier_auc(
    reference: np.ndarray,
    current: np.ndarray,
    reference_groups: np.ndarray | None = None,
    current_groups: np.ndarray | None = None,
    seed: int = 0,
    folds: int = 5,
    C: float = 0.1,
) -> float:
    """The AUC of :func:`domain_classifier_test`."""
    return domain_classifier_test(reference, current, reference_groups, current_groups, seed, folds, C).auc


# --- MMD permutation test -------------------------------------------------------------------------


@dataclass(frozen=True)
class MMDResult:
    """MMD² between groups (RBF kernel), its group-permutation p-value, and what it was computed on."""

    mmd2: float
    p_value: float
    bandwidth: float
    n_permutations: int
    n_reference: int  # groups on each side
    n_current: int


def _sq_dists(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return cast(np.ndarray, d2)


def median_bandwidth(z: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance between distinct rows of ``z`` (1.0 if all equal)."""
    return _median_distance(_sq_dists(np.asarray(z, dtype=np.float64)))


def _median_distance(d2: np.ndarray) -> float:
    """Median of the non-zero distances above the diagonal of a squared-distance matrix (1.0 if none)."""
    off = d2[np.triu_indices(d2.shape[0], k=1)]
    off = off[off > 0]
    return float(np.sqrt(np.median(off))) if off.size else 1.0


def _mmd2(k: np.ndarray, labels: np.ndarray, m: int, n: int) -> np.ndarray:
    """Unbiased MMD² for each row of ``labels`` ((p, m+n) bool, True = reference) under kernel ``k``
    (its diagonal zeroed)."""
    a = labels.astype(np.float64)
    b = 1.0 - a
    ka = a @ k
    kb = b @ k
    xx = np.einsum("pi,pi->p", ka, a) / (m * (m - 1))
    yy = np.einsum("pi,pi->p", kb, b) / (n * (n - 1))
    xy = np.einsum("pi,pi->p", ka, b) / (m * n)
    return cast(np.ndarray, xx + yy - 2.0 * xy)


def mmd_permutation_test(
    reference: np.ndarray,
    current: np.ndarray,
    reference_groups: np.ndarray | None = None,
    current_groups: np.ndarray | None = None,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
    bandwidth: float | None = None,
) -> MMDResult:
    """MMD² between the two sides' groups and its group-permutation p-value.

    Each group is represented by the mean embedding of its rows under ``k(a, b) = exp(-|a - b|² / (2σ²))``
    (σ = ``bandwidth`` or the median pairwise distance of the pooled rows); the group kernel is the mean
    of k between two groups' rows. MMD² is the U-statistic over groups (pairs of distinct groups only), so
    the strong similarity of windows within one article never enters it; it is ~0 (can be slightly
    negative) when both sides' groups come from one distribution.

    The p-value is ``(1 + #{permutations with MMD² >= observed}) / (1 + n_permutations)``, permuting whole
    groups between the sides: exact under exchangeable groups (articles drawn from one snapshot), whatever
    the dependence inside a group. Row permutation would treat near-copies as independent and reject on
    any new article. Groups None: each row its own group (row permutations, for comparison).
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    reference, current = _check_pair(reference, current)
    groups, m, n = _pooled_groups(reference, current, reference_groups, current_groups)
    if m < 2 or n < 2:
        raise ValueError(f"MMD between groups needs at least 2 groups on each side, got {m} and {n}")
    z = np.concatenate([reference, current])
    d2 = _sq_dists(z)
    if bandwidth is None:
        bandwidth = _median_distance(d2)
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    member = np.zeros((m + n, len(groups)))
    member[groups, np.arange(len(groups))] = 1.0
    member /= member.sum(axis=1, keepdims=True)
    kernels = [np.exp(-d2 / (2.0 * (f * bandwidth) ** 2)) for f in _BANDWIDTH_FACTORS] + [z @ z.T]
    stats = []
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_permutations + 1, m + n), bool)
    labels[0, :m] = True  # row 0: the observed split; then the permutations
    for p in range(1, n_permutations + 1):
        labels[p, rng.permutation(m + n)[:m]] = True
    for k in kernels:
        kg = member @ k @ member.T  # mean kernel between the rows of two groups
        np.fill_diagonal(kg, 0.0)  # U-statistic: no group is compared with itself
        stats.append(np.concatenate([_mmd2(kg, labels[s : s + 200], m, n) for s in range(0, len(labels), 200)]))
    table = np.stack(stats, axis=1)  # (1 + permutations, kernels)
    spread = table[1:].std(axis=0)
    spread[spread == 0] = 1.0
    combined = ((table - table[1:].mean(axis=0)) / spread).max(axis=1)  # each kernel on its null's scale
    p_value = float((1 + np.count_nonzero(combined[1:] >= combined[0] - 1e-12)) / (1 + n_permutations))
    return MMDResult(mmd2=float(table[0, 1]), p_value=p_value, bandwidth=float(bandwidth),
                     n_permutations=n_permutations, n_reference=m, n_current=n)


# --- report ---------------------------------------------------------------------------------------


@dataclass
class DriftReport:
    """Both tests, the groups they saw, the thresholds, and the verdict.

    ``verdict`` is "insufficient data" when a side has fewer than ``min_groups`` groups (the tests are not
    run: the scores are None); else "drift" when the difference is large, ``auc > threshold_auc``, and not
    chance, ``mmd_p_value < alpha`` (an exact group-permutation p-value: a check on new articles of the
    reference's snapshot alerts with probability at most ``alpha`` whatever the sample sizes); else "no
    drift". ``auc_p_value`` (the classifier's Mann-Whitney p over groups) is information only.
    ``drifted`` is ``verdict == "drift"``; ``reasons`` says why, ``notes`` what else was seen.
    """

    verdict: Verdict
    drifted: bool
    auc: float | None
    auc_p_value: float | None
    mmd2: float | None
    mmd_p_value: float | None
    mmd_bandwidth: float | None
    n_permutations: int
    n_reference: int  # windows in each sample
    n_current: int
    n_reference_groups: int  # articles / sessions in each sample
    n_current_groups: int
    n_reference_used: int  # windows the tests used (at most max_per_group of each of max_groups groups)
    n_current_used: int
    threshold_auc: float
    alpha: float
    min_groups: int
    features: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def insufficient(self) -> bool:
        return self.verdict == "insufficient data"

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain (floats or None, ints, bools, strings, lists of strings)."""
        return asdict(self)

    def summary(self) -> str:
        groups = f"{self.n_reference_groups} reference articles vs {self.n_current_groups} current groups"
        if self.insufficient:
            return f"insufficient data: {'; '.join(self.reasons)} ({groups}); no verdict"
        return (f"{'DRIFT' if self.drifted else self.verdict}: domain-classifier AUC {self.auc:.3f} (threshold "
                f"{self.threshold_auc}), MMD p={self.mmd_p_value:.3g} (alpha {self.alpha}); {groups}")

    def markdown(self, title: str = "Drift of served contexts") -> str:
        head = [f"## {title}", "", f"**{self.verdict}**" + (f" — {'; '.join(self.reasons)}" if self.reasons else "")]
        sizes = (f"Groups: {self.n_reference_groups} reference articles, {self.n_current_groups} current "
                 f"sessions/articles (minimum {self.min_groups} each); windows: {self.n_reference} / "
                 f"{self.n_current} (tests on {self.n_reference_used} / {self.n_current_used}); features: "
                 f"`{self.features}`.")
        notes = ["", *(f"- {n}" for n in self.notes)] if self.notes else []
        if self.insufficient:
            return "\n".join([*head, "", sizes, *notes])
        assert self.auc is not None and self.mmd_p_value is not None
        lines = [
            *head, "", "| | value | drift needs |", "|---|---|---|",
            f"| domain-classifier AUC over groups (grouped CV) | {self.auc:.3f} | > {self.threshold_auc} |",
            f"| MMD group-permutation p-value ({self.n_permutations} permutations) | {self.mmd_p_value:.4g} | "
            f"< {self.alpha} |",
            f"| classifier Mann-Whitney p over groups (information) | {self.auc_p_value:.4g} | |",
            "", sizes, "", "AUC 0.5 = indistinguishable from the reference articles, 1.0 = fully separable.", *notes,
        ]
        return "\n".join(lines)


def _random_projection(rows: list[np.ndarray], dims: int, seed: int) -> list[np.ndarray]:
    """The same Gaussian random projection of every row block to ``dims`` features (distances kept within
    a small factor, Johnson-Lindenstrauss): a cheaper check, used by tests."""
    proj = np.random.default_rng(seed + 7919).standard_normal((rows[0].shape[1], dims)) / np.sqrt(dims)
    return [r @ proj for r in rows]


def drift_report(
    reference: np.ndarray,
    current: np.ndarray,
    reference_groups: np.ndarray | None = None,
    current_groups: np.ndarray | None = None,
    threshold_auc: float = DEFAULT_THRESHOLD_AUC,
    alpha: float = DEFAULT_ALPHA,
    min_groups: int = DEFAULT_MIN_GROUPS,
    seed: int = 0,
    folds: int = 5,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    max_groups: int | None = DEFAULT_MAX_GROUPS,
    max_per_group: int | None = DEFAULT_MAX_PER_GROUP,
    features: Features = DEFAULT_FEATURES,
    project_dims: int | None = None,
) -> DriftReport:
    """Both tests on two grouped samples, or "insufficient data" below ``min_groups`` groups on a side.

    ``reference`` and ``current`` are contexts ``(n, ctx, D)`` — turned into rows by
    :func:`context_features` with ``features`` — or rows ``(n, F)`` already; ``*_groups`` label each row's
    article / session (None: each row its own group). Each side is capped at ``max_groups`` groups and
    ``max_per_group`` rows per group, drawn with ``seed``, so the report is reproducible.
    ``project_dims`` projects the rows to fewer features first (cheaper, a little less sensitive).
    """
    if min_groups < max(folds, 2):
        raise ValueError(f"min_groups must be >= {max(folds, 2)} (the folds of the classifier), got {min_groups}")
    is_ctx = np.ndim(reference) == 3
    ref_rows = context_features(reference, features) if is_ctx else np.asarray(reference, np.float64)
    cur_rows = context_features(current, features) if np.ndim(current) == 3 else np.asarray(current, np.float64)
    if ref_rows.shape[1] != cur_rows.shape[1]:
        raise ValueError(f"current contexts have {cur_rows.shape[1]} features per row, the reference "
                         f"{ref_rows.shape[1]}: another embedding dimension (another encoder?)")
    ref_g = group_codes(reference_groups, len(ref_rows))
    cur_g = group_codes(current_groups, len(cur_rows))
    n_ref_g = int(ref_g.max()) + 1 if len(ref_g) else 0
    n_cur_g = int(cur_g.max()) + 1 if len(cur_g) else 0
    base: dict[str, Any] = dict(
        n_permutations=n_permutations, n_reference=len(ref_rows), n_current=len(cur_rows),
        n_reference_groups=n_ref_g, n_current_groups=n_cur_g, threshold_auc=float(threshold_auc),
        alpha=float(alpha), min_groups=int(min_groups), features=str(features) if is_ctx else "rows")
    short = [f"{side} has {n} {unit}, fewer than {min_groups}" for side, n, unit in (
        ("the reference", n_ref_g, "articles"), ("the current sample", n_cur_g, "groups")) if n < min_groups]
    if short:
        return DriftReport(verdict="insufficient data", drifted=False, auc=None, auc_p_value=None, mmd2=None,
                           mmd_p_value=None, mmd_bandwidth=None, n_reference_used=0, n_current_used=0,
                           reasons=short, **base)
    rng = np.random.default_rng(seed)
    ri = sample_groups(ref_g, max_groups, max_per_group, rng)
    ci = sample_groups(cur_g, max_groups, max_per_group, rng)
    ref_x, cur_x = ref_rows[ri], cur_rows[ci]
    if project_dims is not None:
        ref_x, cur_x = _random_projection([ref_x, cur_x], project_dims, seed)
    clf = domain_classifier_test(ref_x, cur_x, ref_g[ri], cur_g[ci], seed=seed, folds=folds)
    mmd = mmd_permutation_test(ref_x, cur_x, ref_g[ri], cur_g[ci], n_permutations=n_permutations, seed=seed)
    large, significant = clf.auc > threshold_auc, mmd.p_value < alpha
    drifted = large and significant
    reasons = [f"AUC {clf.auc:.3f} > {threshold_auc}", f"MMD p-value {mmd.p_value:.3g} < {alpha}"] if drifted else []
    notes = []
    if large and not significant:
        notes.append(f"AUC {clf.auc:.3f} above the threshold but MMD p-value {mmd.p_value:.3g}: not distinguishable "
                     "from a chance draw of articles with this many groups; not drift")
    if significant and not large:
        notes.append(f"MMD p-value {mmd.p_value:.3g}: a real but small difference (AUC {clf.auc:.3f}); not drift")
    return DriftReport(verdict="drift" if drifted else "no drift", drifted=drifted, auc=clf.auc,
                       auc_p_value=clf.p_value, mmd2=mmd.mmd2, mmd_p_value=mmd.p_value, mmd_bandwidth=mmd.bandwidth,
                       n_reference_used=len(ri), n_current_used=len(ci), reasons=reasons,
                       notes=notes, **base)


# --- loading grouped samples ----------------------------------------------------------------------


@dataclass
class GroupedSample:
    """Contexts ``(n, ctx, D)`` float32 and the group of each (article id, or session code); where they
    came from, and what the reader noticed on the way (old files, skipped ones)."""

    contexts: np.ndarray
    groups: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_groups(self) -> int:
        return int(len(np.unique(self.groups)))


def load_reference_sample(
    root: str | Path, splits: tuple[str, ...] = ("val",), max_groups: int | None = DEFAULT_MAX_GROUPS,
    max_per_group: int | None = DEFAULT_MAX_PER_GROUP, seed: int = 0, require_ready: bool = True,
) -> GroupedSample:
    """Windows of ``splits`` of a dataset folder, grouped by article; at most ``max_groups`` articles and
    ``max_per_group`` windows of each (seeded), gathered from the memory-mapped vectors.

    The default reference is the **val** split: articles the model never trained on, so that a new
    article of the same snapshot is compared with other new articles. Raises ValueError when the splits
    hold no windows.
    """
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import SequenceSet, gather

    ds = load_dataset(Path(root), require_ready=require_ready)
    sets = [ds.sequences[s] for s in splits if s in ds.sequences and len(ds.sequences[s])]
    if not sets:
        raise ValueError(f"{root}: no windows in split(s) {', '.join(splits)}")
    seqs = SequenceSet.concat(sets)
    idx = sample_groups(seqs.article_ids, max_groups, max_per_group, np.random.default_rng(seed))
    ctx, _ = gather(ds.vectors, seqs, idx)
    return GroupedSample(ctx, np.asarray(seqs.article_ids[idx], dtype=np.int64),
                         f"{Path(root).name} ({'+'.join(splits)})")


def window_files(spec: str | Path, now: float | None = None) -> tuple[list[Path], list[str]]:
    """The window files ``current`` names, and notes: a file; a folder (every ``*.npy`` in it: one per
    replica); or a glob pattern. In a folder or pattern, files not rewritten for ``STALE_WINDOW_S`` are
    left out (a retired replica's window)."""
    text = str(spec)
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    elif Path(text).is_dir():
        files = sorted(p for p in Path(text).glob("*.npy") if p.is_file())
    elif Path(text).is_file():
        return [Path(text)], []
    else:
        raise FileNotFoundError(f"{text}: no such .npy file, window folder or dataset folder")
    if not files:
        raise FileNotFoundError(f"{text}: no window files (*.npy) there")
    now = time.time() if now is None else now
    fresh = [p for p in files if now - p.stat().st_mtime <= STALE_WINDOW_S]
    notes = [f"{p.name} left out: not rewritten for {(now - p.stat().st_mtime) / 3600:.0f} h (a retired replica?)"
             for p in files if p not in fresh]
    if not fresh:
        raise FileNotFoundError(f"{text}: every window file is older than {STALE_WINDOW_S // 3600} h")
    return fresh, notes


def load_current_sample(
    spec: str | Path, max_groups: int | None = DEFAULT_MAX_GROUPS, max_per_group: int | None = DEFAULT_MAX_PER_GROUP,
    seed: int = 0,
) -> GroupedSample:
    """The served contexts to check, grouped by session, or a dataset folder's held-out windows.

    - a dataset folder (it has a manifest.json): its ``test`` and ``ood`` windows, grouped by article;
    - a window file, a folder of them (``contexts-<replica>.npy``, one per replica) or a glob pattern:
      every replica's contexts together, grouped by :func:`group_served` (the client key's digest; by
      shared chunks without one). A file written before groups were recorded (plain ``(n, ctx, D)``) is
      read as all-anonymous, with a note. Files of another context shape than most contexts are left out.

    At most ``max_groups`` groups and ``max_per_group`` contexts of each are kept (seeded).
    """
    path = Path(spec)
    if path.is_dir() and (path / "manifest.json").is_file():
        return load_reference_sample(path, splits=("test", "ood"), max_groups=max_groups,
                                     max_per_group=max_per_group, seed=seed, require_ready=False)
    from lvm_core.serving.window import read_window

    files, notes = window_files(spec)
    parts: list[tuple[Path, np.ndarray, np.ndarray | None]] = []
    for f in files:
        ctx, clients = read_window(f)
        if not len(ctx):
            continue
        if clients is None:
            notes.append(f"{f.name}: written before groups were recorded; its contexts are grouped by shared "
                         "chunk vectors")
        parts.append((f, ctx, clients))
    if not parts:
        raise ValueError(f"{spec}: no contexts")
    shapes: dict[tuple[int, ...], int] = {}
    for _, ctx, _ in parts:
        shapes[ctx.shape[1:]] = shapes.get(ctx.shape[1:], 0) + len(ctx)
    shape = max(shapes, key=lambda s: shapes[s])
    notes += [f"{f.name} left out: contexts of shape {ctx.shape[1:]}, most are {shape}" for f, ctx, _ in parts
              if ctx.shape[1:] != shape]
    parts = [p for p in parts if p[1].shape[1:] == shape]
    contexts = np.concatenate([np.asarray(ctx) for _, ctx, _ in parts])
    clients = np.concatenate([np.zeros(len(c), np.uint64) if g is None else np.asarray(g, np.uint64)
                              for _, c, g in parts])
    groups = group_served(contexts, clients)
    idx = sample_groups(groups, max_groups, max_per_group, np.random.default_rng(seed))
    return GroupedSample(np.asarray(contexts[idx], dtype=np.float32), groups[idx], str(spec), notes)
