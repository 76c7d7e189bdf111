"""Staged canary rollout of a challenger version: its state, the step plan, and the hold/step/rollback decision.

The state lives in tags of the registered model (`lvm.rollout.*`), so every service replica reads the
same state when it re-reads its alias, and `lvm rollout status` / the MLflow UI show it. A rollout:

1. `start(name, version)`: only a version whose offline gates passed (and whose training run completed)
   can start; the challenger then gets the first share of the plan (default 5% → 20% → 100%).
2. The service routes each request by its client key (`bucket`): sticky, and a key inside the 5% stays
   inside the 20%. It counts requests, server errors, latency and feedback cosine per version since
   the current step began (`GET /v1/rollout/stats`; `read_service_stats` reads and merges replicas).
3. `decide(champion_stats, challenger_stats, thresholds, ...)`, a pure function, answers hold / step /
   promote / rollback with its reason and numbers. Stepping needs a minimum sample count on both sides.
4. `set_step` moves the share; reaching 100% is `promote_challenger` (the registry's `promote`, which
   re-checks the gates); `rollback` / `abort` set the share to 0 and restore the champion alias.

No Prefect import: `flows/rollout.py` runs the plan, `lvm rollout ...` calls these functions by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import random
from typing import Any, Literal, Mapping, Optional, Sequence

from lvm_core import tracking as registry

_log = logging.getLogger(__name__)

TAG_PREFIX = "lvm.rollout."
TAG_STATUS = TAG_PREFIX + "status"  # active | promoted | rolled_back | aborted
TAG_CHALLENGER = TAG_PREFIX + "challenger"  # version being rolled out
TAG_CHAMPION = TAG_PREFIX + "champion"  # champion when the rollout started (restored by a rollback)
TAG_SHARE = TAG_PREFIX + "share"  # share of traffic the challenger answers, 0..1
TAG_STEP = TAG_PREFIX + "step"  # index into the plan
TAG_PLAN = TAG_PREFIX + "plan"  # JSON list of shares, the last one 1.0
TAG_STARTED_AT = TAG_PREFIX + "started_at"
TAG_STEP_STARTED_AT = TAG_PREFIX + "step_started_at"
TAG_DECISION = TAG_PREFIX + "last_decision"  # JSON of the last Decision (action, reason, numbers)

ACTIVE, PROMOTED, ROLLED_BACK, ABORTED, NONE = "active", "promoted", "rolled_back", "aborted", "none"
DEFAULT_PLAN: tuple[float, ...] = (0.05, 0.20, 1.0)
STATS_PATH = "/v1/rollout/stats"

Action = Literal["hold", "step", "promote", "rollback"]


class RolloutError(registry.RegistryError):
    """A rollout cannot be started or moved as asked (gates failed, none active, another one active...)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# --- state -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RolloutState:
    """The rollout of one registered model as read from its tags; `status` "none" when there never was one."""

    name: str
    status: str = NONE
    challenger: Optional[int] = None
    champion: Optional[int] = None
    share: float = 0.0
    step: int = 0
    plan: tuple[float, ...] = DEFAULT_PLAN
    started_at: Optional[str] = None
    step_started_at: Optional[str] = None
    last_decision: Optional[dict[str, Any]] = None

    @property
    def active(self) -> bool:
        """True while the challenger is being served a share of traffic."""
        return self.status == ACTIVE and self.challenger is not None

    @property
    def window(self) -> Optional[str]:
        """Identity of the current step's stats period; the service resets its live stats when it changes."""
        if not self.active:
            return None
        return f"v{self.challenger}/step{self.step}/{self.step_started_at}"

    def share_of(self, version: int) -> float:
        """Traffic share `version` gets under this state (the champion gets the rest)."""
        if not self.active:
            return 1.0 if version == self.champion else 0.0
        if version == self.challenger:
            return self.share
        return 1.0 - self.share

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["plan"] = list(self.plan)
        d["active"] = self.active
        d["window"] = self.window
        return d


def _int(v: Any) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def state_from_tags(name: str, tags: Mapping[str, str]) -> RolloutState:
    """Parse `lvm.rollout.*` tags; an unreadable value reads as its default (logged), never raises."""
    if TAG_STATUS not in tags:
        return RolloutState(name=name)
    try:
        plan = tuple(float(x) for x in json.loads(tags.get(TAG_PLAN) or "null") or DEFAULT_PLAN)
    except (TypeError, ValueError):
        _log.warning("%s: unreadable %s tag %r; using the default plan", name, TAG_PLAN, tags.get(TAG_PLAN))
        plan = DEFAULT_PLAN
    try:
        share = min(1.0, max(0.0, float(tags.get(TAG_SHARE) or 0.0)))
    except ValueError:
        _log.warning("%s: unreadable %s tag %r; share 0", name, TAG_SHARE, tags.get(TAG_SHARE))
        share = 0.0
    decision = None
    if tags.get(TAG_DECISION):
        try:
            decision = json.loads(tags[TAG_DECISION])
        except ValueError:
            decision = {"raw": tags[TAG_DECISION]}
    return RolloutState(
        name=name, status=tags[TAG_STATUS], challenger=_int(tags.get(TAG_CHALLENGER)),
        champion=_int(tags.get(TAG_CHAMPION)), share=share, step=_int(tags.get(TAG_STEP)) or 0, plan=plan,
        started_at=tags.get(TAG_STARTED_AT) or None, step_started_at=tags.get(TAG_STEP_STARTED_AT) or None,
        last_decision=decision,
    )


def read_state(name: str) -> RolloutState:
    """The rollout state of registered model `name` (ModelNotFoundError for an unknown model)."""
    rm = registry.require_registered_model(name)
    return state_from_tags(name, dict(rm.tags or {}))


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def _write(name: str, items: Sequence[tuple[str, Any]]) -> None:
    """Set tags in the given order (readers may see a prefix of the writes: order them so any prefix is safe)."""
    client = _client()
    for key, value in items:
        client.set_registered_model_tag(name, key, value if isinstance(value, str) else json.dumps(value))


def check_plan(plan: Sequence[float]) -> tuple[float, ...]:
    """Shares strictly increasing in (0, 1], ending at 1.0 (the promotion)."""
    p = tuple(float(x) for x in plan)
    if not p or any(not (0.0 < x <= 1.0) for x in p) or any(b <= a for a, b in zip(p, p[1:])) or p[-1] != 1.0:
        raise ValueError(f"rollout plan {list(p)} must be increasing shares in (0, 1] ending at 1.0, e.g. 0.05,0.2,1.0")
    return p


def gate_blockers(name: str, version: int) -> list[str]:
    """Why `version` may not be rolled out (empty: it may): failed offline gates, no gate results, killed run.

    The same checks `registry.promote` applies, read from the version's recorded gate tags.
    """
    mv = registry.resolve_version(name, str(version))
    tags = dict(mv.tags or {})
    blockers: list[str] = []
    if registry.TAG_INCOMPLETE in tags:
        blockers.append("incomplete training run")
    outcomes = registry.recorded_gate_outcomes(mv)
    if outcomes is None:
        blockers.append("no gate results (evaluate it first: lvm evaluate)")
    else:
        failed = sorted(g for g, o in outcomes.items() if not o.get("passed"))
        if failed:
            blockers.append("failed gates " + ", ".join(failed))
    return blockers


def start(name: str, version: int, plan: Sequence[float] = DEFAULT_PLAN) -> RolloutState:
    """Start rolling out `version` against the current champion at the plan's first share.

    Refused (RolloutError) for a version whose offline gates failed or were never run, an incomplete
    one, the champion itself, a model without a champion, or while another rollout is active.
    """
    p = check_plan(plan)
    if len(p) < 2:
        raise ValueError("a rollout plan needs at least one canary share before 1.0, e.g. 0.05,0.2,1.0")
    version = int(registry.resolve_version(name, str(version)).version)
    blockers = gate_blockers(name, version)
    if blockers:
        raise RolloutError(f"{name} v{version} cannot be rolled out: {'; '.join(blockers)}")
    champion = registry.current_champion(name)
    if champion is None:
        raise RolloutError(f"{name} has no champion to roll out against; promote one first (lvm promote)")
    if champion == version:
        raise RolloutError(f"{name} v{version} is already the champion")
    current = read_state(name)
    if current.active:
        raise RolloutError(f"{name}: the rollout of v{current.challenger} is still active "
                           f"(share {current.share:.0%}); abort it first (lvm rollout abort)")
    at = _now()
    # share last: until it is written, a replica reading the new status still routes nothing to the challenger
    _write(name, [(TAG_SHARE, "0"), (TAG_CHALLENGER, str(version)), (TAG_CHAMPION, str(champion)),
                  (TAG_PLAN, list(p)), (TAG_STEP, "0"), (TAG_STARTED_AT, at), (TAG_STEP_STARTED_AT, at),
                  (TAG_DECISION, ""), (TAG_STATUS, ACTIVE), (TAG_SHARE, repr(p[0]))])
    return read_state(name)


def _require_active(name: str) -> RolloutState:
    state = read_state(name)
    if not state.active:
        raise RolloutError(f"{name} has no active rollout (status: {state.status})")
    return state


def set_step(name: str, step: int) -> RolloutState:
    """Move the active rollout to plan step `step` (below the last one: the last is `promote_challenger`)."""
    state = _require_active(name)
    if not 0 <= step < len(state.plan) - 1:
        raise RolloutError(f"step {step} is outside the canary steps 0..{len(state.plan) - 2} "
                           f"of plan {list(state.plan)}")
    _write(name, [(TAG_STEP, str(step)), (TAG_STEP_STARTED_AT, _now()), (TAG_SHARE, repr(state.plan[step]))])
    return read_state(name)


def record_decision(name: str, decision: "Decision") -> None:
    """Keep the decision (action, reason, numbers) on the registered model for `status` and every replica."""
    text = json.dumps(decision.to_dict(), default=str)
    if len(text) > 5000:
        text = json.dumps({k: v for k, v in decision.to_dict().items() if k != "numbers"})
    _write(name, [(TAG_DECISION, text)])


def promote_challenger(name: str) -> registry.PromotionResult:
    """The last step: the registry's `promote` makes the challenger champion (gates re-checked there)."""
    state = _require_active(name)
    result = registry.promote(name, state.challenger)
    if not result.promoted:
        raise RolloutError(f"{name} v{state.challenger} was not promoted: {result.message}")
    _write(name, [(TAG_STEP, str(len(state.plan) - 1)), (TAG_STEP_STARTED_AT, _now()), (TAG_SHARE, "1.0"),
                  (TAG_STATUS, PROMOTED)])
    return result


def rollback(name: str, reason: str, decision: Optional["Decision"] = None, status: str = ROLLED_BACK) -> RolloutState:
    """Send no more traffic to the challenger and restore the champion alias; records why.

    The share goes to 0 first. If the champion alias was moved to the challenger since the start, the
    registry's `rollback` moves it back (and records the rollback).
    """
    state = read_state(name)
    if state.status == NONE:
        raise RolloutError(f"{name} has no rollout to roll back")
    _write(name, [(TAG_SHARE, "0")])
    champion = registry.current_champion(name)
    if state.challenger is not None and champion == state.challenger and state.champion not in (None, champion):
        registry.rollback(name)
    d = decision or Decision(action="rollback", reason=reason, share=0.0, numbers={}, at=_now())
    record_decision(name, d)
    _write(name, [(TAG_STATUS, status)])
    return read_state(name)


def abort(name: str, reason: str = "aborted by hand") -> RolloutState:
    """`rollback` of the active rollout, with status `aborted`."""
    _require_active(name)
    return rollback(name, reason, status=ABORTED)


def advance(name: str) -> tuple[RolloutState, Optional[registry.PromotionResult]]:
    """Step the active rollout by hand to the next share; from the last canary step, promote."""
    state = _require_active(name)
    if state.step + 1 >= len(state.plan) - 1:
        result = promote_challenger(name)
        return read_state(name), result
    return set_step(name, state.step + 1), None


# --- routing ---------------------------------------------------------------------------------------


def bucket(client_key: Optional[str], salt: str) -> float:
    """A client key's place in [0, 1): the same key (and salt) always lands at the same place.

    A request without a key is placed at random (its version is not sticky). The salt (the model name
    and challenger version) gives each rollout its own cohort; within a rollout, a key inside a 5%
    share is also inside 20%.
    """
    if not client_key:
        return random.random()
    digest = hashlib.sha256(f"{salt}\x00{client_key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def routing_salt(state: RolloutState) -> str:
    return f"{state.name}/v{state.challenger}"


# --- live stats and the decision -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VersionStats:
    """What one version did since the current step began (one replica, or several merged)."""

    version: Any
    requests: int = 0  # predict requests answered by this version (any status)
    errors: int = 0  # of which server-side failures (5xx); bad client input is not the model's fault
    p99_latency_s: Optional[float] = None
    cosine_mean: Optional[float] = None  # online cosine from /v1/feedback
    cosine_count: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "error_rate": self.error_rate}

    @classmethod
    def from_dict(cls, version: Any, d: Mapping[str, Any]) -> "VersionStats":
        return cls(version=version, requests=int(d.get("requests", 0)), errors=int(d.get("errors", 0)),
                   p99_latency_s=d.get("p99_latency_s"), cosine_mean=d.get("cosine_mean"),
                   cosine_count=int(d.get("cosine_count", 0)))


def merge_stats(version: Any, parts: Sequence[VersionStats]) -> VersionStats:
    """Several replicas' stats of one version: counts add, cosine is count-weighted, p99 is the worst replica's."""
    requests = sum(p.requests for p in parts)
    n_cos = sum(p.cosine_count for p in parts)
    cos = sum((p.cosine_mean or 0.0) * p.cosine_count for p in parts) / n_cos if n_cos else None
    p99s = [p.p99_latency_s for p in parts if p.p99_latency_s is not None]
    return VersionStats(version=version, requests=requests, errors=sum(p.errors for p in parts),
                        p99_latency_s=max(p99s) if p99s else None, cosine_mean=cos, cosine_count=n_cos)


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
        if champion.cosine_count >= t.min_feedback and challenger.cosine_count >= t.min_feedback:
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
    at = _now()
    if bad:
        return Decision("rollback", f"challenger v{challenger.version} is worse than champion v{champion.version}: "
                        + "; ".join(bad), 0.0, numbers, at)
    if missing:
        return Decision("hold", "not enough samples yet: " + "; ".join(missing), share, numbers, at)
    later = [p for p in plan if p > share]
    nxt = later[0] if later else 1.0
    held = (f"error rate {challenger.error_rate:.2%} vs {champion.error_rate:.2%}, p99 "
            f"{_ms(challenger.p99_latency_s)} vs {_ms(champion.p99_latency_s)}")
    if t.min_feedback > 0:
        held += f", online cosine {challenger.cosine_mean:.4f} vs {champion.cosine_mean:.4f}"
    if nxt >= 1.0:
        return Decision("promote", f"challenger held against the champion ({held}); promote", 1.0, numbers, at)
    return Decision("step", f"challenger held against the champion ({held}); step to {nxt:.0%}", nxt, numbers, at)


def _ms(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v * 1e3:.1f} ms"


def read_service_stats(
    urls: Sequence[str], state: RolloutState, token: Optional[str] = None, timeout: float = 10.0
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


__all__ = [
    "ABORTED", "ACTIVE", "DEFAULT_PLAN", "NONE", "PROMOTED", "ROLLED_BACK", "STATS_PATH", "TAG_PREFIX",
    "Decision", "RolloutError", "RolloutState", "Thresholds", "VersionStats",
    "abort", "advance", "bucket", "check_plan", "decide", "gate_blockers", "merge_stats", "promote_challenger",
    "read_service_stats", "read_state", "record_decision", "rollback", "routing_salt", "set_step", "start",
    "state_from_tags",
]
