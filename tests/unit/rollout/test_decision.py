"""The rollout decision from the two versions' live numbers: step, promote, hold, or roll back with the numbers."""

from __future__ import annotations

import pytest

from lvm_core.rollout.decision import Thresholds, decide
from lvm_core.rollout.stats import VersionStats

T = Thresholds(min_requests=100, min_feedback=30, max_error_rate_increase=0.01, max_p99_ratio=1.5, p99_slack_s=0.01,
               max_cosine_drop=0.02)
CHAMP = VersionStats(1, requests=1900, errors=2, p99_latency_s=0.020, cosine_mean=0.55, cosine_count=400)


def _ch(**kw) -> VersionStats:
    base = dict(requests=100, errors=0, p99_latency_s=0.021, cosine_mean=0.55, cosine_count=30)
    return VersionStats(2, **{**base, **kw})


def test_decision_steps_then_promotes_a_challenger_that_holds():
    d = decide(CHAMP, _ch(), T, share=0.05)
    assert (d.action, d.share) == ("step", 0.2) and "step to 20%" in d.reason
    d = decide(CHAMP, _ch(), T, share=0.2)
    assert (d.action, d.share) == ("promote", 1.0)
    assert d.numbers["challenger"]["requests"] == 100 and d.numbers["thresholds"]["min_requests"] == 100


@pytest.mark.parametrize("kw, words", [
    (dict(cosine_mean=0.50), "online cosine 0.5000 vs champion 0.5500"),
    (dict(errors=5), "error rate 5.00%"),
    (dict(p99_latency_s=0.050), "p99 latency 50.0 ms vs champion 20.0 ms"),
])
def test_decision_rolls_back_a_worse_challenger_with_the_numbers(kw, words):
    d = decide(CHAMP, _ch(**kw), T, share=0.2)
    assert d.action == "rollback" and d.share == 0.0
    assert words in d.reason, d.reason


def test_decision_holds_until_both_sides_have_the_minimum_samples():
    d = decide(CHAMP, _ch(requests=99, cosine_count=29), T, share=0.05)
    assert d.action == "hold" and d.share == 0.05
    assert "requests 99/1900" in d.reason and "feedback 29/400" in d.reason
    # clearly worse but too few samples to judge: hold, never step
    assert decide(CHAMP, _ch(requests=20, errors=20), T, share=0.05).action == "hold"
    # without feedback required, cosine is not judged
    no_fb = Thresholds(min_requests=100, min_feedback=0)
    assert decide(CHAMP, _ch(cosine_count=0, cosine_mean=None), no_fb, share=0.05).action == "step"
