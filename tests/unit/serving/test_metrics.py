"""The service's metrics as Prometheus reads them: counters that only grow (a negative online cosine must not
look like a counter reset to `rate()`), a mean recoverable from them, and latency buckets fine enough for a
service whose p50 is about a millisecond."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lvm_core.serving.metrics import COSINE_BUCKETS, LATENCY_BUCKETS, ServeMetrics


def scrape(metrics: ServeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a Prometheus scrape of /metrics stores: series name and labels -> value."""
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def cosine_series(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k[0].startswith("lvm_serve_online_cosine")
            and not k[0].startswith("lvm_serve_online_cosine_mean")}


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' estimate from cumulative (upper bound, count) buckets: linear inside the bucket."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    raise AssertionError("unreachable")


def test_online_cosine_series_only_grow_and_give_the_mean() -> None:
    metrics = ServeMetrics()
    rng = np.random.default_rng(0)
    cosines = np.concatenate([rng.uniform(-1, 1, 200), [-1.0, 1.0, -0.999]])
    before = cosine_series(scrape(metrics))
    for i, cos in enumerate(cosines):
        metrics.online_cosine.labels("4").observe(float(cos))
        if i % 10 == 0 or cos < 0:
            now = cosine_series(scrape(metrics))
            for key, value in now.items():  # every exposed series is a counter: never down
                assert value >= before.get(key, 0.0), (key, value, before.get(key))
            before = now
    final = scrape(metrics)
    assert not any(name == "lvm_serve_online_cosine_sum" for name, _ in final), "a sum of cosines can go down"
    count = final[("lvm_serve_online_cosine_count", (("version", "4"),))]
    plus_one = final[("lvm_serve_online_cosine_plus_one_total", (("version", "4"),))]
    assert count == len(cosines)
    assert plus_one / count - 1 == pytest.approx(float(np.mean(cosines)), abs=1e-9)  # what the alert rule computes
    assert final[("lvm_serve_online_cosine_bucket", (("le", "0.0"), ("version", "4")))] == np.sum(cosines <= 0)
    assert final[("lvm_serve_online_cosine_bucket", (("le", "+Inf"), ("version", "4")))] == count


def test_online_cosine_buckets_cover_minus_one_to_one_and_odd_values_are_safe() -> None:
    assert COSINE_BUCKETS[0] == -1.0 and COSINE_BUCKETS[-1] == 1.0 and list(COSINE_BUCKETS) == sorted(COSINE_BUCKETS)
    metrics = ServeMetrics()
    child = metrics.online_cosine.labels("1")
    for value in (1.0000001, -1.0000001, float("nan"), float("inf")):  # rounding clipped, non-finite dropped
        child.observe(value)
    sample = scrape(metrics)
    assert sample[("lvm_serve_online_cosine_count", (("version", "1"),))] == 2
    assert sample[("lvm_serve_online_cosine_plus_one_total", (("version", "1"),))] == pytest.approx(2.0)
    assert sample[("lvm_serve_online_cosine_bucket", (("le", "-1.0"), ("version", "1")))] == 1
    assert sample[("lvm_serve_online_cosine_bucket", (("le", "1.0"), ("version", "1")))] == 2


def test_latency_buckets_resolve_a_millisecond_service_and_the_10ms_target() -> None:
    assert LATENCY_BUCKETS[0] <= 0.0001 and 0.01 in LATENCY_BUCKETS
    metrics = ServeMetrics()
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(mean=math.log(0.0012), sigma=0.3, size=5000)  # p50 ≈ 1.2 ms
    for value in latencies:
        metrics.latency.labels("/v1/predict", "1").observe(float(value))
    sample = scrape(metrics)
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in sample.items()
                     if name == "lvm_serve_request_latency_seconds_bucket")
    for q in (0.5, 0.9):
        assert histogram_quantile(q, buckets) == pytest.approx(float(np.quantile(latencies, q)), rel=0.15), q
    # With the old buckets (the first at 1 ms, the next at 2.5 ms) the p50 estimate was off by about half.
    old = [(b, sum(latencies <= b)) for b in (.001, .0025, .005, .01)] + [(math.inf, len(latencies))]
    assert abs(histogram_quantile(0.5, old) / np.quantile(latencies, 0.5) - 1) > 0.15
