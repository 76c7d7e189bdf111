"""Flow: are the contexts the service receives still like the model's training contexts?

Meant to run on a schedule (the `drift-monitor` deployment of prefect.yaml, or `lvm monitor-drift`) against
the service's rolling window of received contexts (an .npy file of shape (n, ctx, D); `current`, or
`$LVM_SERVED_CONTEXTS` on the worker). The reference is the training data of a dataset, of a registered
model (its `dataset_id` tag), or of the model a running service answers with. It publishes a markdown
artifact with the verdict, logs the scores and, on drift, sends a PagerDuty Events API v2 `trigger` to
`$LVM_ALERT_WEBHOOK_URL` (severity `warning`, one dedup key per reference dataset and current source, so
repeated scheduled runs add to one open incident instead of opening new ones); a run that finds no drift
sends the matching `resolve`. With `$LVM_PUSHGATEWAY_URL` set, the scores also go to a Prometheus
Pushgateway (`lvm_drift_*`), where the alert rules of docker/prometheus/alerts.yml read them. See
docs/monitoring.md.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger

from flows.infra.hooks import RUN_HOOKS, pagerduty_event, send_alert
from lvm_core import drift
from lvm_core.contracts.errors import LvmError
from lvm_core.contracts.layout import dataset_dir, default_data_dir
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


def push_drift_metrics(report: drift.DriftReport, *, dataset_id: str, model: str, url: str | None = None) -> bool:
    """Scores as `lvm_drift_*` gauges to a Prometheus Pushgateway (`url` or `$LVM_PUSHGATEWAY_URL`).

    One group per reference dataset (job `lvm_drift`), replaced by each run, so the latest verdict is what
    Prometheus scrapes. False without a URL; a Pushgateway that cannot be reached raises OSError.
    """
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    url = url or os.environ.get(PUSHGATEWAY_ENV)
    if not url:
        return False
    reg = CollectorRegistry()
    labels = {"reference_dataset": dataset_id, "model": model, "features": report.features}
    for name, doc, value in (
        ("lvm_drift_auc", "Domain-classifier ROC-AUC of served vs training contexts (0.5 = alike)", report.auc),
        ("lvm_drift_auc_threshold", "AUC above which the monitor reports drift", report.threshold_auc),
        ("lvm_drift_mmd_p_value", "MMD permutation-test p-value of served vs training contexts", report.mmd_p_value),
        ("lvm_drift_alpha", "p-value below which the monitor reports drift", report.alpha),
        ("lvm_drift_drifted", "1 when the last drift check found drift", float(report.drifted)),
        ("lvm_drift_current_rows", "Served contexts in the last drift check", float(report.n_current)),
        ("lvm_drift_last_run_timestamp_seconds", "Unix time of the last drift check", time.time()),
    ):
        Gauge(name, doc, list(labels), registry=reg).labels(**labels).set(value)
    push_to_gateway(url, job=PUSH_JOB, grouping_key={"reference_dataset": dataset_id}, registry=reg, timeout=10)
    return True


def drift_dedup_key(dataset_id: str, current: str) -> str:
    """One incident per (reference dataset, current source) for as long as the drift lasts."""
    digest = hashlib.sha1(str(Path(current).resolve()).encode()).hexdigest()[:10]
    return f"lvm-drift-{dataset_id}-{digest}"


def drift_event(report: drift.DriftReport, *, dataset_id: str, current: str, action: str = "trigger") -> dict[str, Any]:
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
    event["dedup_key"] = drift_dedup_key(dataset_id, current)
    event["payload"]["summary"] = f"LVM served contexts drifted from {dataset_id}: {report.summary()}"[:1024]
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
    threshold_auc: float = drift.DEFAULT_THRESHOLD_AUC,
    alpha: float = drift.DEFAULT_ALPHA,
    fail_on_drift: bool = False,
    max_windows: int = 2000,
    max_rows: int = drift.DEFAULT_MAX_ROWS,
    n_permutations: int = 200,
    features: drift.Features = drift.DEFAULT_FEATURES,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare served contexts with the training contexts of the model's dataset; alert on drift.

    Returns the report: `DriftReport.to_dict()` plus `reference_dataset`, `reference` (what it stands
    for: the dataset id, or "name vN" of the model), `current`, `alert` (the PagerDuty action delivered:
    "trigger", "resolve", or None without a webhook URL or when it failed) and `pushed` (scores sent to
    the Pushgateway).

    Args:
        reference_dataset: The model's dataset folder, or its id under `<data_dir>/datasets/`.
        current: .npy of received contexts (n, ctx, D), or a second dataset folder (its test/ood windows);
            default `$LVM_SERVED_CONTEXTS`.
        data_dir: Data folder for dataset ids and the registry (default $LVM_DATA_DIR or ./lvm-data).
        model: Instead of `reference_dataset`: a registered model (`models:/lvm-amn@champion`, `.../3`)
            whose `dataset_id` tag names the reference.
        service: Instead of either: the URL of a running `lvm serve`; the model it serves is the
            reference (token from `$LVM_SERVE_TOKEN`).
        threshold_auc: Drift when the domain-classifier ROC-AUC is above this (0.5 = indistinguishable).
        alpha: Drift when the MMD permutation p-value is below this.
        fail_on_drift: End the run Failed on drift (the failure hook then alerts too, as a separate
            `error` incident); by default the run completes and the drift alert is the signal.
        max_windows: Windows sampled from each side before the tests (the window of the check).
        max_rows: Rows per side the tests use (the MMD kernel matrix is at most 2·max_rows square).
        n_permutations: Permutations of the MMD test (smallest p-value 1/(n+1)).
        features: Rows compared: mean (normalised mean of the context), last (last vector) or mean_last.
        seed: Sampling, cross-validation and permutation seed.
    """
    log = get_run_logger()
    current = current or os.environ.get(CURRENT_ENV)
    if not current:
        raise ValueError(f"no served contexts to check: pass `current` (an .npy of (n, ctx, D)) or set {CURRENT_ENV}")
    root, label = resolve_reference(reference_dataset, model, service, data_dir)
    dataset_id = root.name
    ref = t.reference_rows(str(root), dataset_id, features, max_windows, seed)
    cur = t.current_rows(current, features, max_windows, seed)
    report = t.drift_tests(ref, cur, threshold_auc, alpha, seed, n_permutations, max_rows, features)
    alert, pushed = _announce(report, dataset_id, current, label, log)
    result = {**report.to_dict(), "reference_dataset": str(root), "reference": label, "current": str(current),
              "alert": alert, "pushed": pushed}
    if report.drifted and fail_on_drift:
        raise DriftDetectedError(f"served contexts drifted from {dataset_id}: {report.summary()}")
    return result


def _announce(report: drift.DriftReport, dataset_id: str, current: str, label: str, log: Any) -> tuple[str | None, bool]:
    """Log the scores, publish the report artifact, alert (PagerDuty) and push the scores; (alert, pushed)."""
    log.info("drift %s vs %s: auc=%.4f mmd2=%.6g p=%.4g drifted=%s", dataset_id, current, report.auc,
             report.mmd2, report.mmd_p_value, report.drifted)
    publish_markdown(report.markdown(f"Drift of served contexts — {dataset_id}") + f"\n\nCurrent: `{current}`",
                     f"drift-{dataset_id}", "Served contexts against training contexts")
    alert = _alert(report, dataset_id, current, log)
    pushed = _push(report, dataset_id, label, log)
    if report.drifted:
        log.warning("%s", report.summary())
    return alert, pushed


def _push(report: drift.DriftReport, dataset_id: str, label: str, log: Any) -> bool:
    """Scores to the Pushgateway when one is configured; a lost push is logged, never raised."""
    try:
        pushed = push_drift_metrics(report, dataset_id=dataset_id, model=label)
    except OSError as exc:
        log.warning("drift scores not pushed to %s: %s", os.environ.get(PUSHGATEWAY_ENV), exc)
        return False
    if pushed:
        log.info("drift scores pushed to %s", os.environ.get(PUSHGATEWAY_ENV))
    return pushed


def _alert(report: drift.DriftReport, dataset_id: str, current: str, log: Any) -> str | None:
    """Trigger on drift, resolve otherwise; no URL → log only. A lost alert is logged, never raised."""
    if not os.environ.get(ALERT_URL_ENV):
        if report.drifted:
            log.warning("no %s set: drift alert logged only", ALERT_URL_ENV)
        return None
    action = "trigger" if report.drifted else "resolve"
    try:
        sent = send_alert(drift_event(report, dataset_id=dataset_id, current=current, action=action))
    except httpx.HTTPError as exc:
        log.warning("drift %s for %s not delivered: %s", action, dataset_id, exc)
        return None
    log.info("drift %s sent for %s", action, dataset_id)
    return action if sent else None
