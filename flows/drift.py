"""Flow: are the contexts the service receives still like the contexts of the model's snapshot?

Meant to run on a schedule (the `drift-monitor` deployment of prefect.yaml, or `lvm monitor-drift`) against
the service's window of received contexts (`current`, or `$LVM_SERVED_CONTEXTS` on the worker: a window
file, or a folder with one `contexts-<replica>.npy` per replica, all read together). The reference is the
held-out (val) windows of a dataset, of a registered model (its `dataset_id` tag), or of the model a
running service answers with. The unit of every test is the article / client session, not the window
(lvm_core/drift/); below `min_groups` of them on a side the verdict is "insufficient data": no alert.

Alerting is per drift *episode*: the first drifted run sends one PagerDuty Events API v2 `trigger`
(severity `warning`) with a dedup key stable for the monitored window (`drift_dedup_key`), later drifted
runs send nothing, and the first run that finds no drift sends the `resolve`; whether an episode is open is
kept in a Prefect Variable (`drift_episode_variable`). With `$LVM_PUSHGATEWAY_URL` set, the scores also go to
a Prometheus Pushgateway (`lvm_drift_*`) for dashboards; the page is this flow's, not a Prometheus rule's.
See docs/monitoring.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger

from flows.infra.hooks import RUN_HOOKS, pagerduty_event, send_alert
from lvm_core.contracts.errors import LvmError
from lvm_core.contracts.layout import dataset_dir, default_data_dir
from lvm_core.drift.features import DEFAULT_FEATURES, DEFAULT_MAX_GROUPS, DEFAULT_MAX_PER_GROUP, Features
from lvm_core.drift.mmd import DEFAULT_PERMUTATIONS
from lvm_core.drift.report import DEFAULT_ALPHA, DEFAULT_MIN_GROUPS, DEFAULT_THRESHOLD_AUC, DriftReport
from lvm_core.runtime.environment import ALERT_URL_ENV
from tasks import drift as t
from tasks.common import publish_markdown

DRIFT_SEVERITY = "warning"
CURRENT_ENV = "LVM_SERVED_CONTEXTS"  # the worker's default `current`: the service's window of received contexts
PUSHGATEWAY_ENV = "LVM_PUSHGATEWAY_URL"  # e.g. http://pushgateway:9091 in docker/compose.yaml
SERVE_URL_ENV = "LVM_SERVE_URL"
SERVE_TOKEN_ENV = "LVM_SERVE_TOKEN"
PUSH_JOB = "lvm_drift"


class DriftDetectedError(LvmError, RuntimeError):
    """Served contexts drifted from the training distribution (raised only with `fail_on_drift`); a finding, so
    never retried, and not an input error (the run ends Failed with its traceback)."""

    permanent = True


def resolve_dataset(reference_dataset: str, data_dir: str | None) -> Path:
    """A dataset folder path, or a dataset id under `<data_dir>/datasets/`."""
    path = Path(reference_dataset)
    if path.is_dir():
        return path
    root = Path(data_dir) if data_dir else default_data_dir()
    candidate = dataset_dir(root, reference_dataset)
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"{reference_dataset}: neither a dataset folder nor a dataset id under {root}/datasets")


def model_dataset(model: str, data_dir: str | None) -> tuple[str, str]:
    """(dataset id, "name vN") of a registered model reference: the `dataset_id` tag of the version.

    `models:/<name>@<alias>`, `models:/<name>/<version>` or a bare name (its champion). Raises
    ModelNotFoundError for an unknown model, version or alias, ValueError for a version without the tag.
    """
    from lvm_core.tracking.references import parse_reference, resolve_version
    from lvm_core.tracking.setup import configure_tracking
    from lvm_core.tracking.tags import TAG_DATASET_ID

    configure_tracking(Path(data_dir) if data_dir else default_data_dir())
    name, which = parse_reference(model)
    mv = resolve_version(name, which)
    dataset_id = (mv.tags or {}).get(TAG_DATASET_ID)
    if not dataset_id:
        raise ValueError(f"{name} v{mv.version} has no {TAG_DATASET_ID!r} tag: pass the reference dataset instead")
    return dataset_id, f"{name} v{mv.version}"


def served_model(service: str, token: str | None = None, timeout: float = 10.0) -> str:
    """`models:/<name>/<version>` of the model a running `lvm serve` answers with (the largest share).

    Asks `GET <service>/v1/models` with the bearer token (`token` or `$LVM_SERVE_TOKEN`). Raises
    ValueError when the service cannot be reached, refuses the token or serves nothing registered.
    """
    token = token if token is not None else os.environ.get(SERVE_TOKEN_ENV, "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = service.rstrip("/") + "/v1/models"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ValueError(f"service {service}: not reachable ({exc})") from None
    if response.status_code == 401:
        raise ValueError(f"service {service}: token refused; set {SERVE_TOKEN_ENV}")
    if response.status_code != 200:
        raise ValueError(f"service {service}: GET /v1/models answered {response.status_code}")
    serving = [s for s in response.json().get("serving") or [] if s.get("version") is not None]
    if not serving:
        raise ValueError(f"service {service}: serves no registered model version yet")
    top = max(serving, key=lambda s: float(s.get("share") or 0.0))
    return f"models:/{top['name']}/{top['version']}"


def resolve_reference(reference_dataset: str | None, model: str | None, service: str | None,
                      data_dir: str | None) -> tuple[Path, str]:
    """The reference dataset folder and what it stands for: exactly one of dataset, model or service."""
    given = [k for k, v in (("reference_dataset", reference_dataset), ("model", model), ("service", service)) if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one of reference_dataset, model or service (got {', '.join(given) or 'none'})")
    if reference_dataset:
        root = resolve_dataset(reference_dataset, data_dir)
        return root, root.name
    if service:
        model = served_model(service)
    dataset_id, label = model_dataset(str(model), data_dir)
    return resolve_dataset(dataset_id, data_dir), label


def push_drift_metrics(report: DriftReport, *, dataset_id: str, model: str, url: str | None = None) -> bool:
    """Scores as `lvm_drift_*` gauges to a Prometheus Pushgateway (`url` or `$LVM_PUSHGATEWAY_URL`).

    One group per reference dataset (job `lvm_drift`), replaced by each run, so the latest verdict is what
    Prometheus scrapes; the groups of earlier references (a champion since replaced) are deleted after the
    push, so no alert reads a retired reference's scores. With insufficient data the AUC and p-value are left out (there are none) and
    `lvm_drift_insufficient_data` is 1. False without a URL; a Pushgateway that cannot be reached raises OSError.
    """
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    from lvm_core.io.pushgateway import retire_groups

    url = url or os.environ.get(PUSHGATEWAY_ENV)
    if not url:
        return False
    reg = CollectorRegistry()
    labels = {"reference_dataset": dataset_id, "model": model, "features": report.features}
    gauges: list[tuple[str, str, float | None]] = [
        ("lvm_drift_auc", "Grouped domain-classifier ROC-AUC of served vs held-out contexts (0.5 = alike)", report.auc),
        ("lvm_drift_auc_threshold", "AUC above which (with MMD p < alpha) the monitor reports drift",
         report.threshold_auc),
        ("lvm_drift_mmd_p_value", "MMD group-permutation p-value of served vs held-out contexts", report.mmd_p_value),
        ("lvm_drift_alpha", "MMD p-value below which (with a large AUC) the monitor reports drift", report.alpha),
        ("lvm_drift_drifted", "1 when the last drift check found drift", float(report.drifted)),
        ("lvm_drift_insufficient_data", "1 when the last drift check had too few articles/sessions for a verdict",
         float(report.insufficient)),
        ("lvm_drift_current_rows", "Served contexts in the last drift check", float(report.n_current)),
        ("lvm_drift_current_groups", "Client sessions in the last drift check", float(report.n_current_groups)),
        ("lvm_drift_reference_groups", "Reference articles in the last drift check", float(report.n_reference_groups)),
        ("lvm_drift_min_groups", "Sessions / articles each side needs before a verdict", float(report.min_groups)),
        ("lvm_drift_last_run_timestamp_seconds", "Unix time of the last drift check", time.time()),
    ]
    for name, doc, value in gauges:
        if value is not None:
            Gauge(name, doc, list(labels), registry=reg).labels(**labels).set(value)
    push_to_gateway(url, job=PUSH_JOB, grouping_key={"reference_dataset": dataset_id}, registry=reg, timeout=10)
    try:  # the push is done; a group left behind is only a stale dashboard entry (its alert reads the newest group)
        retire_groups(url, PUSH_JOB, keep={"reference_dataset": dataset_id}, timeout=10)
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("old drift groups not retired from %s: %s", url, exc)
    return True


def _stream_digest(current: str) -> str:
    return hashlib.sha1(str(Path(current).resolve()).encode()).hexdigest()[:12]


def drift_dedup_key(current: str) -> str:
    """The PagerDuty dedup key of drift on one monitored window (file, folder or pattern of the served contexts).

    It does not name the reference dataset: when a new champion on a newer snapshot ends the drift, the
    same incident is resolved instead of the old one staying open forever.
    """
    return f"lvm-drift-{_stream_digest(current)}"


def drift_episode_variable(current: str) -> str:
    """The Prefect Variable that holds the open drift episode of a monitored window (absent: none open)."""
    return f"lvm_drift_episode_{_stream_digest(current)}"


def drift_event(report: DriftReport, *, dataset_id: str, current: str, action: str = "trigger") -> dict[str, Any]:
    """The PagerDuty Events v2 body for a drift verdict (`trigger`, or `resolve` once it is gone)."""
    from prefect.runtime import deployment, flow_run

    event = pagerduty_event(
        flow_name=flow_run.flow_name or "monitor_drift",
        flow_run_id=flow_run.id,
        flow_run_name=flow_run.name or "",
        state_name="Drifted" if report.drifted else "Completed",
        deployment=deployment.name,
        message=report.summary(),
    )
    event["event_action"] = action
    event["dedup_key"] = drift_dedup_key(current)
    what = "drifted from" if action == "trigger" else "no longer drift from"
    event["payload"]["summary"] = f"LVM served contexts {what} {dataset_id}: {report.summary()}"[:1024]
    event["payload"]["severity"] = DRIFT_SEVERITY
    event["payload"]["custom_details"].update(reference_dataset=dataset_id, current=str(current), drift=report.to_dict())
    return event


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    what = p.get("reference_dataset") or p.get("model") or p.get("service") or "reference"
    return f"drift-{Path(str(what)).name if p.get('reference_dataset') else what}"


@flow(name="monitor_drift", flow_run_name=_run_name, log_prints=True, **RUN_HOOKS)
def monitor_drift(
    reference_dataset: str | None = None,
    current: str | None = None,
    data_dir: str | None = None,
    model: str | None = None,
    service: str | None = None,
    threshold_auc: float = DEFAULT_THRESHOLD_AUC,
    alpha: float = DEFAULT_ALPHA,
    min_groups: int = DEFAULT_MIN_GROUPS,
    fail_on_drift: bool = False,
    max_groups: int = DEFAULT_MAX_GROUPS,
    max_per_group: int = DEFAULT_MAX_PER_GROUP,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    features: Features = DEFAULT_FEATURES,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare served contexts with the held-out contexts of the model's dataset; one incident per drift episode.

    Returns the report: `DriftReport.to_dict()` (`verdict`: "drift", "no drift" or "insufficient data")
    plus `reference_dataset`, `reference` (the dataset id, or "name vN" of the model), `current`, `alert`
    (the PagerDuty action delivered by this run: "trigger" when an episode opens, "resolve" when it ends,
    None otherwise), `episode` ("opened", "ongoing", "resolved" or None) and `pushed`.

    Args:
        reference_dataset: The model's dataset folder, or its id under `<data_dir>/datasets/`.
        current: The served contexts: a window file, a folder of window files (one per replica) or a glob
            pattern; or a second dataset folder (its test/ood windows). Default `$LVM_SERVED_CONTEXTS`.
        data_dir: Data folder for dataset ids and the registry (default $LVM_DATA_DIR or ./lvm-data).
        model: Instead of `reference_dataset`: a registered model (`models:/lvm-amn@champion`, `.../3`)
            whose `dataset_id` tag names the reference.
        service: Instead of either: the URL of a running `lvm serve`; the model it serves is the
            reference (token from `$LVM_SERVE_TOKEN`).
        threshold_auc: Drift needs the grouped domain-classifier ROC-AUC above this (0.5 = indistinguishable).
        alpha: Drift needs the MMD group-permutation p-value below this.
        min_groups: Articles (reference) and client sessions (current) each side needs before any verdict.
        fail_on_drift: End the run Failed on drift (the failure hook then alerts too, as a separate
            `error` incident); by default the run completes and the drift episode's incident is the signal.
        max_groups: Groups sampled from each side.
        max_per_group: Windows sampled from each group.
        n_permutations: Group permutations of the MMD test (smallest p-value 1/(n+1)).
        features: Rows compared: mean (normalised mean of the context), last (last vector) or mean_last.
        seed: Sampling, cross-validation and permutation seed.
    """
    log = get_run_logger()
    current = current or os.environ.get(CURRENT_ENV)
    if not current:
        raise ValueError(f"no served contexts to check: pass `current` (a window file or folder) or set {CURRENT_ENV}")
    root, label = resolve_reference(reference_dataset, model, service, data_dir)
    dataset_id = root.name
    ref = t.reference_sample(str(root), dataset_id, max_groups, max_per_group, seed)
    cur = t.current_sample(current, max_groups, max_per_group, seed)
    report = t.drift_tests(ref, cur, threshold_auc, alpha, min_groups, seed, n_permutations, features)
    alert, episode, pushed = _announce(report, dataset_id, current, label, log)
    result = {**report.to_dict(), "reference_dataset": str(root), "reference": label, "current": str(current),
              "alert": alert, "episode": episode, "pushed": pushed}
    if report.drifted and fail_on_drift:
        raise DriftDetectedError(f"served contexts drifted from {dataset_id}: {report.summary()}")
    return result


def _announce(report: DriftReport, dataset_id: str, current: str, label: str,
              log: Any) -> tuple[str | None, str | None, bool]:
    """Log the scores, publish the report artifact, manage the episode's incident and push the scores."""
    log.info("drift %s vs %s: %s", dataset_id, current, report.summary())
    for note in report.notes:
        log.warning("%s", note)
    publish_markdown(report.markdown(f"Drift of served contexts — {dataset_id}") + f"\n\nCurrent: `{current}`",
                     f"drift-{dataset_id}", "Served contexts against the model's held-out contexts")
    alert, episode = _alert(report, dataset_id, current, log)
    pushed = _push(report, dataset_id, label, log)
    if report.drifted:
        log.warning("%s", report.summary())
    return alert, episode, pushed


def _push(report: DriftReport, dataset_id: str, label: str, log: Any) -> bool:
    """Scores to the Pushgateway when one is configured; a lost push is logged, never raised."""
    try:
        pushed = push_drift_metrics(report, dataset_id=dataset_id, model=label)
    except OSError as exc:
        log.warning("drift scores not pushed to %s: %s", os.environ.get(PUSHGATEWAY_ENV), exc)
        return False
    if pushed:
        log.info("drift scores pushed to %s", os.environ.get(PUSHGATEWAY_ENV))
    return pushed


def _alert(report: DriftReport, dataset_id: str, current: str, log: Any) -> tuple[str | None, str | None]:
    """(action delivered, episode) for one verdict: trigger when an episode opens, resolve when it ends.

    An episode is open while the Prefect Variable `drift_episode_variable(current)` exists; it is set only
    once the trigger was delivered and removed only once the resolve was, so a lost event is retried by the
    next run. "insufficient data" changes nothing (a restart or a quiet night does not end an episode).
    No webhook URL: log only, no episode kept. A lost alert is logged, never raised.
    """
    from prefect.variables import Variable

    if not os.environ.get(ALERT_URL_ENV):
        if report.drifted:
            log.warning("no %s set: drift alert logged only", ALERT_URL_ENV)
        return None, None
    name = drift_episode_variable(current)
    episode = Variable.get(name, default=None)
    if report.insufficient:
        log.info("insufficient data: no verdict, the drift episode stays %s", "open" if episode else "closed")
        return None, "ongoing" if episode else None
    if report.drifted == bool(episode):
        return None, "ongoing" if episode else None
    action = "trigger" if report.drifted else "resolve"
    try:
        sent = send_alert(drift_event(report, dataset_id=dataset_id, current=current, action=action))
    except httpx.HTTPError as exc:
        log.warning("drift %s for %s not delivered (retried by the next run): %s", action, dataset_id, exc)
        return None, "ongoing" if episode else None
    if not sent:
        return None, None
    if report.drifted:
        Variable.set(name, {"since": time.time(), "reference_dataset": dataset_id, "dedup_key": drift_dedup_key(current)},
                     overwrite=True)
    else:
        Variable.unset(name)
    log.info("drift %s sent for %s (dedup key %s)", action, dataset_id, drift_dedup_key(current))
    return action, "opened" if report.drifted else "resolved"
