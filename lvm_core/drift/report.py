"""The drift verdict: both tests on two grouped samples (:func:`drift_report`) and what they found
(:class:`DriftReport`: its summary line, its Markdown table, its JSON-plain dict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lvm_core.drift.classifier import domain_classifier_test
from lvm_core.drift.features import (
    DEFAULT_FEATURES,
    DEFAULT_MAX_GROUPS,
    DEFAULT_MAX_PER_GROUP,
    Features,
    context_features,
    group_codes,
    sample_groups,
)
from lvm_core.drift.mmd import DEFAULT_PERMUTATIONS, mmd_permutation_test

Verdict = Literal["drift", "no drift", "insufficient data"]

DEFAULT_THRESHOLD_AUC = 0.75
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_GROUPS = 10  # articles / sessions per side before any verdict

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_GROUPS",
    "DEFAULT_THRESHOLD_AUC",
    "DriftReport",
    "drift_report",
]


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


def _decide(auc: float, mmd_p_value: float, threshold_auc: float, alpha: float) -> tuple[bool, list[str], list[str]]:
    """(drifted, reasons, notes) of the two tests' scores: drift needs a large AUC (> ``threshold_auc``)
    **and** a significant MMD (p-value < ``alpha``); either one alone is a note, not drift."""
    large, significant = auc > threshold_auc, mmd_p_value < alpha
    drifted = large and significant
    reasons = [f"AUC {auc:.3f} > {threshold_auc}", f"MMD p-value {mmd_p_value:.3g} < {alpha}"] if drifted else []
    notes = []
    if large and not significant:
        notes.append(f"AUC {auc:.3f} above the threshold but MMD p-value {mmd_p_value:.3g}: not distinguishable "
                     "from a chance draw of articles with this many groups; not drift")
    if significant and not large:
        notes.append(f"MMD p-value {mmd_p_value:.3g}: a real but small difference (AUC {auc:.3f}); not drift")
    return drifted, reasons, notes


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
    drifted, reasons, notes = _decide(clf.auc, mmd.p_value, threshold_auc, alpha)
    return DriftReport(verdict="drift" if drifted else "no drift", drifted=drifted, auc=clf.auc,
                       auc_p_value=clf.p_value, mmd2=mmd.mmd2, mmd_p_value=mmd.p_value, mmd_bandwidth=mmd.bandwidth,
                       n_reference_used=len(ri), n_current_used=len(ci), reasons=reasons,
                       notes=notes, **base)
