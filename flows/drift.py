"""Flow: are the contexts the service receives still like the model's training contexts?

Meant to run on a schedule against the service's rolling window of received contexts (an .npy file of
shape (n, ctx, D)). It publishes a markdown artifact with the verdict, logs the scores and, on drift,
sends a PagerDuty Events API v2 `trigger` to `$LVM_ALERT_WEBHOOK_URL` (severity `warning`, one dedup key
per reference dataset and current source, so repeated scheduled runs add to one open incident instead
of opening new ones); a run that finds no drift sends the matching `resolve`. See docs/monitoring.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
from prefect import flow, get_run_logger

from flows.hooks import ALERT_URL_ENV, RUN_HOOKS, pagerduty_event, send_alert

from lvm_core import contracts, drift
from tasks import drift as t
from tasks.common import publish_markdown

DRIFT_SEVERITY = "warning"


class DriftDetectedError(RuntimeError):
    """Served contexts drifted from the training distribution (raised only with `fail_on_drift`)."""


def resolve_dataset(reference_dataset: str, data_dir: str | None) -> Path:
    """A dataset folder path, or a dataset id under `<data_dir>/datasets/`."""
    path = Path(reference_dataset)
    if path.is_dir():
        return path
    root = Path(data_dir) if data_dir else contracts.default_data_dir()
    candidate = contracts.dataset_dir(root, reference_dataset)
    if candidate.is_dir():
        return candidate
    raise FileNotFoundError(f"{reference_dataset}: neither a dataset folder nor a dataset id under {root}/datasets")


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


@flow(name="monitor_drift", flow_run_name="drift-{reference_dataset}", log_prints=True, **RUN_HOOKS)
def monitor_drift(
    reference_dataset: str,
    current: str,
    data_dir: str | None = None,
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

    Returns the report: `DriftReport.to_dict()` plus `reference_dataset`, `current` and `alert` (the
    PagerDuty action delivered: "trigger", "resolve", or None without a webhook URL or when it failed).

    Args:
        reference_dataset: The model's dataset folder, or its id under `<data_dir>/datasets/`.
        current: .npy of received contexts (n, ctx, D), or a second dataset folder (its test/ood windows).
        data_dir: Data folder for dataset ids (default $LVM_DATA_DIR or ./lvm-data).
        threshold_auc: Drift when the domain-classifier ROC-AUC is above this (0.5 = indistinguishable).
        alpha: Drift when the MMD permutation p-value is below this.
        fail_on_drift: End the run Failed on drift (the failure hook then alerts too, as a separate
            `error` incident); by default the run completes and the drift alert is the signal.
        max_windows: Windows sampled from each side before the tests.
        max_rows: Rows per side the tests use (the MMD kernel matrix is at most 2·max_rows square).
        n_permutations: Permutations of the MMD test (smallest p-value 1/(n+1)).
        features: Rows compared: mean (normalised mean of the context), last (last vector) or mean_last.
        seed: Sampling, cross-validation and permutation seed.
    """
    log = get_run_logger()
    root = resolve_dataset(reference_dataset, data_dir)
    dataset_id = root.name
    ref = t.reference_rows(str(root), dataset_id, features, max_windows, seed)
    cur = t.current_rows(current, features, max_windows, seed)
    report = t.drift_tests(ref, cur, threshold_auc, alpha, seed, n_permutations, max_rows, features)
    log.info("drift %s vs %s: auc=%.4f mmd2=%.6g p=%.4g drifted=%s", dataset_id, current, report.auc,
             report.mmd2, report.mmd_p_value, report.drifted)
    publish_markdown(report.markdown(f"Drift of served contexts — {dataset_id}") + f"\n\nCurrent: `{current}`",
                     f"drift-{dataset_id}", "Served contexts against training contexts")
    alert = _alert(report, dataset_id, current, log)
    if report.drifted:
        log.warning("%s", report.summary())
    result = {**report.to_dict(), "reference_dataset": str(root), "current": str(current), "alert": alert}
    if report.drifted and fail_on_drift:
        raise DriftDetectedError(f"served contexts drifted from {dataset_id}: {report.summary()}")
    return result


def _alert(report: drift.DriftReport, dataset_id: str, current: str, log: Any) -> str | None:
    """Trigger on drift, resolve otherwise; no URL → log only. A lost alert is logged, never raised."""
    import os

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
