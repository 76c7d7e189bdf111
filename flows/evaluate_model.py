"""Flow: registered model + its dataset → metrics beside baselines → report → gates → promotion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.infra.hooks import RUN_HOOKS
from lvm_core.contracts.layout import default_data_dir, evaluation_reports_dir
from lvm_core.tracking.evaluation_log import log_evaluation_run, record_contamination
from lvm_core.tracking.references import recorded_dataset
from lvm_core.tracking.setup import configure_tracking
from tasks import evaluate as t


@flow(name="evaluate_model", flow_run_name="evaluate-{model}", log_prints=True, **RUN_HOOKS)
def evaluate_model(
    model: str = "models:/lvm-amn@challenger",
    dataset: str | None = None,
    data_dir: str | None = None,
    thresholds: dict[str, float | int | bool] | None = None,
    promote: bool = True,
    max_windows: int | None = None,
    allow_contamination: bool = False,
) -> dict[str, Any]:
    """Evaluate a registered model on its dataset's val/ood windows next to every trivial baseline.

    The report (Markdown + HTML with plots) goes to MLflow and the Prefect UI. When `promote` is set and
    every gate passes, the version becomes `champion`; otherwise it keeps `challenger` with the failed
    gates as tags. `dataset` defaults to the one recorded on the model's training run.

    Args:
        model: models:/NAME/VERSION, models:/NAME@ALIAS or a model folder.
        dataset: Dataset folder (default: the one the model was trained on).
        data_dir: Data folder (default $LVM_DATA_DIR or ./lvm-data).
        thresholds: Gate threshold overrides, e.g. {"min_test_cosine": 0.6, "max_test_evaluations": 10}
            (the old names min_val_cosine and max_ood_val_gap still work).
        promote: Move `champion` to this version when every gate passes.
        max_windows: Evaluate on at most this many windows per split (seeded sample).
        allow_contamination: Evaluate even when evaluation articles of `dataset` were training articles of
            the model (or that cannot be checked); the overlap is logged, put in the report and tagged
            `contamination=<n> articles` on the evaluation run and the model version, which is then
            not promoted.
    """
    log = get_run_logger()
    root = Path(data_dir) if data_dir else default_data_dir()
    configure_tracking(root)
    loaded = t.load_model(model)
    ds = t.load_eval_dataset(dataset or recorded_dataset(loaded), loaded)
    contamination = t.check_contamination(loaded, ds, allow_contamination)
    result = t.evaluate(loaded, ds, max_windows)
    looks = t.count_test_evaluations(ds, result)  # every look at test is counted, per split hash
    gate_report = t.gates(result, ds, thresholds or {}, looks)
    reports = evaluation_reports_dir(root, loaded.name, loaded.version)
    crossval = t.crossval_of(root, ds)  # the architectures' cross-validation on this dataset, when one ran
    paths = t.report(result, loaded, ds, gate_report, reports, contamination, crossval)
    eval_run_id = log_evaluation_run(root, loaded, ds, result, paths, gate_report, contamination,
                                     t.protocol(result, thresholds or {}, ds, looks), crossval)
    record_contamination(loaded, contamination)
    if promote and not contamination.trusted:
        log.warning("not promoting %s: its evaluation is contaminated (%s)", loaded.describe(), contamination.tag_value())
        promote = False
    promotion = t.promote(loaded, gate_report) if promote else None
    if promotion is None and contamination.trusted:
        t.record_gates(loaded, gate_report)  # a later rollout or promotion reads them
    return t.publish_evaluation(loaded, ds, result, gate_report, promotion, paths, eval_run_id, contamination)
