"""Prefect tasks of evaluation: load model + dataset, run every metric for model and baselines,
write the report, apply the post-training gates and move aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from lvm_core.contracts.gates import GateReport, GateThresholds
from lvm_core.contracts.layout import EVAL_SPLITS
from lvm_core.data.build.load import Dataset, load_dataset
from lvm_core.evaluation import contamination
from lvm_core.evaluation.compare import crossval_facts
from lvm_core.evaluation.contamination import ContaminationError, ContaminationReport
from lvm_core.evaluation.crossval import latest_crossval
from lvm_core.evaluation.evaluate import evaluate_predictors
from lvm_core.evaluation.gates import post_training_gates, primary_baseline
from lvm_core.evaluation.report import write_report
from lvm_core.evaluation.result import EvaluationResult
from lvm_core.models.baselines.collection import fit_baselines
from lvm_core.models.loader import LoadedModel
from lvm_core.tracking import evaluation_log
from lvm_core.tracking import promotion as tracking_promotion
from lvm_core.tracking.promotion import PromotionResult, record_gate_outcomes
from lvm_core.tracking.references import (
    load_registered_model,
    registered_version,
    training_dataset,
    training_registry_hash,
)
from tasks.common import COMPUTE_RETRIES, HOUR, IO_RETRIES, gates_markdown, publish_markdown, publish_table


@task(name="load-model", task_run_name="load-model-{model_ref}", cache_policy=NO_CACHE, **IO_RETRIES)
def load_model(model_ref: str) -> LoadedModel:
    return load_registered_model(model_ref)


@task(name="check-contamination", task_run_name="check-contamination-{model.name}-v{model.version}",
      cache_policy=NO_CACHE, **IO_RETRIES)
def check_contamination(model: LoadedModel, ds: Dataset, allow: bool = False) -> ContaminationReport:
    """Refuse to evaluate on articles the model was trained on (or when that cannot be checked) unless `allow`.

    With `allow`, the overlap is logged as a warning and returned for the report and the tags.
    """
    train_dir, split_hash = training_dataset(model)
    result = contamination.check_contamination(
        ds.root, ds.sequences, model=model.describe(), training_dataset=train_dir, training_split_hash=split_hash,
        eval_split_hash=ds.manifest.splits.content_hash, training_registry_hash=training_registry_hash(model),
    )
    if result.trusted:
        get_run_logger().info("%s", result.message())
        return result
    if not allow:
        raise ContaminationError(result.message())
    get_run_logger().warning("evaluating despite contamination (--allow-contamination): %s", result.message())
    return result


@task(name="load-eval-dataset", task_run_name="load-dataset-{root}", cache_policy=NO_CACHE, **IO_RETRIES)
def load_eval_dataset(root: str, model: LoadedModel) -> Dataset:
    """The dataset must come from the model's encoder and have val and ood windows (test where it has one)."""
    ds = load_dataset(Path(root))
    model.check_fingerprint(ds.fingerprint)
    if ds.context_len != model.context_len:
        raise ValueError(f"{root}: context length {ds.context_len} differs from {model.describe()}")
    missing = [s for s in ("val", "ood") if len(ds.sequences.get(s, [])) == 0]
    if missing:
        raise ValueError(f"{root}: dataset has no {' or '.join(missing)} sequences to evaluate on")
    return ds


@task(name="evaluate", task_run_name="evaluate-{model.name}-v{model.version}", cache_policy=NO_CACHE,
      timeout_seconds=6 * HOUR, **COMPUTE_RETRIES)
def evaluate(model: LoadedModel, ds: Dataset, max_windows: int | None = None) -> EvaluationResult:
    """Model and every trivial baseline (fitted on train) on the same val/test/ood windows."""
    baselines = fit_baselines(ds.vectors, ds.sequences["train"])
    predictors = {f"{model.arch} (model)": model.predict, **{name: b.predict for name, b in baselines.items()}}
    splits = tuple(s for s in EVAL_SPLITS if len(ds.sequences.get(s, [])) > 0)
    if "test" not in splits:
        get_run_logger().warning("%s has no test split (built before split roles): val is reported", ds.root)
    result = evaluate_predictors(
        predictors, ds.vectors, ds.sequences, ds.article_ids, ds.chunk_index, ds.text_hash, ds.texts,
        splits=splits, max_windows=max_windows, article_bins=ds.article_bins(), ood_kind=ds.manifest.splits.ood_kind,
    )
    log = get_run_logger()
    for row in result.summary_table():
        log.info("%-24s %-4s cosine %.4f r@5 %.3f mrr %.3f", row["predictor"], row["split"],
                 *(float("nan") if row.get(k) is None else row[k] for k in ("cosine", "r@5", "mrr")))
    return result


@task(name="count-test-evaluations", cache_policy=NO_CACHE, **IO_RETRIES)
def count_test_evaluations(ds: Dataset, result: EvaluationResult) -> int | None:
    """Evaluations of this test split (split hash) recorded so far, this one included; None when test is not reported."""
    if result.reporting_split != "test" or not ds.manifest.splits.content_hash:
        return None
    return evaluation_log.count_test_evaluations(ds.manifest.splits.content_hash) + 1


@task(name="post-training-gates", cache_policy=NO_CACHE)
def gates(result: EvaluationResult, ds: Dataset, thresholds: dict[str, Any],
          test_evaluations: int | None = None) -> GateReport:
    # the whole result: beats_best_baseline reads its bootstrap deltas on the reporting split
    limits = GateThresholds.from_dict(thresholds)
    report = post_training_gates(result, result.model_name, ds.manifest.to_dict(), limits,
                                 test_evaluations=test_evaluations)
    log = get_run_logger()
    for r in report.results:
        (log.info if r.passed else log.warning)("gate %-20s %s value=%s threshold=%s", r.name,
                                                "PASS" if r.passed else "FAIL", r.value, r.threshold)
    if test_evaluations is not None and test_evaluations > limits.warn_test_evaluations:
        log.warning("the test split of %s has been evaluated %d times (warning above %d, failing above %d)",
                    ds.root, test_evaluations, limits.warn_test_evaluations, limits.max_test_evaluations)
    return report


def protocol(result: EvaluationResult, thresholds: dict[str, Any], ds: Dataset,
             test_evaluations: int | None) -> dict[str, Any]:
    """The promotion protocol as the model card shows it: the primary comparison and the test-evaluation count."""
    limits = GateThresholds.from_dict(thresholds)
    baseline = primary_baseline(result.metrics, result.model_name)
    return {
        "primary_comparison": (f"{result.model_name} − {baseline} (the best trivial baseline by val cosine), cosine "
                               f"on {result.reporting_split}: the lower bound of its article-level interval (cluster-robust t) must "
                               f"exceed {limits.beats_baseline_margin:+.4f} (gate beats_best_baseline)"),
        "test_evaluations": test_evaluations,
        "warn_test_evaluations": limits.warn_test_evaluations,
        "max_test_evaluations": limits.max_test_evaluations,
        "split_hash": ds.manifest.splits.content_hash,
    }


def crossval_of(data_dir: Path, ds: Dataset) -> dict[str, Any] | None:
    """The newest `lvm compare --folds` of this dataset as the report and the card show it (None when none ran)."""
    found = latest_crossval(data_dir, ds.manifest.dataset_id)
    return crossval_facts(*found) if found else None


@task(name="write-report", cache_policy=NO_CACHE, **IO_RETRIES)
def report(result: EvaluationResult, model: LoadedModel, ds: Dataset, gate_report: GateReport, out_dir: Path,
           contamination_report: ContaminationReport | None = None,
           crossval: dict[str, Any] | None = None) -> dict[str, Path]:
    context: dict[str, Any] = {
        "model": f"{model.name} v{model.version}",
        "architecture": model.arch,
        "training run": model.run_id,
        "dataset": ds.manifest.dataset_id,
        "snapshot": ds.manifest.snapshot_id,
        "encoder": f"{ds.manifest.encoder.name} ({ds.manifest.encoder.dim}-d)",
        "gates": [r.to_dict() for r in gate_report.results],
    }
    if contamination_report is not None:
        context["contamination"] = (contamination_report.tag_value() if contamination_report.trusted
                                    else f"{contamination_report.tag_value()}: {contamination_report.message()}")
    if crossval:
        context["crossval"] = crossval
    return write_report(result, out_dir, title=f"Evaluation of {model.name} v{model.version}", context=context)


@task(name="promote", task_run_name="promote-{model.name}-v{model.version}", cache_policy=NO_CACHE, **IO_RETRIES)
def promote(model: LoadedModel, gate_report: GateReport) -> PromotionResult:
    """All gates passed → `champion` (previous one recorded); otherwise stays `challenger`, tagged. During an
    active staged rollout nothing moves: the gates are recorded and the result says "deferred"."""
    name, version = registered_version(model)
    return tracking_promotion.promote(name, version, gate_report, defer_during_rollout=True)


@task(name="record-gates", task_run_name="record-gates-{model.name}-v{model.version}", cache_policy=NO_CACHE, **IO_RETRIES)
def record_gates(model: LoadedModel, gate_report: GateReport) -> list[str]:
    """Gate outcomes on the version without moving an alias (evaluation without promotion)."""
    name, version = registered_version(model)
    return record_gate_outcomes(name, version, gate_report)


# --- the flow's result and its Prefect artifacts (no task run of its own) -----------------------------------


def publish_evaluation(model: LoadedModel, ds: Dataset, result: EvaluationResult, gate_report: GateReport,
                       promotion: PromotionResult | None, paths: dict[str, Path], eval_run_id: str,
                       contamination_report: ContaminationReport) -> dict[str, Any]:
    """The flow's result; the summary table and the report with its gates as Prefect artifacts, one log line."""
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in result.summary_table()]
    publish_table(rows, f"evaluation-{model.name}-v{model.version}", "Model beside the trivial baselines (same windows)")
    md_report = Path(paths["markdown"]).read_text()
    publish_markdown(
        gates_markdown(f"Post-training gates — {model.name} v{model.version}", gate_report.to_manifest(),
                       f"Promotion: {promotion.action if promotion else 'skipped'}\n\n{md_report[:20000]}"),
        f"report-{model.name}-v{model.version}", "Evaluation report and gates",
    )
    summary = {
        "model": f"{model.name}/{model.version}",
        "name": model.name,
        "version": model.version,
        "dataset": str(ds.root),
        "gates": gate_report.to_manifest(),
        "gates_passed": gate_report.passed,
        "promotion": promotion.to_dict() if promotion else None,
        "summary": result.summary_table(),
        "report": {k: str(v) for k, v in paths.items()},
        "evaluation_run_id": eval_run_id,
        "model_name_in_metrics": result.model_name,
        "contamination": contamination_report.to_dict(),
    }
    get_run_logger().info("gates %s; promotion: %s; report: %s",
                          "passed" if gate_report.passed else f"failed ({', '.join(gate_report.failed)})",
                          promotion.action if promotion else "skipped", paths["html"])
    return summary
