"""Live stats of each version over the current step, as the services report them, merged across replicas."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.rollout.sequential import ClusterTotals
from lvm_core.rollout.state import RolloutState

STATS_PATH = "/v1/rollout/stats"


@dataclasses.dataclass(frozen=True)
class VersionStats:
    """What one version did since the current step began (one replica, or several merged).

    `clients` maps a client key's hash to its [requests, errors, feedbacks, cosine sum]; `keyless` holds the
    requests without a key, each its own client: [requests, errors, feedbacks, cosine sum, cosine sum of
    squares]. The sequential comparisons (lvm_core.rollout.sequential) read both.
    """

    version: Any
    requests: int = 0  # predict requests answered by this version (any status)
    errors: int = 0  # of which server-side failures (5xx); bad client input is not the model's fault
    p99_latency_s: float | None = None
    cosine_mean: float | None = None  # online cosine from /v1/feedback
    cosine_count: int = 0
    p99_lower_s: float | None = None  # distribution-free lower confidence bound of the p99 (worst replica)
    clients: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    keyless: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def error_totals(self) -> ClusterTotals:
        """Errors per request, per client."""
        k = self.keyless
        return ClusterTotals.of(((row[1], row[0]) for row in self.clients.values()), (int(k[0]), k[1], k[1]))

    def cosine_totals(self) -> ClusterTotals:
        """Feedback cosine per feedback, per client."""
        k = self.keyless
        return ClusterTotals.of(((row[3], row[2]) for row in self.clients.values()), (int(k[2]), k[3], k[4]))

    def to_dict(self) -> dict[str, Any]:
        """The summary numbers (per-client rows left out: a decision records their count, not the rows)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("clients", "keyless")}
        return {**d, "error_rate": self.error_rate, "clients": len(self.clients) + int(self.keyless[0])}

    @classmethod
    def from_dict(cls, version: Any, d: Mapping[str, Any]) -> VersionStats:
        keyless = [float(x) for x in (d.get("keyless") or [])][:5]
        return cls(version=version, requests=int(d.get("requests", 0)), errors=int(d.get("errors", 0)),
                   p99_latency_s=d.get("p99_latency_s"), cosine_mean=d.get("cosine_mean"),
                   cosine_count=int(d.get("cosine_count", 0)), p99_lower_s=d.get("p99_lower_s"),
                   clients={str(h): [float(x) for x in row] for h, row in (d.get("clients") or {}).items()},
                   keyless=keyless + [0.0] * (5 - len(keyless)))


def merge_stats(version: Any, parts: Sequence[VersionStats]) -> VersionStats:
    """Several replicas' stats of one version: counts add (a client's rows add up across replicas), cosine is
    count-weighted, p99 and its lower bound are the worst replica's."""
    requests = sum(p.requests for p in parts)
    n_cos = sum(p.cosine_count for p in parts)
    cos = sum((p.cosine_mean or 0.0) * p.cosine_count for p in parts) / n_cos if n_cos else None
    p99s = [p.p99_latency_s for p in parts if p.p99_latency_s is not None]
    lows = [p.p99_lower_s for p in parts if p.p99_lower_s is not None]
    clients: dict[str, list[float]] = {}
    keyless = [0.0] * 5
    for p in parts:
        for h, row in p.clients.items():
            acc = clients.setdefault(h, [0.0] * 4)
            for i in range(4):
                acc[i] += float(row[i])
        for i in range(5):
            keyless[i] += float(p.keyless[i])
    return VersionStats(version=version, requests=requests, errors=sum(p.errors for p in parts),
                        p99_latency_s=max(p99s) if p99s else None, cosine_mean=cos, cosine_count=n_cos,
                        p99_lower_s=max(lows) if lows else None, clients=clients, keyless=keyless)


def read_service_stats(
    urls: Sequence[str], state: RolloutState, token: str | None = None, timeout: float = 10.0
) -> tuple[VersionStats, VersionStats, list[dict[str, Any]]]:
    """(champion, challenger, per-replica notes) merged from each service's `GET /v1/rollout/stats`.

    A replica whose stats window is not the state's current step (it has not re-read the tags yet)
    is left out and noted; a replica that cannot be reached raises `httpx.HTTPError`.
    """
    import httpx

    if not urls:
        raise ValueError("no service URL to read rollout stats from (give --service-url)")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    champ_parts: list[VersionStats] = []
    chall_parts: list[VersionStats] = []
    notes: list[dict[str, Any]] = []
    for url in urls:
        res = httpx.get(url.rstrip("/") + STATS_PATH, headers=headers, timeout=timeout)
        res.raise_for_status()
        body = res.json()
        window = body.get("window")
        if window != state.window:
            notes.append({"url": url, "used": False, "window": window,
                          "why": f"stats window {window!r}, expected {state.window!r}"})
            continue
        versions = body.get("versions") or {}
        champ_parts.append(VersionStats.from_dict(state.champion, versions.get(str(state.champion), {})))
        chall_parts.append(VersionStats.from_dict(state.challenger, versions.get(str(state.challenger), {})))
        notes.append({"url": url, "used": True, "window": window, "since": body.get("since")})
    return merge_stats(state.champion, champ_parts), merge_stats(state.challenger, chall_parts), notes
