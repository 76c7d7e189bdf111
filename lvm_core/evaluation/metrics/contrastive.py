"""Contrastive accuracy: is the prediction closer to its own target than to the other windows' targets?

As in Meta's Large Concept Model paper. Unlike retrieval over the whole bank, the distractors are real
next chunks of other windows, so the number does not reward predicting "typical" chunks.
"""

from __future__ import annotations

import numpy as np

from lvm_core.data.retrieval.bank import TIE_EPS
from lvm_core.evaluation.inputs import EvaluationError
from lvm_core.io.vectors import l2_normalize

__all__ = ["contrastive_accuracy", "contrastive_shares", "mean_share"]


def contrastive_accuracy(
    pred: np.ndarray,
    targets: np.ndarray,
    *,
    max_negatives: int = 1024,
    seed: int = 0,
    target_keys: np.ndarray | None = None,
    tie_eps: float = TIE_EPS,
) -> float:
    """Mean over windows of `contrastive_shares` (NaN windows, those without negatives, left out): in
    [0, 1], higher is better, 0.5 is chance; NaN when no window has a negative."""
    shares = contrastive_shares(
        pred, targets, max_negatives=max_negatives, seed=seed, target_keys=target_keys, tie_eps=tie_eps
    )
    return mean_share(shares)


def mean_share(shares: np.ndarray) -> float:
    """Mean of per-window `contrastive_shares`, NaN windows left out (NaN when all are NaN)."""
    return float(np.nanmean(shares)) if np.isfinite(shares).any() else float("nan")


def contrastive_shares(
    pred: np.ndarray,
    targets: np.ndarray,
    *,
    max_negatives: int = 1024,
    seed: int = 0,
    target_keys: np.ndarray | None = None,
    tie_eps: float = TIE_EPS,
) -> np.ndarray:
    """Per window: the share of OTHER targets farther from the prediction than the true one (NaN: none).

    All other targets are negatives when there are at most `max_negatives` of them; otherwise each
    window draws `max_negatives` (with replacement) from a seeded generator, so the number is
    reproducible. Negatives with the same `target_keys` entry (e.g. the same text hash) are skipped:
    they are the same text. "Farther" means a lower cosine by more than `tie_eps` (ties are not counted
    as farther).
    """
    p = l2_normalize(np.asarray(pred, dtype=np.float32))
    t = l2_normalize(np.asarray(targets, dtype=np.float32))
    if p.shape != t.shape or p.ndim != 2:
        raise EvaluationError(f"contrastive_accuracy: pred {p.shape} and targets {t.shape} must be equal (n, D)")
    n = p.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    keys = _key_codes(target_keys, n)
    true_s = np.einsum("ij,ij->i", p, t)
    neg = _sampled_negatives(n, max_negatives, seed)
    block = max(1, (1 << 22) // n)
    shares = np.full(n, np.nan)
    for s in range(0, n, block):
        e = min(n, s + block)
        scores = p[s:e] @ t.T
        idx = np.arange(s, e)
        if neg is not None:
            cols = neg[s:e]
            scores = np.take_along_axis(scores, cols, axis=1)
            valid = np.ones(cols.shape, dtype=bool)
        else:
            cols = np.broadcast_to(np.arange(n), scores.shape)
            valid = cols != idx[:, None]
        if keys is not None:
            valid &= keys[cols] != keys[idx][:, None]
        farther = (scores < (true_s[s:e] - np.float32(tie_eps))[:, None]) & valid
        n_valid = valid.sum(axis=1)
        ok = n_valid > 0
        shares[s:e][ok] = farther.sum(axis=1)[ok] / n_valid[ok]
    return shares


def _key_codes(target_keys: np.ndarray | None, n: int) -> np.ndarray | None:
    """Integer codes of `target_keys` (equal keys, equal codes), or None without keys."""
    if target_keys is None:
        return None
    _, keys = np.unique(np.asarray(target_keys), return_inverse=True)
    keys = keys.reshape(-1)
    if keys.shape != (n,):
        raise EvaluationError(f"contrastive_accuracy: target_keys has {keys.shape[0]} entries for {n} windows")
    return keys


def _sampled_negatives(n: int, max_negatives: int, seed: int) -> np.ndarray | None:
    """(n, max_negatives) seeded draws of other windows' indices, or None when all n - 1 others are used."""
    if n - 1 <= max_negatives:
        return None
    rng = np.random.default_rng(seed)
    neg = rng.integers(0, n - 1, size=(n, max_negatives))
    neg += neg >= np.arange(n)[:, None]  # skip the window's own target
    return neg
