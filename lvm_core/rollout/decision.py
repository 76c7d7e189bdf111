"""The hold / step / promote / rollback decision from both versions' live stats, and the looks of one step.

`decide` is pure: it compares the challenger with the champion on the server error rate and the online
cosine (sequential non-inferiority tests over clients, lvm_core.rollout.sequential) and on p99 latency (a
distribution-free lower bound of the challenger's p99 against a limit set by the champion's). `StepWatch`
is the looking schedule the rollout flow and the A/A benchmark share: a rollback may happen at any look,
a step only at the end of a period, and a step that stays undecided gets at most `max_holds` extra periods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from lvm_core.rollout.sequential import Comparison, compare
from lvm_core.rollout.state import DEFAULT_PLAN, now
from lvm_core.rollout.stats import VersionStats

Action = Literal["hold", "step", "promote", "rollback"]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a challenger holds against the champion over the same period (docs/monitoring.md explains each)."""

    min_requests: int = 100  # per version, before any step (and before the error rate or latency is judged)
    min_feedback: int = 30  # feedback cosines per version before any step; 0 = the cosine is not judged
    min_clients: int = 20  # distinct clients per version before a comparison gives a verdict
    cosine_margin: float = 0.015  # non-inferiority margin of the online cosine (challenger − champion)
    error_rate_margin: float = 0.005  # non-inferiority margin of the server error rate (challenger − champion)
    alpha: float = 0.05  # level of each confidence sequence, over every look of a step
    max_p99_ratio: float = 1.5  # roll back when the challenger's p99 is surely above ratio × champion p99 ...
    p99_slack_s: float = 0.010  # ... + this slack (millisecond noise of fast models is no regression)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do after a look, why, and the numbers (with each test's interval and state) it was decided on."""

    action: Action
    reason: str
    share: float  # the challenger's share after the decision (0 after a rollback, 1 after a promotion)
    numbers: dict[str, Any]
    at: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe(c: Comparison, fmt: str) -> str:
    if c.challenger is None or c.champion is None:
        return f"{c.metric}: {c.why}"
    return (f"{c.metric} {fmt.format(c.challenger)} vs champion {fmt.format(c.champion)}, difference "
            f"{c.interval_text()} (margin {c.margin}, {c.clients_challenger}/{c.clients_champion} clients)")


def decide(
    champion: VersionStats,
    challenger: VersionStats,
    thresholds: Thresholds = Thresholds(),
    *,
    share: float,
    plan: Sequence[float] = DEFAULT_PLAN,
) -> Decision:
    """Hold, step, promote or roll back, from both versions' live stats over the same period.

    Rollback when a test finds the challenger worse beyond its margin (the whole confidence sequence
    beyond it) or its p99 latency surely above the limit. Step (or promote when the next share is 1.0) only
    when both sides have the minimum samples and every test finds the challenger non-inferior. Otherwise
    hold. The numbers record each test's estimate, interval, margin and verdict.
    """
    t = thresholds
    numbers: dict[str, Any] = {"champion": champion.to_dict(), "challenger": challenger.to_dict(),
                               "share": share, "thresholds": dataclasses.asdict(t), "tests": {}}
    bad: list[str] = []
    missing: list[str] = []
    enough_requests = champion.requests >= t.min_requests and challenger.requests >= t.min_requests
    if not enough_requests:
        missing.append(f"requests {challenger.requests}/{champion.requests} (challenger/champion) < {t.min_requests}")

    errors = compare("error rate", challenger.error_totals(), champion.error_totals(), margin=t.error_rate_margin,
                     alpha=t.alpha, higher_is_better=False, min_clients=t.min_clients, rate=True)
    numbers["tests"]["error_rate"] = errors.to_dict()
    # a challenger failing most of its first requests is rolled back without waiting for the champion's count
    if errors.verdict == "worse" and challenger.requests >= t.min_requests:
        bad.append(_describe(errors, "{:.2%}"))
    elif errors.verdict != "non_inferior":
        missing.append(_describe(errors, "{:.2%}"))

    cosine = _cosine(champion, challenger, t, bad, missing) if t.min_feedback > 0 else None
    if cosine is not None:
        numbers["tests"]["online_cosine"] = cosine.to_dict()

    latency = _latency(champion, challenger, t, judged=enough_requests)
    numbers["tests"]["p99_latency"] = latency
    if latency["worse"]:
        bad.append(latency["why"])

    at = now()
    if bad:
        return Decision("rollback", f"challenger v{challenger.version} is worse than champion v{champion.version}: "
                        + "; ".join(bad), 0.0, numbers, at)
    if missing:
        return Decision("hold", "not decided yet: " + "; ".join(missing), share, numbers, at)
    nxt = next((p for p in plan if p > share), 1.0)
    held = _describe(errors, "{:.2%}") + f"; p99 {_ms(challenger.p99_latency_s)} vs {_ms(champion.p99_latency_s)}"
    if cosine is not None:
        held += "; " + _describe(cosine, "{:.4f}")
    if nxt >= 1.0:
        return Decision("promote", f"challenger non-inferior to the champion ({held}); promote", 1.0, numbers, at)
    return Decision("step", f"challenger non-inferior to the champion ({held}); step to {nxt:.0%}", nxt, numbers, at)


def _cosine(champion: VersionStats, challenger: VersionStats, t: Thresholds, bad: list[str],
            missing: list[str]) -> Comparison:
    """The online-cosine test; adds why the challenger is worse to `bad`, or why undecided to `missing`."""
    cosine = compare("online cosine", challenger.cosine_totals(), champion.cosine_totals(), margin=t.cosine_margin,
                     alpha=t.alpha, higher_is_better=True, min_clients=t.min_clients)
    enough_feedback = champion.cosine_count >= t.min_feedback and challenger.cosine_count >= t.min_feedback
    if cosine.verdict == "worse" and enough_feedback:
        bad.append(_describe(cosine, "{:.4f}"))
    elif not enough_feedback:
        missing.append(f"feedback {challenger.cosine_count}/{champion.cosine_count} (challenger/champion) "
                       f"< {t.min_feedback}")
    elif cosine.verdict != "non_inferior":
        missing.append(_describe(cosine, "{:.4f}"))
    return cosine


def _latency(champion: VersionStats, challenger: VersionStats, t: Thresholds, judged: bool) -> dict[str, Any]:
    """The p99 rule: worse when the challenger's p99 lower bound exceeds ratio × champion p99 + slack."""
    out: dict[str, Any] = {"challenger_p99_s": challenger.p99_latency_s, "challenger_p99_lower_s": challenger.p99_lower_s,
                           "champion_p99_s": champion.p99_latency_s, "limit_s": None, "worse": False}
    if judged and champion.p99_latency_s is not None and challenger.p99_lower_s is not None:
        limit = out["limit_s"] = champion.p99_latency_s * t.max_p99_ratio + t.p99_slack_s
        if challenger.p99_lower_s > limit:
            out["worse"] = True
            out["why"] = (f"p99 latency {_ms(challenger.p99_latency_s)} (surely above {_ms(challenger.p99_lower_s)}) "
                          f"vs champion {_ms(champion.p99_latency_s)} (limit {_ms(limit)})")
    return out


@dataclasses.dataclass
class StepWatch:
    """The looks at one step of a rollout: rollback at any look, a step or promotion only at a period's end.

    `look(champion, challenger, t)` at monotonic time `t` gives None (keep watching) or the decision to act
    on; a "hold" is returned once per period end that stays undecided, and after `max_holds` of them the
    step is rolled back (an undecided challenger does not get traffic forever).
    """

    thresholds: Thresholds
    share: float
    plan: Sequence[float]
    step_seconds: float
    max_holds: int
    started: float
    holds: int = 0

    @property
    def deadline(self) -> float:
        return self.started + self.step_seconds * (self.holds + 1)

    def look(self, champion: VersionStats, challenger: VersionStats, t: float) -> Decision | None:
        decision = decide(champion, challenger, self.thresholds, share=self.share, plan=self.plan)
        decision.numbers["holds"] = self.holds
        if decision.action == "rollback":
            return decision
        if t < self.deadline:
            return None
        if decision.action != "hold":
            return decision
        self.holds += 1
        if self.holds > self.max_holds:
            return Decision("rollback", f"{decision.reason} — still undecided after {self.max_holds} extra periods",
                            0.0, decision.numbers, decision.at)
        return decision


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f} ms"
