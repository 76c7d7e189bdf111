"""Drift of served contexts against a model's training distribution.

The inference service receives contexts ``(n, ctx, D)`` of unit vectors. They have drifted when they no
longer look like the contexts the model was trained on. Two complementary two-sample tests compare a
*reference* sample (training windows of the model's dataset) with a *current* sample (what the service
received recently), both first turned into one row per context by :func:`context_features`:

- :func:`domain_classifier_auc`: a cross-validated logistic regression tries to tell reference rows from
  current rows. Its out-of-fold ROC-AUC is an effect size: 0.5 means it cannot tell them apart, 1.0 means
  every current row is recognisable. It answers "how different", on a scale that does not move with the
  sample size.
- :func:`mmd_permutation_test`: the unbiased MMD² between the two samples under an RBF kernel (bandwidth
  by the median heuristic) and its permutation p-value. It answers "is there any difference at all",
  including ones a linear classifier cannot see (spread, multi-modality).

:func:`drift_report` runs both and decides: drift when AUC > ``threshold_auc`` (0.75) or p < ``alpha``
(0.01). Both tests subsample each side to a bounded size so a check costs seconds whatever the traffic.

Pure functions over numpy arrays (numpy, scipy, scikit-learn); loading windows from a dataset folder or
an ``.npy`` file is at the bottom. No Prefect here: see ``tasks/drift.py`` and ``flows/drift.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from lvm_core.io.vectors import l2_normalize

Features = Literal["mean", "last", "mean_last"]

DEFAULT_THRESHOLD_AUC = 0.75
DEFAULT_ALPHA = 0.01
DEFAULT_MAX_ROWS = 500  # per side, for both tests
DEFAULT_FEATURES: Features = "mean_last"

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FEATURES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_THRESHOLD_AUC",
    "DriftReport",
    "MMDResult",
    "context_features",
    "domain_classifier_auc",
    "drift_report",
    "load_current_contexts",
    "load_reference_contexts",
    "median_bandwidth",
    "mmd_permutation_test",
    "subsample",
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


def subsample(rows: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_rows`` rows drawn without replacement (order kept); all rows when fewer or None."""
    n = rows.shape[0]
    if max_rows is None or n <= max_rows:
        return rows
    return rows[np.sort(rng.choice(n, size=max_rows, replace=False))]


def _check_pair(reference: np.ndarray, current: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    for name, a in (("reference", reference), ("current", current)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (rows, features), got shape {a.shape}")
        if a.shape[0] < min_rows:
            raise ValueError(f"{name} has {a.shape[0]} rows; at least {min_rows} are needed")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"reference rows have {reference.shape[1]} features, current rows {current.shape[1]}")
    return reference, current


# --- domain classifier ----------------------------------------------------------------------------


def domain_classifier_auc(
    reference: np.ndarray,
    current: np.ndarray,
    seed: int = 0,
    folds: int = 5,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    C: float = 0.1,
) -> float:
    """Out-of-fold ROC-AUC of a logistic regression telling ``current`` rows from ``reference`` rows.

    Rows are standardised, each side is subsampled to ``max_rows`` (default 500), the regression is
    L2-regularised (``C``, default 0.1: rows have hundreds of features and a few hundred samples), and a stratified ``folds``-fold
    cross-validation (shuffled with ``seed``) scores every row by a model that never saw it; the AUC is
    computed over all out-of-fold scores. ROC-AUC does not depend on the class balance, so the two sides
    need not be the same size.

    Reading the value: 0.5 — the classifier cannot tell the samples apart (no detectable drift; values
    a little below 0.5 are noise of the same meaning); 0.6-0.7 — a weak, systematic difference; > 0.75
    (default threshold) — most current contexts are recognisably unlike training contexts; 1.0 — fully
    separable (e.g. another encoder, another language, or broken input). It is an effect size, so it
    does not grow with the sample size the way a p-value shrinks, but it is noisy on small samples
    (tens of rows) and a linear model misses differences in spread only: the MMD test covers those.
    When current rows are exact copies of reference rows, cross-validation scores each row against
    its twin labelled the other class, which pushes the AUC below 0.5 (≈0.35): still "no drift".
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    reference, current = _check_pair(reference, current, min_rows=folds)
    rng = np.random.default_rng(seed)
    reference = subsample(reference, max_rows, rng)
    current = subsample(current, max_rows, rng)
    x = np.concatenate([reference, current])
    y = np.concatenate([np.zeros(len(reference), int), np.ones(len(current), int)])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="liblinear", max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


# --- MMD permutation test -------------------------------------------------------------------------


@dataclass(frozen=True)
class MMDResult:
    """Unbiased MMD² (RBF kernel), its permutation p-value, and what it was computed on."""

    mmd2: float
    p_value: float
    bandwidth: float
    n_permutations: int
    n_reference: int
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
    """Unbiased MMD² for each row of ``labels`` ((p, m+n) bool, True = reference group) under kernel ``k``
    (its diagonal zeroed)."""
    a = labels.astype(np.float64)
    b = 1.0 - a
    ka = a @ k
    kb = b @ k
    xx = np.einsum("pi,pi->p", ka, a) / (m * (m - 1))
    yy = np.einsum("pi,pi->p", kb, b) / (n * (n - 1))
    xy = np.einsum("pi,pi->p", ka, b) / (m * n)
    return cast(np.ndarray, xx + yy - 2.0 * xy)


def _permutation_null(k: np.ndarray, m: int, n: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """MMD² of ``n_permutations`` random reassignments of the pooled rows to groups of sizes m and n."""
    perms = np.zeros((n_permutations, m + n), bool)
    for p in range(n_permutations):
        perms[p, rng.permutation(m + n)[:m]] = True
    return np.concatenate([_mmd2(k, perms[s : s + 50], m, n) for s in range(0, n_permutations, 50)])


def mmd_permutation_test(
    reference: np.ndarray,
    current: np.ndarray,
    n_permutations: int = 200,
    seed: int = 0,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    bandwidth: float | None = None,
) -> MMDResult:
    """Unbiased MMD² between the samples with an RBF kernel, and its permutation p-value.

    ``k(a, b) = exp(-|a - b|² / (2 σ²))`` with σ = ``bandwidth`` or, by default, the median pairwise
    distance of the pooled (subsampled) rows. MMD² (unbiased: diagonal terms left out) is ~0 — it can be
    slightly negative — when both samples come from one distribution and grows with the difference.

    The p-value is ``(1 + #{permutations with MMD² >= observed}) / (1 + n_permutations)``, the
    permutations reassigning the pooled rows to two groups of the original sizes; so with 200
    permutations the smallest p-value is 1/201 ≈ 0.005. Under no drift the p-value is uniform on (0, 1]:
    at alpha = 0.01 about one check in a hundred fires on identical distributions.

    Each side is subsampled to ``max_rows`` (default 500), so the kernel matrix is at most 1000 × 1000
    and the test takes well under a second.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    reference, current = _check_pair(reference, current, min_rows=2)
    rng = np.random.default_rng(seed)
    reference = subsample(reference, max_rows, rng)
    current = subsample(current, max_rows, rng)
    m, n = len(reference), len(current)
    z = np.concatenate([reference, current])
    d2 = _sq_dists(z)
    if bandwidth is None:
        bandwidth = _median_distance(d2)
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    k = np.exp(-d2 / (2.0 * bandwidth**2))
    np.fill_diagonal(k, 0.0)  # unbiased estimator: no k(z_i, z_i) terms
    observed_labels = np.zeros((1, m + n), bool)
    observed_labels[0, :m] = True
    observed = float(_mmd2(k, observed_labels, m, n)[0])
    null = _permutation_null(k, m, n, n_permutations, rng)
    p_value = float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + n_permutations))
    return MMDResult(mmd2=observed, p_value=p_value, bandwidth=float(bandwidth), n_permutations=n_permutations,
                     n_reference=m, n_current=n)


# --- report ---------------------------------------------------------------------------------------


@dataclass
class DriftReport:
    """Both tests, their sample sizes and thresholds, and the verdict.

    ``drifted`` is ``auc > threshold_auc or mmd_p_value < alpha``; ``reasons`` says which fired.
    """

    auc: float
    mmd2: float
    mmd_p_value: float
    mmd_bandwidth: float
    n_permutations: int
    n_reference: int  # rows available on each side, before the tests' subsampling
    n_current: int
    n_reference_used: int  # rows the MMD test used after subsampling
    n_current_used: int
    threshold_auc: float
    alpha: float
    features: str
    drifted: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain (floats, ints, bools, strings, a list of strings)."""
        return asdict(self)

    def summary(self) -> str:
        verdict = "DRIFT" if self.drifted else "no drift"
        return (f"{verdict}: domain-classifier AUC {self.auc:.3f} (threshold {self.threshold_auc}), "
                f"MMD² {self.mmd2:.4g} p={self.mmd_p_value:.3g} (alpha {self.alpha}); "
                f"{self.n_reference} reference vs {self.n_current} current rows")

    def markdown(self, title: str = "Drift of served contexts") -> str:
        lines = [
            f"## {title}", "",
            f"**{'DRIFT' if self.drifted else 'no drift'}**" + (f" — {'; '.join(self.reasons)}" if self.reasons else ""),
            "", "| test | value | threshold | fires |", "|---|---|---|---|",
            f"| domain-classifier ROC-AUC | {self.auc:.3f} | > {self.threshold_auc} | {self.auc > self.threshold_auc} |",
            f"| MMD² permutation p-value | {self.mmd_p_value:.4f} | < {self.alpha} | {self.mmd_p_value < self.alpha} |",
            "", f"MMD² = {self.mmd2:.5g} (RBF, bandwidth {self.mmd_bandwidth:.4g}, {self.n_permutations} permutations); "
            f"rows: {self.n_reference} reference, {self.n_current} current "
            f"(MMD on {self.n_reference_used} / {self.n_current_used}); features: `{self.features}`.",
            "", "AUC 0.5 = indistinguishable from training contexts, 1.0 = fully separable.",
        ]
        return "\n".join(lines)


def drift_report(
    reference: np.ndarray,
    current: np.ndarray,
    threshold_auc: float = DEFAULT_THRESHOLD_AUC,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    folds: int = 5,
    n_permutations: int = 200,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    features: Features = DEFAULT_FEATURES,
) -> DriftReport:
    """Both tests on two samples; drift when AUC > ``threshold_auc`` or MMD p-value < ``alpha``.

    ``reference`` and ``current`` are either contexts ``(n, ctx, D)`` — turned into rows by
    :func:`context_features` with ``features`` — or rows ``(n, F)`` already. Each test subsamples each
    side to ``max_rows`` with ``seed``, so the report is reproducible.
    """
    ref_rows = context_features(reference, features) if np.ndim(reference) == 3 else np.asarray(reference, np.float64)
    cur_rows = context_features(current, features) if np.ndim(current) == 3 else np.asarray(current, np.float64)
    auc = domain_classifier_auc(ref_rows, cur_rows, seed=seed, folds=folds, max_rows=max_rows)
    mmd = mmd_permutation_test(ref_rows, cur_rows, n_permutations=n_permutations, seed=seed, max_rows=max_rows)
    reasons = []
    if auc > threshold_auc:
        reasons.append(f"AUC {auc:.3f} > {threshold_auc}")
    if mmd.p_value < alpha:
        reasons.append(f"MMD p-value {mmd.p_value:.3g} < {alpha}")
    return DriftReport(
        auc=auc, mmd2=mmd.mmd2, mmd_p_value=mmd.p_value, mmd_bandwidth=mmd.bandwidth,
        n_permutations=mmd.n_permutations, n_reference=int(ref_rows.shape[0]), n_current=int(cur_rows.shape[0]),
        n_reference_used=mmd.n_reference, n_current_used=mmd.n_current, threshold_auc=float(threshold_auc),
        alpha=float(alpha), features=str(features) if np.ndim(reference) == 3 else "rows", drifted=bool(reasons),
        reasons=reasons,
    )


# --- loading contexts -----------------------------------------------------------------------------


def _window_sample(n: int, max_windows: int | None, seed: int) -> np.ndarray:
    idx = np.arange(n)
    if max_windows is not None and n > max_windows:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_windows, replace=False))
    return idx


def load_reference_contexts(
    root: str | Path, splits: tuple[str, ...] = ("train",), max_windows: int | None = 2000, seed: int = 0,
    require_ready: bool = True,
) -> np.ndarray:
    """Contexts ``(k, ctx, D)`` float32 of up to ``max_windows`` windows (seeded sample) of ``splits``.

    Windows of the dataset folder ``root`` (``lvm_core.data.build.load_dataset``), gathered from its
    memory-mapped vectors; only the sampled windows are read, so memory does not grow with the dataset.
    Raises ValueError when the splits hold no windows.
    """
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import SequenceSet, gather

    ds = load_dataset(Path(root), require_ready=require_ready)
    sets = [ds.sequences[s] for s in splits if s in ds.sequences and len(ds.sequences[s])]
    if not sets:
        raise ValueError(f"{root}: no windows in split(s) {', '.join(splits)}")
    seqs = SequenceSet.concat(sets)
    ctx, _ = gather(ds.vectors, seqs, _window_sample(len(seqs), max_windows, seed))
    return ctx


def load_current_contexts(path: str | Path, max_windows: int | None = 2000, seed: int = 0) -> np.ndarray:
    """Contexts ``(k, ctx, D)`` float32 the service received, from an ``.npy`` file or a dataset folder.

    - ``*.npy`` of shape ``(n, ctx, D)`` (the service's rolling window of received contexts): read
      memory-mapped, without pickle; up to ``max_windows`` rows sampled with ``seed``.
    - a dataset folder: its held-out ``test`` and ``ood`` windows (another snapshot, another wiki).
    """
    path = Path(path)
    if path.is_dir():
        return load_reference_contexts(path, splits=("test", "ood"), max_windows=max_windows, seed=seed,
                                       require_ready=False)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .npy file or dataset folder")
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected contexts of shape (n, ctx, D), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: no contexts")
    return np.asarray(arr[_window_sample(arr.shape[0], max_windows, seed)], dtype=np.float32)
