"""The rollout state of a registered model, kept in its `lvm.rollout.*` tags.

Tags (not a file or a database of our own) so that every service replica reads the same state when it
re-reads its alias, and `lvm rollout status` / the MLflow UI show it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.contracts.errors import RegistryError
from lvm_core.tracking.references import require_registered_model

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


class RolloutError(RegistryError):
    """A rollout cannot be started or moved as asked (gates failed, none active, another one active...)."""


def now() -> str:
    """The timestamp format of the rollout tags and decisions (UTC, milliseconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclasses.dataclass(frozen=True)
class RolloutState:
    """The rollout of one registered model as read from its tags; `status` "none" when there never was one."""

    name: str
    status: str = NONE
    challenger: int | None = None
    champion: int | None = None
    share: float = 0.0
    step: int = 0
    plan: tuple[float, ...] = DEFAULT_PLAN
    started_at: str | None = None
    step_started_at: str | None = None
    last_decision: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        """True while the challenger is being served a share of traffic."""
        return self.status == ACTIVE and self.challenger is not None

    @property
    def window(self) -> str | None:
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


def _int(v: Any) -> int | None:
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
    rm = require_registered_model(name)
    return state_from_tags(name, dict(rm.tags or {}))


def require_active(name: str) -> RolloutState:
    state = read_state(name)
    if not state.active:
        raise RolloutError(f"{name} has no active rollout (status: {state.status})")
    return state


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def write_tags(name: str, items: Sequence[tuple[str, Any]]) -> None:
    """Set tags in the given order (readers may see a prefix of the writes: order them so any prefix is safe)."""
    client = _client()
    for key, value in items:
        client.set_registered_model_tag(name, key, value if isinstance(value, str) else json.dumps(value))
