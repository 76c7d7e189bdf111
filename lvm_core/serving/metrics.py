"""The service's Prometheus metrics, in the app's own `CollectorRegistry` (names are what dashboards and the
alert rules of docker/prometheus/alerts.yml read; docs/monitoring.md lists them)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from lvm_core.serving.holder import ModelHolder, Served

# Request latency: p50 of /v1/predict is about 1.2 ms, so the buckets start at 0.1 ms; 10 ms (the p99 target
# of LvmServeHighP99Latency) is a bucket bound, so histogram_quantile tells exactly whether p99 is above it.
LATENCY_BUCKETS = (.0001, .00025, .0005, .00075, .001, .0015, .002, .003, .005, .0075, .01, .025, .05, .1, .25, .5,
                   1.0, 2.5, 5.0, 10.0)
# Online cosine: the whole of [-1, 1], finer where trained models land (0.5 - 1).
COSINE_BUCKETS = (-1.0, -0.5, -0.25, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


class CosineHistogram:
    """Online cosines by version: a histogram over [-1, 1] (`_bucket`, `_count`) and `<name>_plus_one_total`.

    A Summary's or Histogram's `_sum` of cosines goes *down* with every negative cosine, which `rate()` reads
    as a counter reset; so no `_sum` is exposed (OpenMetrics forbids it for histograms with negative buckets).
    The mean over a window comes from the sum of `1 + cos` instead, which only grows:
    `rate(<name>_plus_one_total[w]) / rate(<name>_count[w]) - 1`.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry,
                 buckets: Sequence[float] = COSINE_BUCKETS) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(float(b) for b in buckets)) + (math.inf,)
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}  # version -> per-bucket counts (not cumulative)
        self._plus_one: dict[str, float] = {}
        registry.register(self)

    def labels(self, version: str) -> _CosineChild:
        """The same call shape as prometheus_client's labelled metrics (`.labels(v).observe(x)`)."""
        return _CosineChild(self, str(version))

    def observe(self, version: str, value: float) -> None:
        """Record one cosine; clipped to [-1, 1] (rounding), a non-finite one is dropped (it would poison the sum)."""
        if not math.isfinite(value):
            return
        cos = min(1.0, max(-1.0, float(value)))
        index = next(i for i, bound in enumerate(self.bounds) if cos <= bound)
        with self._lock:
            self._counts.setdefault(version, [0] * len(self.bounds))[index] += 1
            self._plus_one[version] = self._plus_one.get(version, 0.0) + 1.0 + cos

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = {v: list(c) for v, c in self._counts.items()}
            plus_one = dict(self._plus_one)
        hist = Metric(self.name, self.documentation, "histogram")
        total = CounterMetricFamily(f"{self.name}_plus_one", f"Sum of (1 + {self.name}): grows with every "
                                    "observation, unlike a sum of cosines", labels=["version"])
        for version in sorted(counts):
            cumulative = 0
            for bound, n in zip(self.bounds, counts[version], strict=True):
                cumulative += n
                hist.add_sample(f"{self.name}_bucket", {"version": version, "le": _le(bound)}, cumulative)
            hist.add_sample(f"{self.name}_count", {"version": version}, cumulative)
            total.add_metric([version], plus_one[version])
        yield hist
        yield total

    def describe(self) -> Iterator[Metric]:
        yield Metric(self.name, self.documentation, "histogram")
        yield CounterMetricFamily(f"{self.name}_plus_one", "", labels=["version"])


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes `le` ("0.5", "-1.0", "+Inf")."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _CosineChild:
    def __init__(self, parent: CosineHistogram, version: str) -> None:
        self._parent, self._version = parent, version

    def observe(self, value: float) -> None:
        self._parent.observe(self._version, value)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lvm_serve_requests", "Requests by endpoint, model version and status code",
                                ["endpoint", "version", "code"], registry=r)
        self.latency = Histogram("lvm_serve_request_latency_seconds", "Request latency by endpoint and model version",
                                 ["endpoint", "version"], registry=r,
                                 buckets=LATENCY_BUCKETS)
        self.errors = Counter("lvm_serve_errors", "Failed requests by kind (validation, auth, not_found, "
                              "unavailable, internal), endpoint and model version", ["kind", "endpoint", "version"],
                              registry=r)
        self.contexts = Counter("lvm_serve_predicted_contexts", "Contexts predicted, by model version",
                                ["version"], registry=r)
        self.online_cosine = CosineHistogram("lvm_serve_online_cosine", "cos(prediction, true next chunk) from "
                                             "feedback, by version", registry=r)
        self.online_cosine_mean = Gauge("lvm_serve_online_cosine_mean", "Mean online cosine since start, by version",
                                        ["version"], registry=r)
        self.model_info = Gauge("lvm_serve_model_info", "1 for each model version being served",
                                ["name", "version", "alias"], registry=r)
        self.traffic_share = Gauge("lvm_serve_traffic_share", "Share of client keys each version answers "
                                   "(a staged rollout splits it between champion and challenger)", ["version"],
                                   registry=r)
        self.swaps = Counter("lvm_serve_model_swaps", "Models loaded and swapped in", registry=r)
        self.load_failures = Counter("lvm_serve_model_load_failures", "Failed alias lookups or model loads", registry=r)
        ProcessCollector(registry=r)

    def on_swap(self, old: Served | None, new: Served) -> None:
        self.swaps.inc()

    def sync(self, holder: ModelHolder) -> None:
        """Model info and traffic shares from what the holder serves now (after a swap or a rollout change)."""
        self.model_info.clear()
        self.traffic_share.clear()
        for served, share in holder.serving():
            self.model_info.labels(str(served.model.name), served.version_label, str(served.alias)).set(1)
            self.traffic_share.labels(served.version_label).set(share)

    def on_load_error(self, exc: BaseException) -> None:
        self.load_failures.inc()
