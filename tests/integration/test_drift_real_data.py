"""The drift monitor on real articles (the suite's small built dataset): new articles of the same snapshot
do not alert, a real shift does, in repeated draws.

Each draw splits the dataset's articles at random into a reference side and a current side (disjoint: new
articles, as the service meets them), reads up to 4 windows per article as the monitor does, and runs the
monitor's test with its default threshold and alpha. The dataset has 13 articles with windows, so the
minimum sample is lowered to 5 articles a side (the smallest the 5-fold grouped classifier accepts; the
monitor's default is 10).

The binomial argument: if the true failure rate were 5 %, 59 draws would all succeed with probability
0.95 ** 59 = 4.8 %, and 93 draws would have at most one failure with probability 4.9997 %; so either pass
shows a success rate above 95 % at 95 % confidence (the one-sided Clopper-Pearson bound, computed below).
The null test allows one alert because the monitor's false-alarm rate is about alpha = 1 %, not 0 (59 draws
with none allowed would fail 45 % of seed choices). The draws are seeded, so the test is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from lvm_core.drift.features import DEFAULT_MAX_PER_GROUP, sample_groups
from lvm_core.drift.report import drift_report
from lvm_core.io.vectors import l2_normalize

NULL_DRAWS = 93  # one alert allowed: the 95 % Clopper-Pearson bound of 1/93 is 4.9994 %
SHIFT_DRAWS = 59  # no miss allowed: 0.95 ** 59 = 4.8 %
MIN_GROUPS = 5


def failure_rate_bound(failures: int, draws: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound on a failure rate."""
    return 1.0 if failures >= draws else float(beta.ppf(0.95, failures + 1, draws - failures))


@pytest.fixture(scope="module")
def articles(small_dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """Up to 4 windows of every article of the dataset (all splits) and their article ids."""
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import SequenceSet, gather

    ds = load_dataset(small_dataset)
    seqs = SequenceSet.concat([s for s in ds.sequences.values() if len(s)])
    idx = sample_groups(seqs.article_ids, None, DEFAULT_MAX_PER_GROUP, np.random.default_rng(0))
    ctx, _ = gather(ds.vectors, seqs, idx)
    return ctx, seqs.article_ids[idx]


def _draws(articles: tuple[np.ndarray, np.ndarray], draws: int, shift=None) -> tuple[int, list[float]]:
    ctx, ids = articles
    unique = np.unique(ids)
    assert len(unique) >= 2 * MIN_GROUPS
    drifted, aucs = 0, []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        ref_articles = rng.choice(unique, len(unique) // 2, replace=False)
        ref, cur = np.isin(ids, ref_articles), ~np.isin(ids, ref_articles)
        current = ctx[cur] if shift is None else shift(ctx[cur])
        report = drift_report(ctx[ref], current, ids[ref], ids[cur], min_groups=MIN_GROUPS, seed=seed,
                                    n_permutations=500)
        drifted += report.drifted
        aucs.append(float(report.auc or 0.0))
    return drifted, aucs


def test_new_articles_of_the_same_snapshot_do_not_alert(articles) -> None:
    alerts, aucs = _draws(articles, NULL_DRAWS)
    print(f"held-out articles: {alerts}/{NULL_DRAWS} alerts, AUC median {np.median(aucs):.3f} max {max(aucs):.3f}")
    assert failure_rate_bound(alerts, NULL_DRAWS) < 0.05


def test_rotated_vectors_alert(articles) -> None:
    """Every vector of the current side turned by 30 degrees towards one fixed direction (another encoder
    version, a preprocessing change): a small shift per vector, a systematic one across the traffic."""
    rng = np.random.default_rng(99)
    direction = l2_normalize(rng.standard_normal(articles[0].shape[-1]), dtype=None)

    def rotate(ctx: np.ndarray) -> np.ndarray:
        v = ctx.astype(np.float64)
        ortho = l2_normalize(direction - (v @ direction)[..., None] * v, dtype=None)
        t = np.deg2rad(30.0)
        return (np.cos(t) * v + np.sin(t) * ortho).astype(np.float32)

    alerts, aucs = _draws(articles, SHIFT_DRAWS, rotate)
    print(f"rotated 30 degrees: {alerts}/{SHIFT_DRAWS} alerts, AUC median {np.median(aucs):.3f} min {min(aucs):.3f}")
    assert failure_rate_bound(SHIFT_DRAWS - alerts, SHIFT_DRAWS) < 0.05
