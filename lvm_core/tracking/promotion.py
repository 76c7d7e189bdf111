"""Promotion, recorded gate outcomes and rollback: how `champion` moves along a registered model's versions.

The life cycle rules live here and nowhere else. `champion` moves only when
every gate passed (or when forced, which is recorded); a failed or incomplete version keeps `challenger`
and its failed gates as tags; every move is recorded (`previous_champion`, `champion_history`) so that
`rollback` can restore the previous champion.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.exceptions import MlflowException

from lvm_core.contracts.errors import RegistryError
from lvm_core.contracts.gates import failed_gates, gate_outcomes
from lvm_core.runtime.faults import crash_point
from lvm_core.tracking.gate_outcomes import gate_outcome_tags, recorded_gate_outcomes
from lvm_core.tracking.references import current_champion, require_registered_model, resolve_version, version_numbers
from lvm_core.tracking.setup import mlflow_client
from lvm_core.tracking.tags import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    ROLLOUT_ACTIVE,
    TAG_CHAMPION_HISTORY,
    TAG_FAILED_GATES,
    TAG_FORCED,
    TAG_INCOMPLETE,
    TAG_LAST_ROLLBACK,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTED_AT,
    TAG_ROLLED_BACK_AT,
    TAG_ROLLOUT_CHALLENGER,
    TAG_ROLLOUT_STATUS,
)

_log = logging.getLogger(__name__)

_MAX_HISTORY = 200


class PromotionError(RegistryError):
    """A promotion or rollback cannot be decided (no gate results, nothing to roll back to)."""


class RolloutActiveError(PromotionError):
    """`champion` cannot move by hand or by a pipeline while a staged rollout is deciding it."""


def refuse_during_rollout(name: str, what: str) -> None:
    """Raise RolloutActiveError while a staged rollout of `name` is active (it owns the champion alias then).

    A rollout compares its challenger with the champion it started against; moving `champion` under it
    would make its decision compare the wrong versions. Abort the rollout first (`lvm rollout abort`, or
    `--abort-rollout` on `lvm promote` / `lvm rollback`).
    """
    tags = dict(require_registered_model(name).tags or {})
    if tags.get(TAG_ROLLOUT_STATUS) == ROLLOUT_ACTIVE:
        raise RolloutActiveError(
            f"{name}: {what} refused: the staged rollout of v{tags.get(TAG_ROLLOUT_CHALLENGER, '?')} is active; "
            f"let it finish or abort it first (lvm rollout abort, or --abort-rollout)")


@dataclasses.dataclass(frozen=True)
class PromotionResult:
    """What a promote/rollback did. `champion` is the champion version afterwards."""

    name: str
    version: int
    action: str  # "promoted", "already_champion", "rejected", "rolled_back"
    promoted: bool
    champion: int | None
    previous_champion: int | None = None
    failed_gates: tuple[str, ...] = ()
    forced: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failed_gates"] = list(self.failed_gates)
        return d


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _history(rm: Any) -> list[int]:
    raw = (rm.tags or {}).get(TAG_CHAMPION_HISTORY)
    if not raw:
        return []
    try:
        data = json.loads(raw)
        return [int(v) for v in data]
    except (ValueError, TypeError):
        _log.warning("ignoring unreadable %s tag on %s: %r", TAG_CHAMPION_HISTORY, rm.name, raw[:200])
        return []


def _save_history(name: str, history: list[int]) -> None:
    mlflow_client().set_registered_model_tag(name, TAG_CHAMPION_HISTORY, json.dumps(history[-_MAX_HISTORY:]))


def _write_gate_tags(mv: Any, outcomes: Mapping[str, Mapping[str, Any]], failed: Sequence[str]) -> None:
    """The latest gate outcomes on a version, read back by `recorded_gate_outcomes` (promotion, rollout)."""
    client = mlflow_client()
    name, vstr = mv.name, str(mv.version)
    for key, value in gate_outcome_tags(outcomes, failed).items():
        client.set_model_version_tag(name, vstr, key, value)
    if not failed and TAG_FAILED_GATES in (mv.tags or {}):
        client.delete_model_version_tag(name, vstr, TAG_FAILED_GATES)


def record_gate_outcomes(name: str, version: int | str, gate_report: Any) -> list[str]:
    """Record an evaluation's gate outcomes on the version without moving any alias; returns the failed gates.

    What `promote` records too: a version evaluated without promotion can later be rolled out (or
    promoted) on these results, and a failed gate keeps it from either.
    """
    mv = resolve_version(name, str(version))
    outcomes = gate_outcomes(gate_report)
    failed = failed_gates(outcomes)
    if TAG_INCOMPLETE in (mv.tags or {}):
        failed.append("complete_training_run")
    _write_gate_tags(mv, outcomes, failed)
    return failed



def promote(name: str, version: int | str, gate_report: Any = None, force: bool = False,
            by_rollout: bool = False, defer_during_rollout: bool = False) -> PromotionResult:
    """Make `version` the champion if every gate passed (or `force`, recorded as a tag).

    Refused (RolloutActiveError) while a staged rollout is active, unless `by_rollout` (the rollout's own
    last step). `force` does not override that: a forced promotion must abort the rollout first. With
    `defer_during_rollout` (the pipeline's promotion), the gate outcomes are recorded and the result is
    "deferred" instead of an error: the version can be rolled out once the active rollout has ended.

    Gates come from `gate_report` or, when it is None, from the gate tags recorded at registration.
    A failed gate leaves `champion` where it is, gives the version `challenger` and a `failed_gates` tag.
    The displaced champion is recorded (`previous_champion` on the version, `champion_history` on the
    model) so `rollback` can restore it. Unknown model/version: ModelNotFoundError, nothing moves.
    """
    mv = resolve_version(name, str(version))
    version = int(mv.version)
    if not by_rollout:
        try:
            refuse_during_rollout(name, f"promoting v{version}")
        except RolloutActiveError as exc:
            if not defer_during_rollout:
                raise
            failed = record_gate_outcomes(name, version, gate_report) if gate_report is not None else []
            return PromotionResult(name=name, version=version, action="deferred", promoted=False,
                                   champion=current_champion(name), failed_gates=tuple(failed), message=str(exc))
    outcomes = gate_outcomes(gate_report) if gate_report is not None else recorded_gate_outcomes(mv)
    if outcomes is None and not force:
        raise PromotionError(
            f"no gate results for {name} v{version}: pass the model gate report, or force=True to promote anyway"
        )
    failed = failed_gates(outcomes or {})
    if TAG_INCOMPLETE in (mv.tags or {}):
        failed.append("complete_training_run")
    current = current_champion(name)
    if failed and not force:
        return _reject(mv, outcomes or {}, failed, current)
    if outcomes is not None:
        _write_gate_tags(mv, outcomes, failed)
    if current == version:
        return PromotionResult(
            name=name, version=version, action="already_champion", promoted=True, champion=version,
            previous_champion=None, failed_gates=tuple(failed), forced=force,
            message=f"{name} v{version} is already the champion",
        )
    _move_champion(name, version, current, failed, force)
    how = "forced" if force and (failed or outcomes is None) else "all gates passed"
    return PromotionResult(
        name=name, version=version, action="promoted", promoted=True, champion=version,
        previous_champion=current, failed_gates=tuple(failed), forced=force,
        message=f"{name} v{version} is the champion ({how}); previous champion "
        + (f"v{current}" if current is not None else "none"),
    )


def _reject(mv: Any, outcomes: Mapping[str, Mapping[str, Any]], failed: list[str], current: int | None) -> PromotionResult:
    """A failed gate: record it on the version, which keeps (or gets) `challenger`; `champion` stays."""
    name, version = mv.name, int(mv.version)
    _write_gate_tags(mv, outcomes, failed)
    if current != version:
        mlflow_client().set_registered_model_alias(name, ALIAS_CHALLENGER, str(version))
    return PromotionResult(
        name=name, version=version, action="rejected", promoted=False, champion=current,
        failed_gates=tuple(failed),
        message=f"{name} v{version} not promoted: failed gates {', '.join(failed)}; champion stays "
        + (f"v{current}" if current is not None else "unset"),
    )


def _move_champion(name: str, version: int, current: int | None, failed: list[str], force: bool) -> None:
    """`champion` to `version`, the displaced one recorded in the history and on the version."""
    client = mlflow_client()
    vstr = str(version)
    rm = require_registered_model(name)
    history = _history(rm)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    history.append(version)
    client.set_model_version_tag(name, vstr, TAG_PREVIOUS_CHAMPION, str(current) if current is not None else "none")
    client.set_model_version_tag(name, vstr, TAG_PROMOTED_AT, _now())
    if force:
        client.set_model_version_tag(name, vstr, TAG_FORCED, "true" if not failed else f"true (failed: {','.join(failed)})")
    crash_point("promote")
    client.set_registered_model_alias(name, ALIAS_CHAMPION, vstr)
    _save_history(name, history)
    if (rm.aliases or {}).get(ALIAS_CHALLENGER) is not None and int(rm.aliases[ALIAS_CHALLENGER]) == version:
        client.delete_registered_model_alias(name, ALIAS_CHALLENGER)


def rollback(name: str, by_rollout: bool = False) -> PromotionResult:
    """Move `champion` back to the previous champion recorded by `promote`; records the rollback.

    Refused (RolloutActiveError) while a staged rollout is active, unless `by_rollout`.
    """
    if not by_rollout:
        refuse_during_rollout(name, "rolling back the champion")
    client = mlflow_client()
    rm = require_registered_model(name)
    current = current_champion(name)
    if current is None:
        raise PromotionError(f"{name} has no champion to roll back")
    history = _history(rm)
    if not history or history[-1] != current:
        history.append(current)
    if len(history) < 2:
        try:
            prev_tag = client.get_model_version(name, str(current)).tags.get(TAG_PREVIOUS_CHAMPION)
        except MlflowException:
            prev_tag = None
        if prev_tag and prev_tag.isdigit():
            history.insert(0, int(prev_tag))
    history.pop()  # the current champion
    existing = set(version_numbers(name))
    while history and (history[-1] not in existing or history[-1] == current):
        history.pop()
    if not history:
        raise PromotionError(f"{name} v{current} has no previous champion to roll back to")
    target = history[-1]
    at = _now()
    client.set_registered_model_alias(name, ALIAS_CHAMPION, str(target))
    client.set_model_version_tag(name, str(current), TAG_ROLLED_BACK_AT, at)
    client.set_model_version_tag(name, str(current), "rolled_back_to", str(target))
    _save_history(name, history)
    client.set_registered_model_tag(
        name, TAG_LAST_ROLLBACK, json.dumps({"from": current, "to": target, "at": at})
    )
    return PromotionResult(
        name=name, version=target, action="rolled_back", promoted=True, champion=target,
        previous_champion=current, message=f"{name}: champion rolled back from v{current} to v{target}",
    )

