"""The confidence sequence behind the rollout's decision holds its level under repeated looks on clustered data,
where a fixed-sample interval and a per-request variance do not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lvm_core.rollout.sequential import ClusterTotals, compare, mixture_half_width, ratio_estimate

BETWEEN, WITHIN = 0.063, 0.13  # the sample's per-article sd of the mean cosine and per-window sd around it
MARGIN, ALPHA = 0.015, 0.05


def _grow(rng: np.random.Generator, looks: int, clients_per_look: int, windows_per_look: int) -> list[tuple]:
    """Cumulative per-client (sum, count) after each look: new clients arrive, every client reads on."""
    means = np.empty(0)
    sums = np.empty(0)
    counts = np.empty(0)
    out = []
    for _ in range(looks):
        means = np.concatenate([means, rng.normal(0.0, BETWEEN, clients_per_look)])
        sums = np.concatenate([sums, np.zeros(clients_per_look)])
        counts = np.concatenate([counts, np.zeros(clients_per_look)])
        k = windows_per_look
        sums = sums + rng.normal(means * k, WITHIN * math.sqrt(k))
        counts = counts + k
        out.append((sums.copy(), counts.copy()))
    return out


def _false_alarms(runs: int, looks: int, rule: str, seed: int = 0) -> float:
    """Share of A/A runs (no true difference) that call the challenger worse at some look."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(runs):
        ch = _grow(rng, looks, 4, 3)  # 5% share: few challenger clients
        cp = _grow(rng, looks, 40, 3)
        for (cs, cn), (ps, pn) in zip(ch, cp):
            if rule == "sequential":
                c = compare("cos", ClusterTotals(cs, cn), ClusterTotals(ps, pn), margin=0.0, alpha=ALPHA,
                            higher_is_better=True, min_clients=8, planned_se=MARGIN / 3)
                hit = c.verdict == "worse"
            else:  # a fixed-sample 95% interval with a per-request variance, looked at every time
                diff = cs.sum() / cn.sum() - ps.sum() / pn.sum()
                se = math.sqrt((BETWEEN**2 + WITHIN**2) / cn.sum() + (BETWEEN**2 + WITHIN**2) / pn.sum())
                hit = cn.size >= 8 and diff + 1.96 * se < 0
            if hit:
                alarms += 1
                break
    return alarms / runs


def test_repeated_looks_at_an_identical_challenger_stay_within_the_level():
    """30 looks per rollout, clients of correlated windows, margin 0 (the hardest case): the one-sided 'worse' rate
    stays under alpha/2 = 2.5% (400 runs: an observed rate ≤ 4% rules out a true 6% at the 1% level)."""
    rate = _false_alarms(400, 30, "sequential")
    assert rate <= 0.04, rate


def test_a_fixed_interval_with_per_request_variance_alarms_far_more_often_on_the_same_data():
    naive = _false_alarms(200, 30, "naive")
    assert naive >= 0.15, naive  # the defect the confidence sequence fixes


def test_ratio_estimate_of_singletons_is_the_sample_variance_of_the_mean():
    x = np.random.default_rng(3).normal(0.5, 0.1, 50)
    t = ClusterTotals(np.zeros(0), np.zeros(0), singles_n=50, singles_sum=float(x.sum()), singles_sq=float(x @ x))
    mean, var = ratio_estimate(t)
    assert mean == pytest.approx(x.mean()) and var == pytest.approx(x.var(ddof=1) / 50)
    as_clients = ClusterTotals.of([(v, 1.0) for v in x])
    assert ratio_estimate(as_clients) == pytest.approx((mean, var))


def test_correlated_windows_widen_the_interval_compared_with_counting_requests():
    rng = np.random.default_rng(1)
    means = rng.normal(0.5, BETWEEN, 40)
    sums = np.array([rng.normal(m, WITHIN, 25).sum() for m in means])
    clustered = ratio_estimate(ClusterTotals(sums, np.full(40, 25.0)))[1]
    assert clustered > 5 * (WITHIN**2 + BETWEEN**2) / 1000  # ~ BETWEEN²/40 vs sd²/1000 rows


def test_the_boundary_is_wider_than_a_fixed_interval_and_tightest_near_the_plan():
    se = 0.005
    half = mixture_half_width(se, ALPHA, planned_se=se)
    assert 1.96 * se < half < 2.0 * 1.96 * se
    ratios = [mixture_half_width(s, ALPHA, planned_se=se) / s for s in (0.05, 0.005, 0.0005)]
    assert ratios[1] == min(ratios)
    assert mixture_half_width(0.0, ALPHA, se) == 0.0 and math.isinf(mixture_half_width(math.inf, ALPHA, se))


def test_a_rate_with_no_error_seen_keeps_a_binomial_floor():
    none = ClusterTotals.of([(0.0, 10.0)] * 300)
    c = compare("error rate", none, none, margin=0.005, alpha=ALPHA, higher_is_better=False, min_clients=20, rate=True)
    assert c.se is not None and c.se > 0 and c.verdict == "non_inferior"
    all_failed = ClusterTotals.of([(10.0, 10.0)] * 30)
    c = compare("error rate", all_failed, none, margin=0.005, alpha=ALPHA, higher_is_better=False, min_clients=20,
                rate=True)
    assert c.verdict == "worse" and c.lower is not None and c.lower > 0.5
