"""The service's Prometheus metrics, in the app's own `CollectorRegistry` (names are what dashboards read)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, Summary

from lvm_core.serving.holder import ModelHolder, Served


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lvm_serve_requests", "Requests by endpoint, model version and status code",
                                ["endpoint", "version", "code"], registry=r)
        self.latency = Histogram("lvm_serve_request_latency_seconds", "Request latency by endpoint and model version",
                                 ["endpoint", "version"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.errors = Counter("lvm_serve_errors", "Failed requests by kind (validation, auth, not_found, "
                              "unavailable, internal), endpoint and model version", ["kind", "endpoint", "version"],
                              registry=r)
        self.contexts = Counter("lvm_serve_predicted_contexts", "Contexts predicted, by model version",
                                ["version"], registry=r)
        self.online_cosine = Summary("lvm_serve_online_cosine", "cos(prediction, true next chunk) from feedback",
                                     ["version"], registry=r)
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
