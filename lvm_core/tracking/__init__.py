"""MLflow tracking, model registry, promotion and rollback for LVM models.

A trained model is kept beside its data, its encoder and its gates: every training run records its
parameters, per-epoch metrics, the dataset manifest (as an MLflow dataset input with the manifest's digest),
gate results, plots and a model card. Models are registered as a directory of plain files
(`weights.safetensors`, `config.json`, `encoder.json`, optional `baselines/`) inside an MLflow "models from
code" pyfunc model, so neither registering nor loading a model ever pickles or unpickles Python objects.
Aliases carry the life cycle: `challenger` for a new version, `champion` only when every gate passed (or
when forced, which is recorded), and rollback moves `champion` back along the recorded history.

Works offline with the default tracking URI, a SQLite file in the data dir
(`lvm_core.contracts.layout.default_tracking_uri`); `MLFLOW_TRACKING_URI` points it at a server instead.

Modules: `setup` (quiet MLflow, tracking URI, experiment), `tags` (tag names and values),
`gate_outcomes`, `runs` (`TrainingRun`), `dead_runs`, `curves` (training-curve figure), `model_logging`
(pyfunc logging and registration), `references` (resolve and load registered models), `promotion`
(promote, record gates, rollback), `training_log` and `evaluation_log` (what a training and an evaluation
record). `pyfunc_model` is the file MLflow copies into every logged model.
"""
