"""Per-version counters since the current rollout step began: what `GET /v1/rollout/stats` answers.

Prometheus counters only grow and are kept per process since its start; a rollout decision needs both
versions' numbers over the same period, the current step. The window restarts whenever the rollout
state read from the registry names another step (`RolloutState.window`), so a rollout flow reading the
stats after its step period compares like with like.

The decision treats clients, not requests, as independent (lvm_core.rollout.sequential), so the counts are
also kept per client: a client key's hash → [requests, errors, feedbacks, cosine sum]. Replicas report the
same hash for the same key, so the rollout flow merges one client's numbers across replicas. Requests
without a key are clients of one request each; they are kept as sums (and sums of squares), not one entry
each. At most `max_clients` keys are tracked per version; beyond that a new key's numbers count as keyless.
"""

from __future__ import annotations

import collections
import datetime as _dt
import hashlib
import threading
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

P99_CONFIDENCE = 0.99  # one-sided level of the p99 lower bound the rollout's latency rule reads


def client_hash(client_key: str) -> str:
    """The same short id for the same key on every replica; the raw key (a user id, maybe) is never reported."""
    return hashlib.sha256(client_key.encode()).hexdigest()[:16]


def quantile_lower_bound(sorted_values: np.ndarray, q: float, confidence: float) -> float | None:
    """Distribution-free lower confidence bound of the `q`-quantile: an order statistic chosen by the binomial.

    The true quantile is above the k-th smallest of n values with probability P(Binomial(n, q) ≥ k), so the
    largest k with that probability ≥ `confidence` gives the bound. None when n is too small for any.
    """
    n = int(sorted_values.size)
    if n == 0:
        return None
    k = int(_scipy_stats.binom.ppf(1.0 - confidence, n, q))  # P(B <= k-1) < 1-confidence ≤ P(B <= k)
    if k < 1:
        return None
    return float(sorted_values[k - 1])


class _Version:
    __slots__ = ("requests", "errors", "by_kind", "latencies", "cos_sum", "cos_count", "clients", "singles",
                 "overflow")

    def __init__(self, max_latencies: int):
        self.requests = 0
        self.errors = 0
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=max_latencies)
        self.cos_sum = 0.0
        self.cos_count = 0
        self.clients: dict[str, list[float]] = {}  # hash -> [requests, errors, feedbacks, cosine sum]
        # keyless: [requests, errors, feedbacks, cosine sum, cosine sum of squares]
        self.singles = [0.0, 0.0, 0.0, 0.0, 0.0]
        self.overflow = 0  # keys not tracked because max_clients was reached


class LiveStats:
    """Requests, server errors, latency percentiles and online cosine per version in the current window.

    Latency percentiles come from the last `max_latencies` requests of each version (bounded memory).
    """

    def __init__(self, max_latencies: int = 50_000, max_clients: int = 100_000):
        self.max_latencies = int(max_latencies)
        self.max_clients = int(max_clients)
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

    def _client(self, v: _Version, client: str | None) -> list[float] | None:
        """The client's totals (created on first sight), or None for a keyless (or untracked) request."""
        if not client:
            return None
        h = client_hash(client)
        row = v.clients.get(h)
        if row is None:
            if len(v.clients) >= self.max_clients:
                v.overflow += 1
                return None
            row = v.clients[h] = [0.0, 0.0, 0.0, 0.0]
        return row

    def record_request(self, version: str, latency_s: float, status: int, kind: str | None = None,
                       client: str | None = None) -> None:
        """One predict request answered by `version` for `client`; a 5xx counts as an error of the version."""
        with self._lock:
            v = self._get(version)
            v.requests += 1
            v.latencies.append(float(latency_s))
            if status >= 400:
                v.by_kind[kind or ("internal" if status >= 500 else "validation")] += 1
            failed = status >= 500
            if failed:
                v.errors += 1
            row = self._client(v, client)
            target = row if row is not None else v.singles
            target[0] += 1
            target[1] += 1 if failed else 0

    def record_cosine(self, version: str, cosine: float, client: str | None = None) -> None:
        """One feedback cosine of a prediction `version` made for `client`."""
        c = float(cosine)
        with self._lock:
            v = self._get(version)
            v.cos_sum += c
            v.cos_count += 1
            row = self._client(v, client)
            if row is None:
                v.singles[2] += 1
                v.singles[3] += c
                v.singles[4] += c * c
            else:
                row[2] += 1
                row[3] += c

    def snapshot(self) -> dict[str, Any]:
        """{"window", "since", "versions": {version: {requests, errors, error_rate, errors_by_kind,
        p50_latency_s, p99_latency_s, p99_lower_s, cosine_mean, cosine_count, clients, keyless,
        clients_untracked}}}; `clients` maps a key's hash to [requests, errors, feedbacks, cosine sum]."""
        with self._lock:
            out: dict[str, Any] = {}
            for name, v in self._versions.items():
                lat = np.sort(np.fromiter(v.latencies, dtype=np.float64, count=len(v.latencies)))
                out[name] = {
                    "requests": v.requests,
                    "errors": v.errors,
                    "error_rate": v.errors / v.requests if v.requests else 0.0,
                    "errors_by_kind": dict(v.by_kind),
                    "p50_latency_s": float(np.percentile(lat, 50)) if lat.size else None,
                    "p99_latency_s": float(np.percentile(lat, 99)) if lat.size else None,
                    "p99_lower_s": quantile_lower_bound(lat, 0.99, P99_CONFIDENCE),
                    "cosine_mean": v.cos_sum / v.cos_count if v.cos_count else None,
                    "cosine_count": v.cos_count,
                    "clients": {h: list(row) for h, row in v.clients.items()},
                    "keyless": list(v.singles),
                    "clients_untracked": v.overflow,
                }
            return {"window": self._window, "since": self._since, "versions": out}
