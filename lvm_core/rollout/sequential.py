"""Always-valid comparisons of a challenger with the champion, looked at every check period of a rollout.

A rollout re-reads both versions' live numbers every `check_seconds` and may act on any look. A fixed-sample
interval looked at again and again crosses any line sooner or later: the old rule (roll back when the means
differ by 0.02 once both have 30 feedbacks, first breach wins) rolled an identical challenger back in more
than half of the simulated rollouts. Two things make the comparison sound:

- **Clients, not requests, are the sampling unit.** Routing is sticky per client key and a client reads one
  article window after window, so its feedback cosines are correlated (on the sample: between-article sd of
  the mean cosine 0.063 against a within-article sd of 0.13). Each version's mean is a ratio estimator over
  its clients, with the cluster-robust (delta-method) variance `k/(k-1) Σ (s_i - r n_i)² / (Σ n_i)²`.
  Requests without a client key count as clients of one request each.
- **A confidence sequence instead of a confidence interval.** The normal-mixture boundary of Robbins
  (the martingale `∫ exp(λS - λ²V/2) dN(0, 1/ρ)(λ)` and Ville's inequality) holds its level simultaneously
  over every look, however many: with the estimate's information `I = 1/se²`, the difference lies within
  `± sqrt((I + ρ) (2 log(1/α) + log((I + ρ)/ρ))) / I` of the truth at all looks with probability ≥ 1 - α
  (asymptotically, as the CLT for the ratio estimator holds). `ρ` sets where the boundary is tightest; it is
  tuned to the information at which the interval's half-width reaches the non-inferiority margin.

Each metric is a non-inferiority comparison with a stated margin: the challenger is *worse* when the whole
interval lies beyond the margin, *non-inferior* when the whole interval lies on the good side of it, and
*undecided* otherwise. The decision (lvm_core.rollout.decision) rolls back on "worse" at any look and steps
only on "non-inferior". docs/monitoring.md explains the choice and the simulation that checks its error
rates (tests/unit/rollout/test_sequential.py, bench/bench_canary.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

Verdict = Literal["worse", "non_inferior", "undecided", "insufficient"]

__all__ = [
    "ClusterTotals",
    "Comparison",
    "compare",
    "mixture_half_width",
    "ratio_estimate",
]


@dataclasses.dataclass(frozen=True)
class ClusterTotals:
    """Per-client sufficient statistics of one metric for one version: the clients' numerators and denominators.

    `numerators[i] / denominators[i]` is client i's own mean (its errors per request, its cosine sum per
    feedback). `singles_*` fold in observations with no client key, each its own client:
    `singles_n` observations, their sum and sum of squares.
    """

    numerators: np.ndarray
    denominators: np.ndarray
    singles_n: int = 0
    singles_sum: float = 0.0
    singles_sq: float = 0.0

    @classmethod
    def of(cls, pairs: Iterable[tuple[float, float]], singles: tuple[int, float, float] = (0, 0.0, 0.0)
           ) -> ClusterTotals:
        rows = [(float(s), float(n)) for s, n in pairs if n > 0]
        num = np.array([r[0] for r in rows], dtype=np.float64)
        den = np.array([r[1] for r in rows], dtype=np.float64)
        return cls(num, den, int(singles[0]), float(singles[1]), float(singles[2]))

    @property
    def clients(self) -> int:
        return int(self.denominators.size) + self.singles_n

    @property
    def observations(self) -> float:
        return float(self.denominators.sum()) + self.singles_n


def ratio_estimate(totals: ClusterTotals) -> tuple[float, float]:
    """(mean, variance of the mean) of a ratio estimator over clients, cluster-robust; (nan, inf) when empty.

    The variance is the delta-method sandwich `k/(k-1) Σ (s_i - r n_i)² / N²` over the k clients (N the
    observations), the standard error that stays honest when a client's observations are correlated.
    """
    n_total = totals.observations
    k = totals.clients
    if n_total <= 0 or k == 0:
        return float("nan"), float("inf")
    r = (float(totals.numerators.sum()) + totals.singles_sum) / n_total
    resid = totals.numerators - r * totals.denominators
    ss = float(resid @ resid)
    ss += totals.singles_sq - 2.0 * r * totals.singles_sum + r * r * totals.singles_n
    if k < 2:
        return r, float("inf")
    return r, max(ss, 0.0) * k / (k - 1) / (n_total * n_total)


def _binomial_variance(totals: ClusterTotals) -> float:
    n = totals.observations
    p = (float(totals.numerators.sum()) + totals.singles_sum + 0.5) / (n + 1.0)
    return p * (1.0 - p) / max(n, 1.0)


def mixture_half_width(se: float, alpha: float, planned_se: float) -> float:
    """Half-width of the two-sided normal-mixture confidence sequence at standard error `se`.

    Valid at every look simultaneously (level 1 - `alpha`). `planned_se` is the standard error at which the
    boundary should be tightest; a mixture tuned there is ~1.5× a fixed-sample interval at that point and
    grows only like sqrt(log I) away from it.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not se > 0.0:
        return 0.0
    if not math.isfinite(se):
        return float("inf")
    info = 1.0 / (se * se)
    log_term = 2.0 * math.log(1.0 / alpha)
    rho = (1.0 / (planned_se * planned_se)) / (log_term + math.log1p(log_term))
    return math.sqrt((info + rho) * (log_term + math.log((info + rho) / rho))) / info


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The challenger − champion difference of one metric, its confidence sequence, and the verdict."""

    metric: str
    higher_is_better: bool
    challenger: float | None
    champion: float | None
    difference: float | None  # challenger − champion
    se: float | None
    lower: float | None  # the confidence sequence at this look
    upper: float | None
    margin: float  # non-inferiority margin, in the metric's units
    alpha: float
    clients_challenger: int
    clients_champion: int
    verdict: Verdict
    why: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def interval_text(self) -> str:
        if self.lower is None or self.upper is None or self.difference is None:
            return "no interval yet"
        return f"{self.difference:+.4f} [{self.lower:+.4f}, {self.upper:+.4f}]"


def compare(
    metric: str,
    challenger: ClusterTotals,
    champion: ClusterTotals,
    *,
    margin: float,
    alpha: float,
    higher_is_better: bool,
    min_clients: int,
    rate: bool = False,
    planned_se: float | None = None,
) -> Comparison:
    """Non-inferiority of the challenger on one metric, from both versions' per-client totals.

    `rate`: the metric is a proportion (errors per request); each side's variance is then at least the
    binomial `p(1-p)/n` with `p = (x + 0.5)/(n + 1)`, so that no error seen yet does not read as no
    uncertainty. Fewer than `min_clients` clients on either side: "insufficient". `planned_se` (default a
    third of the margin, where the interval's half-width nears the margin) tunes the boundary.
    """
    kc, kp = challenger.clients, champion.clients
    if kc < min_clients or kp < min_clients:
        return Comparison(metric, higher_is_better, None, None, None, None, None, None, margin, alpha, kc, kp,
                          "insufficient", f"clients {kc}/{kp} (challenger/champion) < {min_clients}")
    rc, vc = ratio_estimate(challenger)
    rp, vp = ratio_estimate(champion)
    if rate:
        vc = max(vc, _binomial_variance(challenger))
        vp = max(vp, _binomial_variance(champion))
    diff = rc - rp
    se = math.sqrt(vc + vp)
    plan = planned_se if planned_se is not None else margin / 3.0
    if not plan > 0:
        raise ValueError(f"{metric}: a margin of 0 needs an explicit planned_se")
    half = mixture_half_width(se, alpha, planned_se=plan)
    lower, upper = diff - half, diff + half
    if higher_is_better:
        worse, fine = upper < -margin, lower > -margin
    else:
        worse, fine = lower > margin, upper < margin
    verdict: Verdict = "worse" if worse else "non_inferior" if fine else "undecided"
    side = "below" if higher_is_better else "above"
    why = {
        "worse": f"worse beyond the margin: the whole interval lies {side} {'-' if higher_is_better else '+'}{margin}",
        "non_inferior": f"non-inferior: the whole interval lies within the margin {margin}",
        "undecided": f"undecided: the interval still straddles the margin {margin}",
    }[verdict]
    return Comparison(metric, higher_is_better, rc, rp, diff, se, lower, upper, margin, alpha, kc, kp, verdict, why)
