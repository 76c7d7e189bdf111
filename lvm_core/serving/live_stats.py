"""Per-version counters since the current rollout step began: what `GET /v1/rollout/stats` answers.

Prometheus counters only grow and are kept per process since its start; a rollout decision needs both
versions' numbers over the same period, the current step. The window restarts whenever the rollout
state read from the registry names another step (`RolloutState.window`), so a rollout flow reading the
stats after its step period compares like with like.
"""

from __future__ import annotations

import collections
import datetime as _dt
import threading
from typing import Any

import numpy as np


class _Version:
    __slots__ = ("requests", "errors", "by_kind", "latencies", "cos_sum", "cos_count")

    def __init__(self, max_latencies: int):
        self.requests = 0
        self.errors = 0
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=max_latencies)
        self.cos_sum = 0.0
        self.cos_count = 0


class LiveStats:
    """Requests, server errors, latency percentiles and online cosine per version in the current window.

    Latency percentiles come from the last `max_latencies` requests of each version (bounded memory).
    """

    def __init__(self, max_latencies: int = 50_000):
        self.max_latencies = int(max_latencies)
        self._lock = threading.Lock()
        self._window: str | None = None
        self._since = self._now()
        self._versions: dict[str, _Version] = {}

    @staticmethod
    def _now() -> str:
        return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")

    @property
    def window(self) -> str | None:
        return self._window

    def reset(self, window: str | None) -> None:
        """Start a new window (a new rollout step, or none)."""
        with self._lock:
            self._window = window
            self._since = self._now()
            self._versions = {}

    def _get(self, version: str) -> _Version:
        v = self._versions.get(version)
        if v is None:
            v = self._versions[version] = _Version(self.max_latencies)
        return v

    def record_request(self, version: str, latency_s: float, status: int, kind: str | None = None) -> None:
        """One predict request answered by `version`; a 5xx counts as an error of the version."""
        with self._lock:
            v = self._get(version)
            v.requests += 1
            v.latencies.append(float(latency_s))
            if status >= 400:
                v.by_kind[kind or ("internal" if status >= 500 else "validation")] += 1
            if status >= 500:
                v.errors += 1

    def record_cosine(self, version: str, cosine: float) -> None:
        with self._lock:
            v = self._get(version)
            v.cos_sum += float(cosine)
            v.cos_count += 1

    def snapshot(self) -> dict[str, Any]:
        """{"window", "since", "versions": {version: {requests, errors, error_rate, errors_by_kind,
        p50_latency_s, p99_latency_s, cosine_mean, cosine_count}}}."""
        with self._lock:
            out: dict[str, Any] = {}
            for name, v in self._versions.items():
                lat = np.fromiter(v.latencies, dtype=np.float64, count=len(v.latencies))
                out[name] = {
                    "requests": v.requests,
                    "errors": v.errors,
                    "error_rate": v.errors / v.requests if v.requests else 0.0,
                    "errors_by_kind": dict(v.by_kind),
                    "p50_latency_s": float(np.percentile(lat, 50)) if lat.size else None,
                    "p99_latency_s": float(np.percentile(lat, 99)) if lat.size else None,
                    "cosine_mean": v.cos_sum / v.cos_count if v.cos_count else None,
                    "cosine_count": v.cos_count,
                }
            return {"window": self._window, "since": self._since, "versions": out}
