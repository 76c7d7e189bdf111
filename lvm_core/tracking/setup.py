"""MLflow set-up: quiet and offline before mlflow is imported, the tracking/registry URI and the experiment.

Every other tracking module talks to MLflow configured the same way (telemetry off, no progress bars,
artifacts under the data dir): the environment is applied here, once, before the package's first
`import mlflow`; `mlflow_client` is a client for the configured URIs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Quiet and offline before mlflow is imported (the telemetry client is created at import time).
_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # Requirements are listed explicitly; never scan the working directory for a uv project.
    "MLFLOW_UV_AUTO_DETECT": "false",
    "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
}
for _key, _value in _QUIET_ENV.items():
    os.environ.setdefault(_key, _value)

import mlflow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from lvm_core.contracts.layout import default_tracking_uri  # noqa: E402
from lvm_core.tracking.auth import load_secret_files, require_registry_account  # noqa: E402

# A registry password given as MLFLOW_TRACKING_PASSWORD_FILE (a mounted secret) where MLflow's client reads it.
load_secret_files()

DEFAULT_EXPERIMENT = "lvm"
# A user's choice of server. MLflow's setters also export what they are given to these variables (for
# subprocesses); left there, the first data dir configured would pin every later one in this process and in
# every process it starts, so `configure_tracking` puts back what the user had.
REGISTRY_URI_ENV = "MLFLOW_REGISTRY_URI"
URI_ENVS = ("MLFLOW_TRACKING_URI", REGISTRY_URI_ENV)


def quiet_mlflow() -> None:
    """Offline, no telemetry, no progress bars, INFO chatter off (re-applied if mlflow was imported first)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow.telemetry.client import get_telemetry_client, set_telemetry_client

        if get_telemetry_client() is not None:
            set_telemetry_client()  # type: ignore[no-untyped-call]  # re-reads MLFLOW_DISABLE_TELEMETRY and drops the client
    except ImportError:  # pragma: no cover - telemetry module layout differs between versions
        pass
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)


def _is_remote(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in {"http", "https", "databricks", "databricks-uc"}


def configure_tracking(data_dir: Path, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow tracking and registry at the data dir's SQLite DB (or `MLFLOW_TRACKING_URI`).

    Creates the experiment if needed, with its artifacts under `<data_dir>/mlartifacts` for local
    stores (MLflow's default would be `./mlruns` in whatever folder the process runs in), makes it the
    active experiment, and returns the tracking URI.
    """
    quiet_mlflow()
    data_dir = Path(data_dir)
    uri = default_tracking_uri(data_dir)
    require_registry_account(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    users = {name: os.environ.get(name) for name in URI_ENVS}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(users[REGISTRY_URI_ENV] or uri)
    _restore(users)
    experiment_id = _experiment_id(MlflowClient(), experiment, None if _is_remote(uri) else data_dir)
    mlflow.set_experiment(experiment_id=experiment_id)
    return uri


def _restore(env: dict[str, str | None]) -> None:
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _experiment_id(client: MlflowClient, experiment: str, local_data_dir: Path | None) -> str:
    """The experiment's id: created (artifacts under the local data dir) or restored when needed."""
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if local_data_dir is not None:
        art = (local_data_dir.resolve() / "mlartifacts")
        art.mkdir(parents=True, exist_ok=True)
        location = art.as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except MlflowException:  # created concurrently by another process
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


def mlflow_client() -> MlflowClient:
    """A client for the configured tracking and registry URIs (with an account, in production)."""
    require_registry_account(mlflow.get_tracking_uri())
    return MlflowClient()


def is_not_found(exc: MlflowException) -> bool:
    """Whether an MLflow error means "no such model/version/run" (stores word it differently)."""
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()
