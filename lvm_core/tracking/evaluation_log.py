"""What an evaluation records in MLflow: a run of its own (metrics, evaluation.json, the report, the gates, a
model card with the promotion protocol) tagged with the split hash and the reported split, so that
`count_test_evaluations` can say how often a test split has been looked at; and, after an allowed
contaminated evaluation, the contamination tags on the model version."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lvm_core.contracts.gates import GateReport
from lvm_core.data.build.load import Dataset
from lvm_core.evaluation.contamination import ContaminationReport
from lvm_core.evaluation.result import EvaluationResult
from lvm_core.models.loader import LoadedModel
from lvm_core.runtime.faults import crash_point
from lvm_core.tracking.runs import TrainingRun
from lvm_core.tracking.setup import mlflow_client
from lvm_core.tracking.tags import TAG_CONTAMINATION

#: Tags of an evaluation run, set when it starts (a run that crashed later still counts as a look at test).
TAG_RUN_TYPE = "run_type"
TAG_EVAL_SPLIT_HASH = "eval_split_hash"
TAG_REPORTED_SPLIT = "reported_split"


def count_test_evaluations(split_hash: str) -> int:
    """Evaluation runs recorded so far, of any model, whose reported split was the test split of `split_hash`.

    Every look at a test split spends it: the post-training gate `test_evaluations` warns and then fails past
    a configurable count (`GateThresholds.warn_test_evaluations` / `max_test_evaluations`).
    """
    client = mlflow_client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return 0
    query = (f"tags.{TAG_RUN_TYPE} = 'evaluation' and tags.{TAG_EVAL_SPLIT_HASH} = '{split_hash}' "
             f"and tags.{TAG_REPORTED_SPLIT} = 'test'")
    n, token = 0, None
    while True:
        page = client.search_runs(experiments, filter_string=query, max_results=1000, page_token=token)
        n += len(page)
        token = page.token
        if not token:
            return n


def log_evaluation_run(data_dir: Path, model: LoadedModel, ds: Dataset, result: EvaluationResult,
                       paths: dict[str, Path], gate_report: GateReport, contamination_report: ContaminationReport,
                       protocol: dict[str, Any] | None = None, crossval: dict[str, Any] | None = None) -> str:
    """An MLflow run of its own for the evaluation: metrics, evaluation.json, the report, the gates and a model
    card (metrics beside baselines, the promotion `protocol`, the architectures' `crossval` when one ran,
    gates); its id."""
    from lvm_core.evaluation.model_card.card import render_model_card

    with TrainingRun(data_dir, run_name=f"evaluate-{model.name}-v{model.version}", arch=model.arch,
                     snapshot_id=ds.manifest.snapshot_id, encoder_fingerprint=ds.fingerprint,
                     tags={"evaluates": f"{model.name}/{model.version}", "training_run": model.run_id or "",
                           TAG_RUN_TYPE: "evaluation", TAG_CONTAMINATION: contamination_report.tag_value(),
                           TAG_EVAL_SPLIT_HASH: ds.manifest.splits.content_hash or "",
                           TAG_REPORTED_SPLIT: result.reporting_split}) as run:
        run.log_dataset_manifest(ds.paths.manifest, context="evaluation")
        for pred, by_split in result.metrics.items():
            for split, metrics in by_split.items():
                run.log_metrics({_metric_key(pred, split, k): v for k, v in metrics.items()
                                 if isinstance(v, (int, float)) and v == v})
        run.log_json(result.to_dict(), "evaluation.json")
        for p in paths.values():
            run.log_artifact(Path(p), "report")
        run.log_model_card(render_model_card({
            "name": model.name, "version": model.version, "run_id": run.run_id, "metrics": result.to_dict(),
            "ood_kind": ds.manifest.splits.ood_kind, "protocol": protocol or {}, "gates": gate_report,
            "crossval": crossval,
            "data": {"snapshot_id": ds.manifest.snapshot_id, "dataset_id": ds.manifest.dataset_id,
                     "split_hash": ds.manifest.splits.content_hash},
        }))
        crash_point("evaluate")
        run.log_gate_results(gate_report, stage="post_training")
        return run.run_id


def _metric_key(pred: str, split: str, metric: str) -> str:
    """`<predictor>.<split>.<metric>` with what MLflow refuses in a metric name replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", f"{pred}.{split}.{metric}").replace(" ", "_")


def record_contamination(model: LoadedModel, result: ContaminationReport) -> None:
    """Tag the model version `contamination=<n> articles` (or `unchecked: ...`) after an allowed contaminated run."""
    if result.trusted or not model.name or model.version is None:
        return
    client = mlflow_client()
    client.set_model_version_tag(model.name, str(model.version), TAG_CONTAMINATION, result.tag_value())
    client.set_model_version_tag(model.name, str(model.version), f"{TAG_CONTAMINATION}_dataset", result.eval_dataset)
