"""The pure hold / step / promote / rollback decision from both versions' live stats over one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from lvm_core.rollout.state import DEFAULT_PLAN, now
from lvm_core.rollout.stats import VersionStats

Action = Literal["hold", "step", "promote", "rollback"]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a challenger holds against the champion over the same period."""

    min_requests: int = 100  # per version, before any step (and before error/latency can be judged)
    min_feedback: int = 30  # feedback cosines per version before any step; 0 = cosine is not required
    max_error_rate_increase: float = 0.01  # challenger error rate − champion error rate
    max_p99_ratio: float = 1.5  # challenger p99 ≤ ratio × champion p99 ...
    p99_slack_s: float = 0.010  # ... + this slack (millisecond noise of fast models is no regression)
    max_cosine_drop: float = 0.02  # champion online cosine − challenger online cosine


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do after a step period, why, and the numbers it was decided on."""

    action: Action
    reason: str
    share: float  # the challenger's share after the decision (0 after a rollback, 1 after a promotion)
    numbers: dict[str, Any]
    at: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decide(
    champion: VersionStats,
    challenger: VersionStats,
    thresholds: Thresholds = Thresholds(),
    *,
    share: float,
    plan: Sequence[float] = DEFAULT_PLAN,
) -> Decision:
    """Hold, step, promote or roll back, from both versions' live stats over the same period.

    Rollback when, with enough samples to judge it, the challenger's error rate, p99 latency or online
    cosine is worse than the champion's beyond the thresholds. Hold while either side lacks the minimum
    samples. Otherwise step to the next share of `plan` after `share`, or promote when that is 1.0.
    """
    t = thresholds
    numbers: dict[str, Any] = {"champion": champion.to_dict(), "challenger": challenger.to_dict(),
                               "share": share, "thresholds": dataclasses.asdict(t)}
    bad: list[str] = []
    missing: list[str] = []
    enough_requests = champion.requests >= t.min_requests and challenger.requests >= t.min_requests
    if challenger.requests >= t.min_requests:
        increase = challenger.error_rate - champion.error_rate
        numbers["error_rate_increase"] = increase
        if increase > t.max_error_rate_increase:
            bad.append(f"error rate {challenger.error_rate:.2%} vs champion {champion.error_rate:.2%} "
                       f"(+{increase:.2%} > {t.max_error_rate_increase:.2%})")
    if enough_requests and champion.p99_latency_s is not None and challenger.p99_latency_s is not None:
        limit = champion.p99_latency_s * t.max_p99_ratio + t.p99_slack_s
        numbers["p99_limit_s"] = limit
        if challenger.p99_latency_s > limit:
            bad.append(f"p99 latency {challenger.p99_latency_s * 1e3:.1f} ms vs champion "
                       f"{champion.p99_latency_s * 1e3:.1f} ms (limit {limit * 1e3:.1f} ms)")
    if t.min_feedback > 0:
        enough_feedback = champion.cosine_count >= t.min_feedback and challenger.cosine_count >= t.min_feedback
        if enough_feedback and champion.cosine_mean is not None and challenger.cosine_mean is not None:
            drop = float(champion.cosine_mean) - float(challenger.cosine_mean)
            numbers["cosine_drop"] = drop
            if drop > t.max_cosine_drop:
                bad.append(f"online cosine {challenger.cosine_mean:.4f} vs champion {champion.cosine_mean:.4f} "
                           f"(drop {drop:.4f} > {t.max_cosine_drop:.4f})")
        else:
            missing.append(f"feedback {challenger.cosine_count}/{champion.cosine_count} (challenger/champion) "
                           f"< {t.min_feedback}")
    if not enough_requests:
        missing.insert(0, f"requests {challenger.requests}/{champion.requests} (challenger/champion) "
                          f"< {t.min_requests}")
    at = now()
    if bad:
        return Decision("rollback", f"challenger v{challenger.version} is worse than champion v{champion.version}: "
                        + "; ".join(bad), 0.0, numbers, at)
    if missing:
        return Decision("hold", "not enough samples yet: " + "; ".join(missing), share, numbers, at)
    nxt = next((p for p in plan if p > share), 1.0)
    held = (f"error rate {challenger.error_rate:.2%} vs {champion.error_rate:.2%}, p99 "
            f"{_ms(challenger.p99_latency_s)} vs {_ms(champion.p99_latency_s)}")
    if t.min_feedback > 0:
        held += f", online cosine {challenger.cosine_mean:.4f} vs {champion.cosine_mean:.4f}"
    if nxt >= 1.0:
        return Decision("promote", f"challenger held against the champion ({held}); promote", 1.0, numbers, at)
    return Decision("step", f"challenger held against the champion ({held}); step to {nxt:.0%}", nxt, numbers, at)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f} ms"
