"""MLflow tracking, model registry, promotion and rollback for LVM models.

Why this package exists: a trained model is only worth something beside its data, its encoder and its
gates. Every training run records its parameters, per-epoch metrics, the dataset manifest (as an MLflow
dataset input with the manifest's digest), gate results, plots and a model card. Models are registered
as a directory of plain files (`weights.safetensors`, `config.json`, `encoder.json`, optional
`baselines/`) inside an MLflow "models from code" pyfunc model, so neither registering nor loading a
model ever pickles or unpickles Python objects. Aliases carry the life cycle: `challenger` for a new
version, `champion` only when every gate passed (or when forced, which is recorded), and rollback moves
`champion` back along the recorded history.

Works offline with the default tracking URI, a SQLite file in the data dir
(`lvm_core.contracts.default_tracking_uri`); `MLFLOW_TRACKING_URI` points it at a server instead.

Modules: `setup` (quiet MLflow, tracking URI, experiment), `tags` (tag names and values),
`gate_outcomes`, `runs` (`TrainingRun`), `dead_runs`, `curves` (training-curve figure), `model_logging`
(pyfunc logging and registration), `references` (resolve and load registered models), `promotion`
(promote, record gates, rollback). `pyfunc_model` is the file MLflow copies into every logged model.
"""

# setup first: it quiets MLflow before anything imports it.
from lvm_core.tracking.setup import DEFAULT_EXPERIMENT, configure_tracking  # isort: skip

from lvm_core.contracts import ModelNotFoundError, RegistryError
from lvm_core.models.loader import LoadedModel, load_model_dir, save_model_dir
from lvm_core.tracking.curves import plot_training_curves
from lvm_core.tracking.dead_runs import reap_dead_runs
from lvm_core.tracking.gate_outcomes import gate_outcomes, recorded_gate_outcomes
from lvm_core.tracking.model_logging import MODEL_ARTIFACT_NAME, ModelVersionInfo, log_and_register_model
from lvm_core.tracking.promotion import PromotionError, PromotionResult, promote, record_gate_outcomes, rollback
from lvm_core.tracking.references import (
    current_champion,
    list_versions,
    load_registered_model,
    parse_reference,
    require_registered_model,
    resolve_version,
    training_dataset,
)
from lvm_core.tracking.runs import TrainingRun
from lvm_core.tracking.tags import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    TAG_ARCH,
    TAG_CHAMPION_HISTORY,
    TAG_DATASET_DIGEST,
    TAG_DATASET_DIR,
    TAG_DATASET_ID,
    TAG_ENCODER,
    TAG_ENCODER_DIM,
    TAG_ENCODER_MODEL,
    TAG_FAILED_GATES,
    TAG_FAILURE,
    TAG_FORCED,
    TAG_GATE_RESULTS,
    TAG_GATES_PASSED,
    TAG_INCOMPLETE,
    TAG_LAST_ROLLBACK,
    TAG_OWNER,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTED_AT,
    TAG_ROLLED_BACK_AT,
    TAG_SNAPSHOT,
    TAG_SPLIT_HASH,
    flatten_params,
)

__all__ = [
    "ALIAS_CHALLENGER",
    "ALIAS_CHAMPION",
    "DEFAULT_EXPERIMENT",
    "LoadedModel",
    "MODEL_ARTIFACT_NAME",
    "ModelNotFoundError",
    "ModelVersionInfo",
    "PromotionError",
    "PromotionResult",
    "RegistryError",
    "TAG_ARCH",
    "TAG_CHAMPION_HISTORY",
    "TAG_DATASET_DIGEST",
    "TAG_DATASET_DIR",
    "TAG_DATASET_ID",
    "TAG_ENCODER",
    "TAG_ENCODER_DIM",
    "TAG_ENCODER_MODEL",
    "TAG_FAILED_GATES",
    "TAG_FAILURE",
    "TAG_FORCED",
    "TAG_GATE_RESULTS",
    "TAG_GATES_PASSED",
    "TAG_INCOMPLETE",
    "TAG_LAST_ROLLBACK",
    "TAG_OWNER",
    "TAG_PREVIOUS_CHAMPION",
    "TAG_PROMOTED_AT",
    "TAG_ROLLED_BACK_AT",
    "TAG_SNAPSHOT",
    "TAG_SPLIT_HASH",
    "TrainingRun",
    "configure_tracking",
    "current_champion",
    "flatten_params",
    "gate_outcomes",
    "list_versions",
    "load_model_dir",
    "load_registered_model",
    "log_and_register_model",
    "parse_reference",
    "plot_training_curves",
    "promote",
    "reap_dead_runs",
    "record_gate_outcomes",
    "recorded_gate_outcomes",
    "require_registered_model",
    "resolve_version",
    "rollback",
    "save_model_dir",
    "training_dataset",
]
