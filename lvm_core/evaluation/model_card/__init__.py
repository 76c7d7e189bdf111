"""Model card: a Markdown page that says what a registered LVM is, what it was trained on and how good it is.

Why: a cosine of 0.56 means nothing on its own (a 5-weight average of the context reaches it on the
embedded sample), so the card always puts the model's numbers beside the trivial baselines, names the
exact data snapshot and encoder, and lists the gates and known limitations. It renders whatever keys are
present, so the training and evaluation flows can add sections without changing this module.

Expected `info` keys (all optional):
- `name`, `version`, `run_id`, `created_at`
- `model`: `{arch, params, config: {...}}`
- `data`: `{snapshot_id, dataset_id, dataset_dir, manifest_digest, counts: {...}, splits: {...}}`
- `encoder`: an `EncoderFingerprint.to_dict()` (or the object)
- `training`: `{epochs_run, early_stopped, best_epoch, best_val_cosine, ...}`; `best_epoch == 0` means no
  training epoch beat the untrained model, and the card says so
- `metrics`: `metrics[predictor][split][metric]` (`lvm_core.evaluation.EvaluationResult.metrics`; the
  first predictor, or `model_name`, is the model) or `metrics[split][predictor]` (number or metric dict),
  or a whole `EvaluationResult.to_dict()`, whose bootstrap `intervals` and `deltas` are then shown
- `intervals`, `deltas`: as in `EvaluationResult` (when `metrics` is a plain dict)
- `model_name`: which predictor in `metrics` is the model
- `gates`: a GateReport, its `to_manifest()` dict, or `name -> bool`
- `ood_kind`: "shift" or "in_distribution" (else read from an `EvaluationResult.to_dict()`'s config): a
  stratified ood is labelled a second in-distribution test sample
- `protocol`: `{primary_comparison, test_evaluations, warn_test_evaluations, max_test_evaluations, split_hash}`,
  the promotion protocol and how often the test split has been evaluated
- `intended_use`: text replacing the default; `limitations`: extra bullet points

Modules: `card` (the sections and `render_model_card`), `beside_baselines` (the metrics section),
`markdown` (cell format and tables).
"""
