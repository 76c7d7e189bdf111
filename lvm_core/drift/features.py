"""The rows both drift tests compare, and the groups (articles, client sessions) they count as units.

:func:`context_features` turns contexts ``(n, ctx, D)`` into rows; :func:`group_codes`,
:func:`sample_groups`, :func:`link_shared_chunks` and :func:`group_served` label and sample them by group
(an article, or a client session: requests without a client key are linked by the chunks their windows
share). The checks on a pair of samples that both tests share are at the bottom.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np

from lvm_core.io.vectors import l2_normalize

Features = Literal["mean", "last", "mean_last"]

DEFAULT_MAX_GROUPS = 250  # groups per side the tests use
DEFAULT_MAX_PER_GROUP = 4  # windows per group the tests use
DEFAULT_FEATURES: Features = "mean_last"
LINK_DECIMALS = 2  # chunk vectors equal at this rounding are the same chunk (see group_served)

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_MAX_GROUPS",
    "DEFAULT_MAX_PER_GROUP",
    "context_features",
    "group_codes",
    "group_served",
    "link_shared_chunks",
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

# --- a pair of samples (both tests) ---------------------------------------------------------------


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
