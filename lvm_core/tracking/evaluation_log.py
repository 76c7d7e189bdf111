"""What an evaluation records in MLflow: a run of its own (metrics, evaluation.json, the report, the gates) and,
after an allowed contaminated evaluation, the contamination tags on the model version."""

from __future__ import annotations

import re
from pathlib import Path

from lvm_core.contracts.gates import GateReport
from lvm_core.data.build.load import Dataset
from lvm_core.evaluation.contamination import ContaminationReport
from lvm_core.evaluation.result import EvaluationResult
from lvm_core.models.loader import LoadedModel
from lvm_core.runtime.faults import crash_point
from lvm_core.tracking.runs import TrainingRun
from lvm_core.tracking.setup import mlflow_client
from lvm_core.tracking.tags import TAG_CONTAMINATION


def log_evaluation_run(data_dir: Path, model: LoadedModel, ds: Dataset, result: EvaluationResult,
                       paths: dict[str, Path], gate_report: GateReport, contamination_report: ContaminationReport) -> str:
    """An MLflow run of its own for the evaluation: metrics, evaluation.json, the report, the gates; its id."""
    with TrainingRun(data_dir, run_name=f"evaluate-{model.name}-v{model.version}", arch=model.arch,
                     snapshot_id=ds.manifest.snapshot_id, encoder_fingerprint=ds.fingerprint,
                     tags={"evaluates": f"{model.name}/{model.version}", "training_run": model.run_id or "",
                           "run_type": "evaluation", TAG_CONTAMINATION: contamination_report.tag_value()}) as run:
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
