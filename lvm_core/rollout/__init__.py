"""Staged canary rollout of a challenger version: its state, the step plan, and the hold/step/rollback decision.

The state lives in tags of the registered model (`lvm.rollout.*`, `state`), so every service replica reads
the same state when it re-reads its alias, and `lvm rollout status` / the MLflow UI show it. A rollout:

1. `start(name, version)` (`plan`): only a version whose offline gates passed (and whose training run
   completed) can start; the challenger then gets the first share of the plan (default 5% → 20% → 100%).
2. The service routes each request by its client key (`routing.bucket`): sticky, and a key inside the 5%
   stays inside the 20%. It counts requests, server errors, latency and feedback cosine per version since
   the current step began (`GET /v1/rollout/stats`; `stats.read_service_stats` reads and merges replicas).
3. `decide(champion_stats, challenger_stats, thresholds, ...)` (`decision`), a pure function, answers hold /
   step / promote / rollback with its reason and numbers. Stepping needs a minimum sample count on both sides.
4. `set_step` moves the share; reaching 100% is `promote_challenger` (the registry's `promote`, which
   re-checks the gates); `rollback` / `abort` set the share to 0 and restore the champion alias.

No Prefect import: `flows/rollout.py` runs the plan, `lvm rollout ...` calls these functions by hand.
"""

from lvm_core.rollout.decision import Action, Decision, Thresholds, decide
from lvm_core.rollout.plan import (
    abort,
    advance,
    check_plan,
    gate_blockers,
    promote_challenger,
    record_decision,
    rollback,
    set_step,
    start,
)
from lvm_core.rollout.routing import bucket, routing_salt
from lvm_core.rollout.state import (
    ABORTED,
    ACTIVE,
    DEFAULT_PLAN,
    NONE,
    PROMOTED,
    ROLLED_BACK,
    TAG_CHALLENGER,
    TAG_CHAMPION,
    TAG_DECISION,
    TAG_PLAN,
    TAG_PREFIX,
    TAG_SHARE,
    TAG_STARTED_AT,
    TAG_STATUS,
    TAG_STEP,
    TAG_STEP_STARTED_AT,
    RolloutError,
    RolloutState,
    read_state,
    state_from_tags,
)
from lvm_core.rollout.stats import STATS_PATH, VersionStats, merge_stats, read_service_stats

__all__ = [
    "ABORTED", "ACTIVE", "DEFAULT_PLAN", "NONE", "PROMOTED", "ROLLED_BACK", "STATS_PATH", "TAG_PREFIX",
    "TAG_CHALLENGER", "TAG_CHAMPION", "TAG_DECISION", "TAG_PLAN", "TAG_SHARE", "TAG_STARTED_AT", "TAG_STATUS",
    "TAG_STEP", "TAG_STEP_STARTED_AT",
    "Action", "Decision", "RolloutError", "RolloutState", "Thresholds", "VersionStats",
    "abort", "advance", "bucket", "check_plan", "decide", "gate_blockers", "merge_stats", "promote_challenger",
    "read_service_stats", "read_state", "record_decision", "rollback", "routing_salt", "set_step", "start",
    "state_from_tags",
]
