"""Logging a trained model into a run as an MLflow pyfunc model (from code) and registering it as `challenger`.

The registered form of a model is a contract with every later reader (the platform's loader, `mlflow models
serve`, older and newer releases): a folder of plain files inside a "models from code" pyfunc model with a
tensor signature and pinned requirements, never a pickle.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from lvm_core.contracts.errors import RegistryError
from lvm_core.contracts.gates import failed_gates, gate_outcomes
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.models.loader import PYFUNC_ARTIFACT_KEY, config_dict, save_model_dir
from lvm_core.runtime.faults import crash_point
from lvm_core.tracking.gate_outcomes import gate_outcome_tags
from lvm_core.tracking.setup import is_not_found, mlflow_client
from lvm_core.tracking.tags import (
    ALIAS_CHALLENGER,
    RUN_TAGS_COPIED_TO_VERSION,
    TAG_ARCH,
    TAG_ENCODER,
    fingerprint_tags,
    tag_value,
)

if TYPE_CHECKING:
    import torch

_log = logging.getLogger(__name__)

MODEL_ARTIFACT_NAME = "model"  # the MLflow model's name inside the run
_PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


@dataclasses.dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version: `uri` is `models:/<name>/<version>`, `model_uri` the logged model."""

    name: str
    version: int
    run_id: str | None
    uri: str
    model_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "torch", "safetensors", "numpy", "pydantic"):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:  # pragma: no cover
            reqs.append(dist)
    return reqs


def _lvm_platform_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lvm-platform")
    except PackageNotFoundError:  # running from a source tree
        from lvm_core import __version__

        return __version__


def _signature(ctx: int, dim: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(ctx), int(dim)))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(dim)))]),
    )


def log_and_register_model(
    model: torch.nn.Module,
    model_config: Any,
    fingerprint: EncoderFingerprint,
    registered_name: str,
    signature_ctx: int | None = None,
    signature_dim: int | None = None,
    tags: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    gate_report: Any = None,
    baselines_dir: Path | None = None,
    description: str | None = None,
) -> ModelVersionInfo:
    """Log the model into a run as an MLflow pyfunc model (from code) and register a new version.

    The version gets tags (encoder fingerprint id/model/dim, arch, snapshot id, split hash, gate summary,
    plus `tags`) and the alias `challenger`. `run_id` defaults to the active run. Nothing is pickled.
    """
    config = config_dict(model_config)
    ctx, dim = _signature_shape(config, fingerprint, signature_ctx, signature_dim)
    run_id = _run_id(run_id)
    client = mlflow_client()
    run = client.get_run(run_id)
    version_tags = _version_tags(config, fingerprint, run.data.tags, gate_report, tags)
    info = _log_pyfunc_model(model, config, fingerprint, run, baselines_dir, ctx, dim)
    _ensure_registered_model(registered_name, description)
    mv = client.create_model_version(
        registered_name, source=info.model_uri, run_id=run_id, tags=version_tags, model_id=info.model_id
    )
    version = int(mv.version)
    crash_point("register")
    client.set_registered_model_alias(registered_name, ALIAS_CHALLENGER, str(version))
    _log.info("registered %s version %s (challenger)", registered_name, version)
    return ModelVersionInfo(
        name=registered_name,
        version=version,
        run_id=run_id,
        uri=f"models:/{registered_name}/{version}",
        model_uri=info.model_uri,
    )


def _signature_shape(config: dict[str, Any], fingerprint: EncoderFingerprint,
                     signature_ctx: int | None, signature_dim: int | None) -> tuple[int, int]:
    """(context length, dim) of the logged signature; they must agree with the config and the encoder."""
    ctx = int(signature_ctx if signature_ctx is not None else config.get("context_len", 0))
    dim = int(signature_dim if signature_dim is not None else config.get("dim", fingerprint.dim))
    if ctx <= 0:
        raise ValueError("signature_ctx is required when the model config has no context_len")
    if dim != fingerprint.dim or ("dim" in config and int(config["dim"]) != dim):
        raise ValueError(
            f"signature dim={dim}, model config dim={config.get('dim')} and encoder dim={fingerprint.dim} must agree"
        )
    return ctx, dim


def _run_id(run_id: str | None) -> str:
    if run_id is not None:
        return run_id
    active = mlflow.active_run()
    if active is None:
        raise RegistryError("log_and_register_model needs run_id or an active MLflow run (TrainingRun)")
    return cast(str, active.info.run_id)


def _version_tags(config: dict[str, Any], fingerprint: EncoderFingerprint, run_tags: Mapping[str, str],
                  gate_report: Any, tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Arch, encoder, the run's dataset tags, the gate summary (when given) and the caller's tags."""
    version_tags: dict[str, str] = {TAG_ARCH: str(config["arch"]), **fingerprint_tags(fingerprint)}
    for key in RUN_TAGS_COPIED_TO_VERSION:
        if key in run_tags:
            version_tags[key] = run_tags[key]
    if gate_report is not None:
        outcomes = gate_outcomes(gate_report)
        version_tags.update(gate_outcome_tags(outcomes, failed_gates(outcomes)))
    for k, v in (tags or {}).items():
        version_tags[str(k)] = tag_value(v)
    return version_tags


def _log_pyfunc_model(model: Any, config: dict[str, Any], fingerprint: EncoderFingerprint, run: Any,
                      baselines_dir: Path | None, ctx: int, dim: int) -> Any:
    """The model folder logged into `run` as a "models from code" pyfunc model; MLflow's ModelInfo."""
    from mlflow.models import Model

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="lvm-model-") as tmp:
        model_dir = save_model_dir(model, config, fingerprint, Path(tmp) / PYFUNC_ARTIFACT_KEY, baselines_dir)
        metadata = {
            "lvm_platform": _lvm_platform_version(),
            "lvm_loader": "lvm_core.tracking.references.load_registered_model",
            "arch": str(config["arch"]),
            "encoder_fingerprint": fingerprint.id,
        }
        if (active := mlflow.active_run()) is None or active.info.run_id != run_id:
            # the logged model's experiment is resolved from the active experiment when no run is active
            mlflow.set_experiment(experiment_id=run.info.experiment_id)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            warnings.filterwarnings("ignore", message=".*type hint.*")
            return Model.log(
                artifact_path=None,
                name=MODEL_ARTIFACT_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                python_model=str(_PYFUNC_CODE),
                artifacts={PYFUNC_ARTIFACT_KEY: str(model_dir)},
                signature=_signature(ctx, dim),
                pip_requirements=_pip_requirements(),
                metadata=metadata,
                tags={TAG_ARCH: str(config["arch"]), TAG_ENCODER: fingerprint.id},
            )


def _ensure_registered_model(registered_name: str, description: str | None) -> None:
    """Create the registered model on its first version (tolerating another process creating it too)."""
    client = mlflow_client()
    try:
        client.get_registered_model(registered_name)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        try:
            client.create_registered_model(
                registered_name,
                description=description or "Language Vector Model: next-chunk embedding predictor",
            )
        except MlflowException as create_exc:  # created concurrently
            if "already exists" not in str(create_exc).lower():
                raise
