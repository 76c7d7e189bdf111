"""Where `load_model_dir` lived before the registry moved to `lvm_core.tracking` (kept for registered models).

Every model registered before that move carries, inside its MLflow artifacts, a copy of the pyfunc entry
point of that time, which runs `from lvm_core.registry import load_model_dir` when the model is loaded
with `mlflow.pyfunc.load_model` or served with `mlflow models serve`. This module keeps that import
working; new code imports `lvm_core.models.loader`.
"""

from lvm_core.models.loader import load_model_dir

__all__ = ["load_model_dir"]
