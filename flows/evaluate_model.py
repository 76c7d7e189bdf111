"""Flow: registered model + its dataset → metrics beside baselines → report → gates → promotion."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.hooks import RUN_HOOKS

from lvm_core import contracts
from lvm_core.runtime.faults import crash_point
from lvm_core.tracking import TrainingRun, configure_tracking
from tasks import evaluate as t
from tasks.common import gates_markdown, publish_markdown, publish_table


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
        thresholds: Gate threshold overrides, e.g. {"min_val_cosine": 0.6}.
        promote: Move `champion` to this version when every gate passes.
        max_windows: Evaluate on at most this many windows per split (seeded sample).
        allow_contamination: Evaluate even when evaluation articles of `dataset` were training articles of
            the model (or that cannot be checked); the overlap is logged, put in the report and tagged
            `contamination=<n> articles` on the evaluation run and the model version, which is then
            not promoted.
    """
    log = get_run_logger()
    root = Path(data_dir) if data_dir else contracts.default_data_dir()
    configure_tracking(root)
    loaded = t.load_model(model)
    ds = t.load_eval_dataset(dataset or t.dataset_of(loaded), loaded)
    contamination = t.check_contamination(loaded, ds, allow_contamination)
    result = t.evaluate(loaded, ds, max_windows)
    gate_report = t.gates(result, ds, thresholds or {})
    out_dir = t.reports_dir(root, loaded)
    paths = t.report(result, loaded, ds, gate_report, out_dir, contamination)
    with TrainingRun(root, run_name=f"evaluate-{loaded.name}-v{loaded.version}", arch=loaded.arch,
                     snapshot_id=ds.manifest.snapshot_id, encoder_fingerprint=ds.fingerprint,
                     tags={"evaluates": f"{loaded.name}/{loaded.version}", "training_run": loaded.run_id or "",
                           "run_type": "evaluation", t.TAG_CONTAMINATION: contamination.tag_value()}) as run:
        run.log_dataset_manifest(ds.paths.manifest, context="evaluation")
        for pred, by_split in result.metrics.items():
            for split, metrics in by_split.items():
                run.log_metrics({_metric_key(pred, split, k): v for k, v in metrics.items()
                                 if isinstance(v, (int, float)) and v == v})
        run.log_json(result.to_dict(), "evaluation.json")
        for p in paths.values():
            run.log_artifact(Path(p), "report")
        crash_point("evaluate")
        run.log_gate_results(gate_report, stage="post_training")
        eval_run_id = run.run_id
    t.record_contamination(loaded, contamination)
    if promote and not contamination.trusted:
        log.warning("not promoting %s: its evaluation is contaminated (%s)", loaded.describe(), contamination.tag_value())
        promote = False
    promotion = t.promote(loaded, gate_report) if promote else None
    if promotion is None and contamination.trusted:
        t.record_gates(loaded, gate_report)  # a later rollout or promotion reads them

    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in result.summary_table()]
    publish_table(rows, f"evaluation-{loaded.name}-v{loaded.version}", "Model beside the trivial baselines (same windows)")
    md_report = Path(paths["markdown"]).read_text()
    publish_markdown(
        gates_markdown(f"Post-training gates — {loaded.name} v{loaded.version}", gate_report.to_manifest(),
                       f"Promotion: {promotion.action if promotion else 'skipped'}\n\n{md_report[:20000]}"),
        f"report-{loaded.name}-v{loaded.version}", "Evaluation report and gates",
    )
    summary = {
        "model": f"{loaded.name}/{loaded.version}",
        "name": loaded.name,
        "version": loaded.version,
        "dataset": str(ds.root),
        "gates": gate_report.to_manifest(),
        "gates_passed": gate_report.passed,
        "promotion": promotion.to_dict() if promotion else None,
        "summary": result.summary_table(),
        "report": {k: str(v) for k, v in paths.items()},
        "evaluation_run_id": eval_run_id,
        "model_name_in_metrics": result.model_name,
        "contamination": contamination.to_dict(),
    }
    log.info("gates %s; promotion: %s; report: %s", "passed" if gate_report.passed else f"failed ({', '.join(gate_report.failed)})",
             promotion.action if promotion else "skipped", paths["html"])
    return summary


def _metric_key(pred: str, split: str, metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", f"{pred}.{split}.{metric}").replace(" ", "_")
