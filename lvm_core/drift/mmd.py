"""The MMD permutation test between groups: kernel mean embeddings of the groups, whole groups permuted.

:func:`mmd_permutation_test` combines a linear kernel and RBF kernels at several multiples of the median
distance (:func:`median_bandwidth`); its p-value is exact when the groups are exchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from lvm_core.drift.features import _check_pair, _pooled_groups

DEFAULT_PERMUTATIONS = 1000
_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0)  # RBF bandwidths of the MMD test, times the median distance

__all__ = [
    "DEFAULT_PERMUTATIONS",
    "MMDResult",
    "median_bandwidth",
    "mmd_permutation_test",
]


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
