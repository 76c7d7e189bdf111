"""MLflow "models from code" entry point for registered LVM models.

MLflow copies this file into every logged model and executes it to obtain the pyfunc model, so a
registered version can be served with `mlflow models serve` or loaded with `mlflow.pyfunc.load_model`
without unpickling anything: the weights come from `weights.safetensors` and the structure is rebuilt
from `config.json` through `lvm_core.models.build_model` (the `lvm-platform` package must be installed
where the model is served). The platform's own path, `lvm_core.registry.load_registered_model`, reads
the same files and does not need this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

# Name of the pyfunc artifact that holds weights.safetensors, config.json and encoder.json.
ARTIFACT_KEY = "lvm"


class LVMPyfuncModel(PythonModel):
    """Pyfunc wrapper: context vectors (B, ctx, D) or flattened (B, ctx*D) float32 -> predictions (B, D)."""

    def load_context(self, context: Any) -> None:
        from lvm_core.registry import load_model_dir

        self._model = load_model_dir(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        if isinstance(model_input, dict) and len(model_input) == 1:  # a named tensor input
            model_input = next(iter(model_input.values()))
        return self._model.predict(np.asarray(model_input))


mlflow.models.set_model(LVMPyfuncModel())
