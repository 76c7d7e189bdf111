"""The grouped domain classifier: can a logistic regression tell current rows from reference rows?

Cross-validated with whole groups held out, scored as an AUC over groups (:func:`domain_classifier_test`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvm_core.drift.features import _check_pair, _pooled_groups

__all__ = [
    "ClassifierResult",
    "domain_classifier_test",
]


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
