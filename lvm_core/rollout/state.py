"""The rollout state of a registered model, kept in its `lvm.rollout.*` tags.

Tags (not a file or a database of our own) so that every service replica reads the same state when it
re-reads its alias, and `lvm rollout status` / the MLflow UI show it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lvm_core.contracts.errors import RegistryError
from lvm_core.tracking.references import require_registered_model
from lvm_core.tracking.tags import ROLLOUT_ACTIVE, TAG_ROLLOUT_CHALLENGER, TAG_ROLLOUT_STATUS

_log = logging.getLogger(__name__)

TAG_PREFIX = "lvm.rollout."
TAG_STATUS = TAG_ROLLOUT_STATUS  # active | promoted | rolled_back | aborted | expired
TAG_CHALLENGER = TAG_ROLLOUT_CHALLENGER  # version being rolled out
TAG_CHAMPION = TAG_PREFIX + "champion"  # champion when the rollout started (restored by a rollback)
TAG_SHARE = TAG_PREFIX + "share"  # share of traffic the challenger answers, 0..1
TAG_STEP = TAG_PREFIX + "step"  # index into the plan
TAG_PLAN = TAG_PREFIX + "plan"  # JSON list of shares, the last one 1.0
TAG_STARTED_AT = TAG_PREFIX + "started_at"
TAG_STEP_STARTED_AT = TAG_PREFIX + "step_started_at"
TAG_DECISION = TAG_PREFIX + "last_decision"  # JSON of the last Decision (action, reason, numbers)
TAG_LEASE_UNTIL = TAG_PREFIX + "lease_until"  # the rollout flow renews it; past it, services route champion only
TAG_OWNER = TAG_PREFIX + "owner"  # who runs the rollout (a flow run id, or host:pid)

ACTIVE, PROMOTED, ROLLED_BACK, ABORTED, EXPIRED, NONE = (ROLLOUT_ACTIVE, "promoted", "rolled_back", "aborted",
                                                         "expired", "none")
DEFAULT_PLAN: tuple[float, ...] = (0.05, 0.20, 1.0)
DEFAULT_LEASE_S = 120.0


class RolloutError(RegistryError):
    """A rollout cannot be started or moved as asked (gates failed, none active, another one active...)."""


def now() -> str:
    """The timestamp format of the rollout tags and decisions (UTC, milliseconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def later(seconds: float) -> str:
    """`now()` plus `seconds`, in the same format (a lease's end)."""
    return (_dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)


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
    lease_until: str | None = None
    owner: str | None = None

    @property
    def active(self) -> bool:
        """True from the start until the rollout is promoted, rolled back, aborted or expired (in the tags)."""
        return self.status == ACTIVE and self.challenger is not None

    @functools.cached_property
    def lease_deadline(self) -> float | None:
        """The lease's end as a POSIX time (parsed once: services check it on every request)."""
        until = _parse_time(self.lease_until)
        return None if until is None else until.timestamp()

    def lease_expired(self, at: float | None = None) -> bool:
        """True when the rollout flow has stopped renewing its lease (an unreadable lease counts as expired)."""
        deadline = self.lease_deadline
        return deadline is None or (time.time() if at is None else at) > deadline

    @property
    def routable(self) -> bool:
        """True while services should route the challenger its share: active, and its flow still alive."""
        return self.active and not self.lease_expired()

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
        d["lease_expired"] = self.active and self.lease_expired()
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
        last_decision=decision, lease_until=tags.get(TAG_LEASE_UNTIL) or None, owner=tags.get(TAG_OWNER) or None,
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


# --- one start at a time --------------------------------------------------------------------------------

START_LOCK_SUFFIX = "--rollout-start"
START_TICKET_S = 60.0  # a start that died holding its ticket blocks others for at most this long


def start_lock_name(name: str) -> str:
    """The registered model whose versions are the start tickets of `name`'s rollouts."""
    return name + START_LOCK_SUFFIX


def ticket_source(owner: str) -> str:
    """The `source` of a start ticket's version: it points at nothing, and a tracking server accepts it (an absolute
    path in a scheme of its own: the server refuses relative paths, and local paths not under a run's artifacts).
    The owner itself is in the ticket's tags."""
    return f"lvm-rollout-start:/tickets/{hashlib.sha256(owner.encode()).hexdigest()[:16]}"


class StartTicket:
    """Mutual exclusion of rollout starts on the registry alone: the oldest live ticket wins.

    MLflow tags have no compare-and-set, but the registry numbers the versions of a model uniquely and in
    order (a primary key in its database). Each starter creates a version of the lock model (its ticket),
    then lists the tickets: it holds the lock when its own is the lowest one not yet expired. Of two
    concurrent starters exactly one sees itself lowest, whatever the interleaving. A ticket is deleted when
    its start is done; one left by a crashed start expires after `START_TICKET_S`.
    """

    def __init__(self, name: str, owner: str):
        self.name, self.owner = name, owner
        self.lock = start_lock_name(name)
        self.version: str | None = None

    def __enter__(self) -> StartTicket:
        from mlflow.exceptions import MlflowException

        client = _client()
        try:
            client.create_registered_model(self.lock, tags={"lvm.kind": "rollout-start-lock"},
                                           description=f"Start tickets of the staged rollouts of {self.name}")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
                raise
        mv = client.create_model_version(self.lock, source=ticket_source(self.owner),
                                         tags={"owner": self.owner, "expires_at": later(START_TICKET_S)})
        self.version = str(mv.version)
        live = []
        for ticket in client.search_model_versions(f"name='{self.lock}'"):
            expires = _parse_time((ticket.tags or {}).get("expires_at"))
            if expires is not None and expires < _dt.datetime.now(_dt.UTC) and ticket.version != self.version:
                self._delete(str(ticket.version))  # left by a start that died
                continue
            live.append(int(ticket.version))
        if min(live) != int(self.version):
            self._delete(self.version)
            self.version = None
            raise RolloutError(f"{self.name}: another rollout start is in progress; try again when it has finished")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.version is not None:
            self._delete(self.version)

    def _delete(self, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            _client().delete_model_version(self.lock, version)
        except MlflowException:
            pass  # already deleted by a later starter that found it expired


def write_tags(name: str, items: Sequence[tuple[str, Any]]) -> None:
    """Set tags in the given order (readers may see a prefix of the writes: order them so any prefix is safe)."""
    client = _client()
    for key, value in items:
        client.set_registered_model_tag(name, key, value if isinstance(value, str) else json.dumps(value))
