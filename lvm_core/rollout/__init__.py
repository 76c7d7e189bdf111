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
