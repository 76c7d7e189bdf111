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
