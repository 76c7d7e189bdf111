"""The step plan and the moves along it: start, step, promote, roll back, abort (each written to the tags).

Only a version whose offline gates passed (and whose training run completed) can start; reaching the
plan's 1.0 is the registry's `promote` (which re-checks the gates); a rollback or abort sets the share to
0 and restores the champion alias.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Sequence

from lvm_core.rollout.decision import Decision
from lvm_core.rollout.state import (
    ABORTED,
    ACTIVE,
    DEFAULT_LEASE_S,
    DEFAULT_PLAN,
    EXPIRED,
    NONE,
    PROMOTED,
    ROLLED_BACK,
    TAG_CHALLENGER,
    TAG_CHAMPION,
    TAG_DECISION,
    TAG_LEASE_UNTIL,
    TAG_OWNER,
    TAG_PLAN,
    TAG_SHARE,
    TAG_STARTED_AT,
    TAG_STATUS,
    TAG_STEP,
    TAG_STEP_STARTED_AT,
    RolloutError,
    RolloutState,
    StartTicket,
    later,
    now,
    read_state,
    require_active,
    write_tags,
)
from lvm_core.tracking import promotion
from lvm_core.tracking.gate_outcomes import version_blockers
from lvm_core.tracking.promotion import PromotionResult, promote
from lvm_core.tracking.references import current_champion, resolve_version


def check_plan(plan: Iterable[float]) -> tuple[float, ...]:
    """Shares strictly increasing in (0, 1], ending at 1.0 (the promotion)."""
    p = tuple(float(x) for x in plan)
    if not p or any(not (0.0 < x <= 1.0) for x in p) or any(b <= a for a, b in zip(p, p[1:])) or p[-1] != 1.0:
        raise ValueError(f"rollout plan {list(p)} must be increasing shares in (0, 1] ending at 1.0, e.g. 0.05,0.2,1.0")
    return p


def gate_blockers(name: str, version: int) -> list[str]:
    """Why `version` may not be rolled out (empty: it may): failed offline gates, no gate results, killed run.

    The checks `registry.promote` applies, read from the version's recorded tags; the service applies the
    same before it routes a challenger any traffic.
    """
    return version_blockers(resolve_version(name, str(version)), allow_forced=False)


def default_owner() -> str:
    """Who runs a rollout when no flow run names itself: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def start(name: str, version: int, plan: Sequence[float] = DEFAULT_PLAN, *, owner: str | None = None,
          lease_seconds: float = DEFAULT_LEASE_S) -> RolloutState:
    """Start rolling out `version` against the current champion at the plan's first share.

    Refused (RolloutError) for a version whose offline gates failed or were never run, an incomplete
    one, the champion itself, a model without a champion, while another rollout is active (with a live
    lease), or while another start is in progress: of two concurrent starts exactly one wins
    (`StartTicket`). An active rollout whose lease expired (its flow died) is ended as `expired` first.
    The rollout holds a lease of `lease_seconds` that its flow must renew (`renew_lease`).
    """
    p = check_plan(plan)
    if len(p) < 2:
        raise ValueError("a rollout plan needs at least one canary share before 1.0, e.g. 0.05,0.2,1.0")
    version = int(resolve_version(name, str(version)).version)
    blockers = gate_blockers(name, version)
    if blockers:
        raise RolloutError(f"{name} v{version} cannot be rolled out: {'; '.join(blockers)}")
    owner = owner or default_owner()
    with StartTicket(name, owner):
        expire_stale(name)
        current = read_state(name)
        if current.active:
            raise RolloutError(f"{name}: the rollout of v{current.challenger} is still active "
                               f"(share {current.share:.0%}, owner {current.owner}); abort it first (lvm rollout abort)")
        champion = current_champion(name)
        if champion is None:
            raise RolloutError(f"{name} has no champion to roll out against; promote one first (lvm promote)")
        if champion == version:
            raise RolloutError(f"{name} v{version} is already the champion")
        at = now()
        # share last: until it is written, a replica reading the new status still routes nothing to the challenger
        write_tags(name, [(TAG_SHARE, "0"), (TAG_CHALLENGER, str(version)), (TAG_CHAMPION, str(champion)),
                          (TAG_PLAN, list(p)), (TAG_STEP, "0"), (TAG_STARTED_AT, at), (TAG_STEP_STARTED_AT, at),
                          (TAG_DECISION, ""), (TAG_OWNER, owner), (TAG_LEASE_UNTIL, later(lease_seconds)),
                          (TAG_STATUS, ACTIVE), (TAG_SHARE, repr(p[0]))])
    return read_state(name)


def renew_lease(name: str, owner: str, lease_seconds: float = DEFAULT_LEASE_S,
                current: RolloutState | None = None) -> RolloutState:
    """Extend the active rollout's lease; RolloutError when it is no longer this owner's active rollout.

    `current`: the state the caller has just read (the rollout flow, at each look), so it is not read twice.
    """
    state = current if current is not None and current.active else require_active(name)
    if state.owner != owner:
        raise RolloutError(f"{name}: the active rollout belongs to {state.owner}, not {owner}")
    write_tags(name, [(TAG_LEASE_UNTIL, later(lease_seconds))])
    return state


def expire_stale(name: str) -> RolloutState | None:
    """End an active rollout whose lease expired (its flow stopped): status `expired`, champion restored.

    Returns the state as it was (for the caller's alert), or None when there was nothing to clean up.
    Services already route champion-only once the lease is past; this records it and frees the model.
    """
    state = read_state(name)
    if not state.active or not state.lease_expired():
        return None
    reason = (f"the rollout of v{state.challenger} stopped renewing its lease (owner {state.owner}, lease until "
              f"{state.lease_until}): its flow died; traffic went back to the champion")
    rollback(name, reason, status=EXPIRED)
    return state


def set_step(name: str, step: int) -> RolloutState:
    """Move the active rollout to plan step `step` (below the last one: the last is `promote_challenger`)."""
    state = require_active(name)
    if not 0 <= step < len(state.plan) - 1:
        raise RolloutError(f"step {step} is outside the canary steps 0..{len(state.plan) - 2} "
                           f"of plan {list(state.plan)}")
    write_tags(name, [(TAG_STEP, str(step)), (TAG_STEP_STARTED_AT, now()), (TAG_SHARE, repr(state.plan[step]))])
    return read_state(name)


def record_decision(name: str, decision: Decision) -> None:
    """Keep the decision (action, reason, numbers) on the registered model for `status` and every replica."""
    text = json.dumps(decision.to_dict(), default=str)
    if len(text) > 5000:
        text = json.dumps({k: v for k, v in decision.to_dict().items() if k != "numbers"})
    write_tags(name, [(TAG_DECISION, text)])


def promote_challenger(name: str) -> PromotionResult:
    """The last step: the registry's `promote` makes the challenger champion (gates re-checked there)."""
    state = require_active(name)
    assert state.challenger is not None  # an active rollout has a challenger
    result = promote(name, state.challenger, by_rollout=True)
    if not result.promoted:
        raise RolloutError(f"{name} v{state.challenger} was not promoted: {result.message}")
    write_tags(name, [(TAG_STEP, str(len(state.plan) - 1)), (TAG_STEP_STARTED_AT, now()), (TAG_SHARE, "1.0"),
                  (TAG_STATUS, PROMOTED)])
    return result


def rollback(name: str, reason: str, decision: Decision | None = None, status: str = ROLLED_BACK) -> RolloutState:
    """Send no more traffic to the challenger and restore the champion alias; records why.

    The share goes to 0 first. If the champion alias was moved to the challenger since the start, the
    registry's `rollback` moves it back (and records the rollback).
    """
    state = read_state(name)
    if state.status == NONE:
        raise RolloutError(f"{name} has no rollout to roll back")
    write_tags(name, [(TAG_SHARE, "0")])
    champion = current_champion(name)
    if state.challenger is not None and champion == state.challenger and state.champion not in (None, champion):
        promotion.rollback(name, by_rollout=True)
    d = decision or Decision(action="rollback", reason=reason, share=0.0, numbers={}, at=now())
    record_decision(name, d)
    write_tags(name, [(TAG_STATUS, status)])
    return read_state(name)


def abort(name: str, reason: str = "aborted by hand") -> RolloutState:
    """`rollback` of the active rollout, with status `aborted`."""
    require_active(name)
    return rollback(name, reason, status=ABORTED)


def advance(name: str) -> tuple[RolloutState, PromotionResult | None]:
    """Step the active rollout by hand to the next share; from the last canary step, promote."""
    state = require_active(name)
    if state.step + 1 >= len(state.plan) - 1:
        result = promote_challenger(name)
        return read_state(name), result
    return set_step(name, state.step + 1), None
