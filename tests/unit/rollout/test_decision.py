"""The rollout decision from the two versions' live numbers: step, promote, hold, or roll back, with each test's
interval recorded; and the looks of one step (`StepWatch`)."""

from __future__ import annotations

import numpy as np
import pytest

from lvm_core.rollout.decision import StepWatch, Thresholds, decide
from lvm_core.rollout.stats import VersionStats, merge_stats

T = Thresholds()


def stats(version: int, clients: int, cosine: float, *, windows: int = 20, errors_per_client: int = 0,
          p99: float = 0.0020, p99_lower: float | None = 0.0018, seed: int = 0) -> VersionStats:
    """`clients` clients of `windows` requests each, all with feedback: article means sd 0.06, windows sd 0.13."""
    rng = np.random.default_rng(seed + version)
    rows = {}
    for i in range(clients):
        cos = rng.normal(cosine + rng.normal(0, 0.06), 0.13, windows)
        rows[f"{version}-{i}"] = [windows, errors_per_client, windows, float(cos.sum())]
    n = clients * windows
    return VersionStats(version, requests=n, errors=clients * errors_per_client, p99_latency_s=p99,
                        cosine_mean=float(sum(r[3] for r in rows.values()) / n), cosine_count=n,
                        p99_lower_s=p99_lower, clients=rows)


CHAMP = stats(1, 2000, 0.55)


def test_a_challenger_that_holds_steps_then_promotes_and_the_numbers_carry_each_interval():
    ch = stats(2, 300, 0.55)
    d = decide(CHAMP, ch, T, share=0.05)
    assert (d.action, d.share) == ("step", 0.2) and "step to 20%" in d.reason, d.reason
    cos = d.numbers["tests"]["online_cosine"]
    assert cos["verdict"] == "non_inferior" and cos["lower"] > -T.cosine_margin
    assert cos["lower"] < cos["difference"] < cos["upper"] and cos["clients_challenger"] == 300
    assert d.numbers["tests"]["error_rate"]["verdict"] == "non_inferior"
    assert decide(CHAMP, ch, T, share=0.2).action == "promote"


@pytest.mark.parametrize("challenger, words", [
    (stats(2, 300, 0.50), "online cosine"),
    (stats(2, 300, 0.55, errors_per_client=2), "error rate"),
    (stats(2, 300, 0.55, p99=0.050, p99_lower=0.040), "p99 latency"),
])
def test_a_worse_challenger_is_rolled_back_with_the_numbers(challenger, words):
    d = decide(CHAMP, challenger, T, share=0.2)
    assert d.action == "rollback" and d.share == 0.0
    assert words in d.reason, d.reason


def test_a_slightly_worse_challenger_within_the_margin_is_not_rolled_back():
    d = decide(CHAMP, stats(2, 300, 0.545), T, share=0.05)
    assert d.action in ("step", "hold") and d.numbers["tests"]["online_cosine"]["verdict"] != "worse"


def test_too_few_clients_or_samples_hold_and_never_step():
    few = stats(2, 5, 0.55)
    d = decide(CHAMP, few, T, share=0.05)
    assert d.action == "hold" and "clients 5/2000" in d.reason, d.reason
    # a few clients that look much worse are not enough to judge either
    assert decide(CHAMP, stats(2, 5, 0.40), T, share=0.05).action == "hold"
    # without feedback required, the cosine is not judged
    no_fb = Thresholds(min_feedback=0)
    bare = VersionStats(2, requests=4000, clients={f"c{i}": [20, 0, 0, 0.0] for i in range(200)})
    assert decide(CHAMP, bare, no_fb, share=0.05).action == "step"


def test_a_challenger_failing_every_request_is_rolled_back_before_the_champion_has_its_minimum():
    champ = stats(1, 20, 0.55, windows=2)  # 40 requests: fewer than min_requests
    broken = VersionStats(2, requests=200, errors=200, clients={f"c{i}": [10, 10, 0, 0.0] for i in range(20)})
    d = decide(champ, broken, T, share=0.05)
    assert d.action == "rollback" and "error rate" in d.reason


def test_replicas_merge_per_client():
    a = VersionStats(2, requests=2, clients={"k": [2, 0, 2, 1.0]})
    b = VersionStats(2, requests=3, clients={"k": [3, 1, 3, 2.0], "j": [1, 0, 0, 0.0]})
    m = merge_stats(2, [a, b])
    assert m.clients == {"k": [5, 1, 5, 3.0], "j": [1, 0, 0, 0.0]} and m.requests == 5


def test_step_watch_rolls_back_at_any_look_but_steps_only_at_the_end_of_a_period():
    good, bad = stats(2, 300, 0.55), stats(2, 300, 0.40)
    w = StepWatch(T, 0.05, (0.05, 0.2, 1.0), step_seconds=600, max_holds=2, started=0.0)
    assert w.look(CHAMP, good, 30.0) is None  # non-inferior already, but the period is not over
    d = w.look(CHAMP, good, 600.0)
    assert d is not None and d.action == "step"
    w = StepWatch(T, 0.05, (0.05, 0.2, 1.0), step_seconds=600, max_holds=2, started=0.0)
    d = w.look(CHAMP, bad, 30.0)
    assert d is not None and d.action == "rollback"


def test_step_watch_rolls_back_a_challenger_still_undecided_after_the_extra_periods():
    undecided = stats(2, 25, 0.55)
    w = StepWatch(T, 0.05, (0.05, 0.2, 1.0), step_seconds=600, max_holds=2, started=0.0)
    actions = [getattr(w.look(CHAMP, undecided, t), "action", None) for t in (300.0, 600.0, 900.0, 1200.0, 1800.0)]
    assert actions == [None, "hold", None, "hold", "rollback"]
