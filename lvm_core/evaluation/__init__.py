"""Evaluation of next-chunk predictors: every metric for the model and each trivial baseline on the same
windows, with article-bootstrap intervals, gates, report, model card and contamination check.

A predictor is any callable ``predict(ctx (B, ctx, D) float32) -> (B, D)`` (the trained model wrapper
and the trivial baselines alike). Windows come from a sequence set: ``context_rows (n, ctx)``,
``target_rows (n,)``, ``article_ids (n,)``, ``target_chunk_index (n,)`` — row indices into the chunk
vector array, whose rows are sorted by article then chunk_index. Any object with those attributes works.

Modules: `inputs` (EvaluationError, checked windows and predictions), `metrics/` (the pure metric
functions, one module per family), `evaluate` (`evaluate_predictors`: a loop over the metric table),
`intervals` (bootstrap intervals of a result), `result` (EvaluationResult, evaluation.json,
`reporting_split`), `bootstrap`, `gates`, `report` / `report_figures` / `report_tables`, `model_card`,
`compare`, `contamination`.
"""

from __future__ import annotations

from lvm_core.evaluation.evaluate import evaluate_predictors
from lvm_core.evaluation.inputs import EvaluationError, check_windows, predict_rows
from lvm_core.evaluation.metrics import (
    ablation_contexts,
    ablations,
    contrastive_accuracy,
    cosine_to_target,
    margin_vs_last,
    neighbor_table,
    offset_sweep,
    retrieval_metrics,
    rollout,
    rollout_mask,
    within_article_metrics,
)
from lvm_core.evaluation.result import INTERVAL_METRICS, EvaluationResult, reporting_split

__all__ = [
    "INTERVAL_METRICS",
    "EvaluationError",
    "EvaluationResult",
    "ablation_contexts",
    "ablations",
    "check_windows",
    "contrastive_accuracy",
    "cosine_to_target",
    "evaluate_predictors",
    "margin_vs_last",
    "neighbor_table",
    "offset_sweep",
    "predict_rows",
    "reporting_split",
    "retrieval_metrics",
    "rollout",
    "rollout_mask",
    "within_article_metrics",
]
