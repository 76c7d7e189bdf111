"""MLflow tracking, model registry, promotion and rollback for LVM models.

Why this module exists: a trained model is only worth something beside its data, its encoder and its
gates. Every training run records its parameters, per-epoch metrics, the dataset manifest (as an MLflow
dataset input with the manifest's digest), gate results, plots and a model card. Models are registered
as a directory of plain files (`weights.safetensors`, `config.json`, `encoder.json`, optional
`baselines/`) inside an MLflow "models from code" pyfunc model, so neither registering nor loading a
model ever pickles or unpickles Python objects. Aliases carry the life cycle: `challenger` for a new
version, `champion` only when every gate passed (or when forced, which is recorded), and rollback moves
`champion` back along the recorded history.

Works offline with the default tracking URI, a SQLite file in the data dir
(`lvm_core.contracts.default_tracking_uri`); `MLFLOW_TRACKING_URI` points it at a server instead.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
import numpy as np  # noqa: E402
from mlflow.data.meta_dataset import MetaDataset  # noqa: E402
from mlflow.entities import DatasetInput, InputTag, Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from lvm_core.io import storage  # noqa: E402
from lvm_core.io.storage import to_plain as _plain  # noqa: E402
from lvm_core.contracts import DataContractError, ModelNotFoundError, RegistryError, default_tracking_uri  # noqa: E402
from lvm_core.models.loader import (  # noqa: E402
    PYFUNC_ARTIFACT_KEY,
    LoadedModel,
    config_dict,
    load_model_dir,
    save_model_dir,
)
from lvm_core.data.embedding import EncoderFingerprint  # noqa: E402
from lvm_core.runtime.faults import crash_point  # noqa: E402
from lvm_core.runtime.liveness import Owner  # noqa: E402

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALIAS_CHALLENGER",
    "ALIAS_CHAMPION",
    "DEFAULT_EXPERIMENT",
    "LoadedModel",
    "ModelNotFoundError",
    "ModelVersionInfo",
    "PromotionError",
    "PromotionResult",
    "RegistryError",
    "TrainingRun",
    "configure_tracking",
    "current_champion",
    "flatten_params",
    "gate_outcomes",
    "list_versions",
    "load_model_dir",
    "load_registered_model",
    "log_and_register_model",
    "plot_training_curves",
    "promote",
    "rollback",
    "save_model_dir",
    "training_dataset",
]

_log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "lvm"
ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"

MODEL_ARTIFACT_NAME = "model"  # the MLflow model's name inside the run
_PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")

# Tag keys on runs and model versions.
TAG_ARCH = "arch"
TAG_SNAPSHOT = "snapshot_id"
TAG_DATASET_ID = "dataset_id"
TAG_SPLIT_HASH = "split_hash"
TAG_ENCODER = "encoder_fingerprint"
TAG_ENCODER_MODEL = "encoder_model"
TAG_ENCODER_DIM = "encoder_dim"
TAG_DATASET_DIGEST = "dataset_manifest_sha256"
TAG_DATASET_DIR = "dataset_dir"
TAG_FAILURE = "failure_reason"
TAG_GATES_PASSED = "gates_passed"
TAG_FAILED_GATES = "failed_gates"
TAG_GATE_RESULTS = "gate_results"
TAG_PREVIOUS_CHAMPION = "previous_champion"
TAG_CHAMPION_HISTORY = "champion_history"  # on the registered model: JSON list of versions, newest last
TAG_LAST_ROLLBACK = "last_rollback"
TAG_FORCED = "promotion_forced"
TAG_PROMOTED_AT = "promoted_at"
TAG_ROLLED_BACK_AT = "rolled_back_at"
TAG_OWNER = "lvm.owner"  # on a run: JSON of the process that runs it (host, pid, start time)
TAG_INCOMPLETE = "incomplete"  # on a version: its training run was killed before it finished
_RUN_TAGS_COPIED_TO_VERSION = (TAG_SNAPSHOT, TAG_DATASET_ID, TAG_SPLIT_HASH, TAG_DATASET_DIGEST)

_MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_VALUE = 5000  # below every store's limit for run and registry tags
_MAX_DATASET_DIGEST = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE
_MAX_HISTORY = 200


# --- errors and result types -----------------------------------------------------------------------


class PromotionError(RegistryError):
    """A promotion or rollback cannot be decided (no gate results, nothing to roll back to)."""


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


@dataclasses.dataclass(frozen=True)
class PromotionResult:
    """What a promote/rollback did. `champion` is the champion version afterwards."""

    name: str
    version: int
    action: str  # "promoted", "already_champion", "rejected", "rolled_back"
    promoted: bool
    champion: int | None
    previous_champion: int | None = None
    failed_gates: tuple[str, ...] = ()
    forced: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failed_gates"] = list(self.failed_gates)
        return d


# --- configuration ---------------------------------------------------------------------------------


def _quiet_mlflow() -> None:
    """Offline, no telemetry, no progress bars, INFO chatter off (re-applied if mlflow was imported first)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow.telemetry.client import get_telemetry_client, set_telemetry_client

        if get_telemetry_client() is not None:
            set_telemetry_client()  # re-reads MLFLOW_DISABLE_TELEMETRY and drops the client
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
    _quiet_mlflow()
    data_dir = Path(data_dir)
    uri = default_tracking_uri(data_dir)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(os.environ.get("MLFLOW_REGISTRY_URI") or uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if not _is_remote(uri):
            art = (data_dir.resolve() / "mlartifacts")
            art.mkdir(parents=True, exist_ok=True)
            location = art.as_uri()
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # created concurrently by another process
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            experiment_id = exp.experiment_id
    else:
        experiment_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    return uri


def _client() -> MlflowClient:
    return MlflowClient()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- parameters and gates --------------------------------------------------------------------------


def flatten_params(params: Any, prefix: str = "") -> dict[str, str]:
    """Nested configs as flat `a.b.c -> str` MLflow params; lists become JSON, long values are cut."""
    out: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
            return
        if not key:
            raise TypeError(f"params must be a mapping or config object, got {type(params).__name__}")
        if isinstance(value, (list, tuple, Mapping)):
            text = json.dumps(value, sort_keys=True, default=str)
        else:
            text = str(value)
        out[key] = _truncate(text, _MAX_PARAM_VALUE)

    walk(_plain(params), prefix)
    return out


def gate_outcomes(report: Any) -> dict[str, dict[str, Any]]:
    """Normalise gate results to `name -> {passed, value, threshold}`.

    Accepts a `lvm_core.contracts.gates.GateReport`, its `to_manifest()` dict, `{"results": [...]}`,
    `name -> bool`, or stage-nested dicts (`{"data": {...}, "model": {...}}` -> `data.<gate>`).
    """
    if report is None:
        raise ValueError("gate report is None")
    if hasattr(report, "results") and not isinstance(report, Mapping):
        report = {"results": [r.to_dict() if hasattr(r, "to_dict") else r for r in report.results]}
    if not isinstance(report, Mapping):
        raise ValueError(f"gate report must be a GateReport or a dict, got {type(report).__name__}")
    report = _plain(report)
    if isinstance(report.get("gates"), Mapping):  # a gates/<stage>.json artifact or a dataset manifest
        report = report["gates"]
    if not report or not ({k for k in report if k not in ("stage", "docs_path")}):
        raise ValueError("gate report contains no gate results")
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, entry: Any) -> None:
        if isinstance(entry, bool):
            out[name] = {"passed": entry, "value": None, "threshold": None}
        elif isinstance(entry, Mapping) and "passed" in entry:
            out[name or "overall"] = {
                "passed": bool(entry["passed"]),
                "value": entry.get("value"),
                "threshold": entry.get("threshold"),
            }
        elif isinstance(entry, Mapping) and entry:
            for k, v in entry.items():
                if k in ("stage", "docs_path", "passed", "failed"):
                    continue
                add(f"{name}.{k}" if name else str(k), v)
        elif isinstance(entry, list):
            for item in entry:
                if not isinstance(item, Mapping) or "name" not in item or "passed" not in item:
                    raise ValueError(f"gate result entry {item!r} needs 'name' and 'passed'")
                add(f"{name}.{item['name']}" if name else str(item["name"]), item)
        else:
            raise ValueError(f"gate {name!r}: cannot read a pass/fail result from {entry!r}")

    if "results" in report and isinstance(report["results"], list):
        add("", report["results"])
    else:
        add("", {k: v for k, v in report.items() if k not in ("stage", "docs_path")})
    if not out:
        raise ValueError("gate report contains no gate results")
    return out


def _failed(outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(name for name, o in outcomes.items() if not o["passed"])


# --- runs ------------------------------------------------------------------------------------------


class _ManifestDataset(MetaDataset):
    """A built dataset as MLflow sees it: source = its folder, digest = the manifest's sha256, profile = counts."""

    def __init__(self, source: Any, name: str, digest: str, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> Any:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile, sort_keys=True, default=str)
        return config


class TrainingRun:
    """One MLflow run of the training flow; a context manager that ends the run FAILED on errors.

    Usage::

        configure_tracking(data_dir)
        with TrainingRun(arch="amn", snapshot_id=sid, encoder_fingerprint=fp, split_hash=h) as run:
            run.log_params(train_config)
            run.log_dataset_manifest(dataset_dir / "manifest.json")
            for epoch ...: run.log_epoch({"train_loss": l, "val_cosine": c, "lr": lr}, step=epoch)
            run.log_gate_results(report)
            info = run.log_and_register_model(model, model_config, fp, "lvm-amn")

    An exception inside the block, or `mark_failed(reason)` (e.g. divergence), ends the run with status
    FAILED and a `failure_reason` tag; Ctrl-C ends it KILLED.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        arch: str | None = None,
        snapshot_id: str | None = None,
        encoder_fingerprint: EncoderFingerprint | str | None = None,
        split_hash: str | None = None,
        tags: Mapping[str, Any] | None = None,
        nested: bool | None = None,
    ):
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.experiment = experiment
        self.run_name = run_name
        self.nested = nested
        run_tags: dict[str, str] = {}
        if arch:
            run_tags[TAG_ARCH] = str(arch)
        if snapshot_id:
            run_tags[TAG_SNAPSHOT] = str(snapshot_id)
        if split_hash:
            run_tags[TAG_SPLIT_HASH] = str(split_hash)
        if isinstance(encoder_fingerprint, EncoderFingerprint):
            run_tags.update(_fingerprint_tags(encoder_fingerprint))
        elif encoder_fingerprint:
            run_tags[TAG_ENCODER] = str(encoder_fingerprint)
        for k, v in (tags or {}).items():
            run_tags[str(k)] = _tag_value(v)
        self._tags = run_tags
        self._run_id: str | None = None
        self._failure: str | None = None
        self._ended = False

    # life cycle

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            raise RegistryError("the training run has not been started (use `with TrainingRun(...) as run:`)")
        return self._run_id

    def start(self) -> TrainingRun:
        """Start the MLflow run (done by `with`)."""
        if self.data_dir is not None:
            configure_tracking(self.data_dir, self.experiment)
        else:
            _quiet_mlflow()
        exp = MlflowClient().get_experiment_by_name(self.experiment)
        if exp is None:
            raise RegistryError(
                f"MLflow experiment {self.experiment!r} does not exist at {mlflow.get_tracking_uri()}; "
                "call configure_tracking(data_dir) first or pass data_dir"
            )
        for line in reap_dead_runs(exp.experiment_id):
            _log.warning("%s", line)
        nested = self.nested if self.nested is not None else mlflow.active_run() is not None
        tags = {**self._tags, TAG_OWNER: json.dumps(Owner.this_process().to_dict())}
        run = mlflow.start_run(
            experiment_id=exp.experiment_id, run_name=self.run_name, tags=tags, nested=nested
        )
        self._run_id = run.info.run_id
        return self

    def end(self, status: str = "FINISHED") -> None:
        """End the run with `status` (FINISHED, FAILED, KILLED); idempotent."""
        if self._ended or self._run_id is None:
            return
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self._run_id:
            mlflow.end_run(status=status)
        else:
            _client().set_terminated(self._run_id, status=status)
        self._ended = True

    def __enter__(self) -> TrainingRun:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is None:
            self.end("FAILED" if self._failure else "FINISHED")
            return False
        if isinstance(exc, KeyboardInterrupt) or exc_type.__name__ == "TerminationSignal":  # Ctrl-C, SIGTERM
            self._set_failure(f"interrupted ({'SIGINT' if isinstance(exc, KeyboardInterrupt) else 'SIGTERM'})")
            self.end("KILLED")
        else:
            self._set_failure(f"{exc_type.__name__}: {exc}")
            self.end("FAILED")
        return False

    def _set_failure(self, reason: str) -> None:
        self._failure = reason
        try:
            _client().set_tag(self.run_id, TAG_FAILURE, _truncate(reason, _MAX_TAG_VALUE))
        except MlflowException as exc:  # never hide the original error behind a tracking error
            _log.warning("could not tag run %s as failed: %s", self._run_id, exc)

    def mark_failed(self, reason: str) -> None:
        """Record a failure without an exception (divergence, failed gate): the run ends FAILED."""
        self._set_failure(reason)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    # logging

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        client = _client()
        for k, v in tags.items():
            client.set_tag(self.run_id, str(k), _tag_value(v))

    def log_params(self, params: Any, prefix: str = "") -> dict[str, str]:
        """Log a (nested) config as flat params; returns what was logged."""
        flat = flatten_params(params, prefix)
        items = [Param(k, v) for k, v in flat.items()]
        client = _client()
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i : i + 100])
        return flat

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics at `step`; a non-numeric value is an error naming its key."""
        ts = int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)
        items = []
        for key, value in metrics.items():
            if value is None:
                continue
            if isinstance(value, (bool, np.bool_)):
                value = float(value)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}: {value!r}") from None
            items.append(Metric(str(key), number, ts, int(step or 0)))
        client = _client()
        for i in range(0, len(items), 1000):
            client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        """Per-epoch metrics (train_loss, val_cosine, lr, ...) at step = epoch."""
        self.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a file or a folder (its contents under `artifact_path`)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        client = _client()
        if path.is_dir():
            client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        """Log a JSON-serialisable object (numpy values allowed) as `artifact_file`."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            storage.write_json(local, obj)
            self.log_artifact(local, _parent(artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        _client().log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure, or an already written image file, as `artifact_file`."""
        if isinstance(figure, (str, Path)):
            src = Path(figure)
            if not src.is_file():
                raise FileNotFoundError(f"figure file does not exist: {src}")
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / Path(artifact_file).name
                shutil.copyfile(src, local)
                self.log_artifact(local, _parent(artifact_file))
        else:
            _client().log_figure(self.run_id, figure, artifact_file)

    def log_model_card(self, markdown: str, artifact_file: str = "model_card.md") -> None:
        self.log_text(markdown, artifact_file)

    def log_dataset_manifest(
        self, manifest_path: Path, name: str | None = None, context: str = "training"
    ) -> dict[str, str]:
        """Record the dataset as an MLflow dataset input (digest = sha256 of manifest.json) and log the manifest.

        The input's source is the dataset folder, its profile the manifest's counts; the full digest is
        also an input tag and a run tag (MLflow stores at most 36 characters as the dataset digest).
        """
        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise FileNotFoundError(f"dataset manifest not found: {manifest_path}")
        try:
            manifest = storage.read_json(manifest_path)
        except json.JSONDecodeError as exc:
            raise DataContractError(f"{manifest_path}: not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise DataContractError(f"{manifest_path}: a manifest must be a JSON object, got {type(manifest).__name__}")
        digest = storage.file_digest(manifest_path)
        dataset_dir = manifest_path.resolve().parent
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        with warnings.catch_warnings():  # a local path matches the same source class twice
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
            source = resolve_dataset_source(str(dataset_dir))
        ds_name = name or str(manifest.get("snapshot_id") or dataset_dir.name)
        counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
        dataset = _ManifestDataset(source, ds_name, digest[:_MAX_DATASET_DIGEST], counts)
        tags = [
            InputTag("mlflow.data.context", context),
            InputTag(TAG_DATASET_DIGEST, digest),
        ]
        client = _client()
        client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])
        client.log_artifact(self.run_id, str(manifest_path), "dataset")
        run_tags = {TAG_DATASET_DIGEST: digest, TAG_DATASET_DIR: str(dataset_dir)}
        existing = client.get_run(self.run_id).data.tags
        snapshot = manifest.get("snapshot_id")
        if snapshot and TAG_SNAPSHOT not in existing:
            run_tags[TAG_SNAPSHOT] = str(snapshot)
        if manifest.get("dataset_id") and TAG_DATASET_ID not in existing:
            run_tags[TAG_DATASET_ID] = str(manifest["dataset_id"])
        split_hash = (manifest.get("splits") or {}).get("content_hash") if isinstance(manifest.get("splits"), dict) else None
        if split_hash and TAG_SPLIT_HASH not in existing:
            run_tags[TAG_SPLIT_HASH] = str(split_hash)
        self.set_tags(run_tags)
        return {"name": ds_name, "digest": digest, "source": str(dataset_dir)}

    def log_gate_results(self, report: Any, stage: str | None = None) -> dict[str, dict[str, Any]]:
        """Log gate results as `gates/<stage>.json`, pass/fail tags and `gate.<name>` metrics for numbers."""
        stage = stage or (getattr(report, "stage", None) if not isinstance(report, Mapping) else report.get("stage"))
        stage = str(stage or "model")
        outcomes = gate_outcomes(report)
        failed = _failed(outcomes)
        self.log_json({"stage": stage, "passed": not failed, "failed": failed, "gates": outcomes}, f"gates/{stage}.json")
        self.set_tags({f"gates.{stage}.passed": str(not failed).lower(), f"gates.{stage}.failed": ",".join(failed)})
        numeric = {}
        for gate, o in outcomes.items():
            v = o.get("value")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                numeric[f"gate.{gate}"] = float(v)
        if numeric:
            self.log_metrics(numeric)
        return outcomes

    def log_and_register_model(self, model: Any, model_config: Any, fingerprint: EncoderFingerprint,
                               registered_name: str, **kwargs: Any) -> ModelVersionInfo:
        """`log_and_register_model` on this run."""
        return log_and_register_model(model, model_config, fingerprint, registered_name, run_id=self.run_id, **kwargs)


def reap_dead_runs(experiment_id: str) -> list[str]:
    """End KILLED the runs a dead process left RUNNING; mark the model versions they registered incomplete.

    Only a process on this host can be proven dead (its pid is gone or reused); runs of other hosts are
    left alone. Returns one line per run reaped.
    """
    client = _client()
    done: list[str] = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        try:
            owner = Owner.from_dict(json.loads(run.data.tags[TAG_OWNER]))
        except (KeyError, ValueError, TypeError):
            continue  # no owner record: started by another tool, or before runs recorded their owner
        why = owner.gone(stale_after=math.inf)
        if why is None:
            continue
        client.set_tag(run.info.run_id, TAG_FAILURE, _truncate(f"killed: {why}", _MAX_TAG_VALUE))
        client.set_terminated(run.info.run_id, status="KILLED")
        line = f"MLflow run {run.info.run_id} ({run.info.run_name}) ended KILLED: {why}"
        for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            client.set_model_version_tag(mv.name, mv.version, TAG_INCOMPLETE,
                                         f"training run {run.info.run_id} was killed before it finished")
            aliases = client.get_registered_model(mv.name).aliases or {}
            if str(aliases.get(ALIAS_CHALLENGER)) == str(mv.version):
                client.delete_registered_model_alias(mv.name, ALIAS_CHALLENGER)
            line += f"; {mv.name} v{mv.version} marked incomplete"
        done.append(line)
    return done


def _parent(artifact_file: str) -> str | None:
    parent = str(Path(artifact_file).parent)
    return None if parent in ("", ".") else parent


def _tag_value(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value)
    return _truncate(text, _MAX_TAG_VALUE)


def _fingerprint_tags(fp: EncoderFingerprint) -> dict[str, str]:
    return {TAG_ENCODER: fp.id, TAG_ENCODER_MODEL: fp.model_name, TAG_ENCODER_DIM: str(fp.dim)}


# --- plots -----------------------------------------------------------------------------------------


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: Path, title: str | None = None) -> Path:
    """Train/val loss, val cosine and learning rate per epoch as one PNG (matplotlib Agg).

    `history` holds one dict per epoch with any of `epoch`, `train_loss`, `val_loss`, `val_cosine`, `lr`;
    panels without data are left out. `baseline_*` keys (e.g. `baseline_val_cosine`) of the last entry
    are drawn as horizontal lines on the cosine panel.
    """
    if not history:
        raise ValueError("plot_training_curves: history is empty")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [h.get("epoch", i) for i, h in enumerate(history)]

    def series(key: str) -> list[float] | None:
        values = [h.get(key) for h in history]
        if all(v is None for v in values):
            return None
        return [float("nan") if v is None else float(v) for v in values]

    panels: list[tuple[str, list[tuple[str, list[float]]], bool]] = []
    losses = [(k, s) for k in ("train_loss", "val_loss") if (s := series(k)) is not None]
    if losses:
        panels.append(("loss", losses, False))
    cos = [(k, s) for k in ("val_cosine", "train_cosine", "ood_cosine") if (s := series(k)) is not None]
    if cos:
        panels.append(("cosine", cos, False))
    lr = series("lr")
    if lr is not None:
        panels.append(("learning rate", [("lr", lr)], True))
    if not panels:
        raise ValueError(
            f"plot_training_curves: no plottable keys in history (keys: {sorted(history[0])}); "
            "expected train_loss, val_loss, val_cosine or lr"
        )
    fig = Figure(figsize=(4.2 * len(panels), 3.4), constrained_layout=True)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, lines, log_scale) in zip(axes, panels):
        for key, values in lines:
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
        if label == "cosine":
            for key, value in history[-1].items():
                if key.startswith("baseline_") and isinstance(value, (int, float)):
                    ax.axhline(float(value), linestyle="--", linewidth=1, color="grey")
                    ax.annotate(key[len("baseline_"):], (epochs[0], float(value)), fontsize=7, color="grey")
        if log_scale and all(v > 0 for v in lines[0][1] if not math.isnan(v)):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with storage.atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110)
    return path


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
    from mlflow.models import Model

    config = config_dict(model_config)
    ctx = int(signature_ctx if signature_ctx is not None else config.get("context_len", 0))
    dim = int(signature_dim if signature_dim is not None else config.get("dim", fingerprint.dim))
    if ctx <= 0:
        raise ValueError("signature_ctx is required when the model config has no context_len")
    if dim != fingerprint.dim or ("dim" in config and int(config["dim"]) != dim):
        raise ValueError(
            f"signature dim={dim}, model config dim={config.get('dim')} and encoder dim={fingerprint.dim} must agree"
        )
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RegistryError("log_and_register_model needs run_id or an active MLflow run (TrainingRun)")
        run_id = active.info.run_id
    client = _client()
    run = client.get_run(run_id)

    version_tags: dict[str, str] = {TAG_ARCH: str(config["arch"]), **_fingerprint_tags(fingerprint)}
    for key in _RUN_TAGS_COPIED_TO_VERSION:
        if key in run.data.tags:
            version_tags[key] = run.data.tags[key]
    if gate_report is not None:
        outcomes = gate_outcomes(gate_report)
        failed = _failed(outcomes)
        version_tags[TAG_GATES_PASSED] = str(not failed).lower()
        version_tags[TAG_GATE_RESULTS] = _tag_value({k: v["passed"] for k, v in outcomes.items()})
        if failed:
            version_tags[TAG_FAILED_GATES] = ",".join(failed)
    for k, v in (tags or {}).items():
        version_tags[str(k)] = _tag_value(v)

    with tempfile.TemporaryDirectory(prefix="lvm-model-") as tmp:
        model_dir = save_model_dir(model, config, fingerprint, Path(tmp) / PYFUNC_ARTIFACT_KEY, baselines_dir)
        metadata = {
            "lvm_platform": _lvm_platform_version(),
            "lvm_loader": "lvm_core.tracking.load_registered_model",
            "arch": str(config["arch"]),
            "encoder_fingerprint": fingerprint.id,
        }
        if mlflow.active_run() is None or mlflow.active_run().info.run_id != run_id:
            # the logged model's experiment is resolved from the active experiment when no run is active
            mlflow.set_experiment(experiment_id=run.info.experiment_id)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*")
            warnings.filterwarnings("ignore", message=".*type hint.*")
            info = Model.log(
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
    try:
        client.get_registered_model(registered_name)
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
        try:
            client.create_registered_model(
                registered_name,
                description=description or "Language Vector Model: next-chunk embedding predictor",
            )
        except MlflowException as create_exc:  # created concurrently
            if "already exists" not in str(create_exc).lower():
                raise
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


def _is_not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def require_registered_model(name: str) -> Any:
    try:
        return _client().get_registered_model(name)
    except MlflowException as exc:
        if _is_not_found(exc):
            raise ModelNotFoundError(
                f"no registered model named {name!r} at {mlflow.get_registry_uri()}"
            ) from None
        raise


def _version_numbers(name: str) -> list[int]:
    esc = name.replace("'", "\\'")
    return sorted(int(mv.version) for mv in _client().search_model_versions(f"name='{esc}'"))


def resolve_version(name: str, ref: str | int) -> Any:
    """A ModelVersion for a version number, 'latest' or an alias; ModelNotFoundError otherwise."""
    rm = require_registered_model(name)
    client = _client()
    ref = str(ref)
    if ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException as exc:
            if _is_not_found(exc):
                known = ", ".join(map(str, _version_numbers(name))) or "none"
                raise ModelNotFoundError(f"registered model {name!r} has no version {ref} (versions: {known})") from None
            raise
    if ref == "latest":
        numbers = _version_numbers(name)
        if not numbers:
            raise ModelNotFoundError(f"registered model {name!r} has no versions")
        return client.get_model_version(name, str(numbers[-1]))
    aliases = dict(rm.aliases or {})
    if ref not in aliases:
        known = ", ".join(f"{a}->v{v}" for a, v in sorted(aliases.items())) or "none"
        raise ModelNotFoundError(f"registered model {name!r} has no alias {ref!r} (aliases: {known})")
    return client.get_model_version(name, str(aliases[ref]))


def parse_reference(ref: str) -> tuple[str, str]:
    """`models:/name/3`, `models:/name@alias`, `name/3`, `name@alias`, `name` (= champion) -> (name, version-or-alias)."""
    body = ref[len("models:/"):] if ref.startswith("models:/") else ref
    body = body.strip("/")
    if not body:
        raise ModelNotFoundError(f"empty model reference {ref!r}")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return name, alias
    if "/" in body:
        name, version = body.rsplit("/", 1)
        if not (version.isdigit() or version == "latest"):
            raise ModelNotFoundError(
                f"{ref!r} is neither a local model folder nor a registered model reference "
                "(models:/<name>/<version>, models:/<name>@<alias>)"
            )
        return name, version
    return body, ALIAS_CHAMPION


def load_registered_model(
    uri_or_name_version: str | Path,
    expected_fingerprint: EncoderFingerprint | None = None,
    *,
    dst_dir: Path | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Load a model from the registry (`models:/lvm-amn@champion`, `models:/lvm-amn/3`) or a local folder.

    Downloads the version's files and rebuilds the module with `build_model` + safetensors; never
    unpickles. A bare name means its champion. With `expected_fingerprint`, a model trained on another
    encoder is refused (`FingerprintMismatchError`). The download goes to `dst_dir` if given (kept),
    otherwise to a temporary folder removed after loading.
    """
    ref = str(uri_or_name_version)
    local = Path(ref[len("file://"):] if ref.startswith("file://") else ref)
    if isinstance(uri_or_name_version, Path) or (not ref.startswith("models:/") and local.exists()):
        loaded = load_model_dir(local, device=device)
    else:
        name, which = parse_reference(ref)
        mv = resolve_version(name, which)
        version = int(mv.version)

        def fetch(target: Path) -> LoadedModel:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(target)
            )
            return load_model_dir(Path(path), device=device)

        if dst_dir is not None:
            Path(dst_dir).mkdir(parents=True, exist_ok=True)
            loaded = fetch(Path(dst_dir))
        else:
            with tempfile.TemporaryDirectory(prefix="lvm-load-") as tmp:
                loaded = fetch(Path(tmp))
                loaded.path = None
        loaded.name, loaded.version, loaded.run_id = name, version, mv.run_id
        loaded.tags = dict(mv.tags or {})
        loaded.source = f"models:/{name}/{version}"
        tagged = loaded.tags.get(TAG_ENCODER)
        if tagged and tagged != loaded.fingerprint.id:
            raise DataContractError(
                f"{loaded.describe()}: version tag {TAG_ENCODER}={tagged} disagrees with its encoder.json "
                f"({loaded.fingerprint.id}); the registry entry or the files were altered"
            )
    if expected_fingerprint is not None:
        loaded.check_fingerprint(expected_fingerprint)
    return loaded


def training_dataset(model: LoadedModel) -> tuple[str | None, str | None]:
    """(dataset folder, split hash) a registered model was trained on, from its training run's tags.

    The version's own split-hash tag wins over the run's. (None, None) for a model loaded from a folder:
    it has no training run to ask.
    """
    run_tags: dict[str, str] = {}
    if model.run_id:
        run_tags = dict(_client().get_run(model.run_id).data.tags)
    split_hash = (model.tags or {}).get(TAG_SPLIT_HASH) or run_tags.get(TAG_SPLIT_HASH)
    return run_tags.get(TAG_DATASET_DIR) or None, split_hash or None


# --- aliases, promotion, rollback ------------------------------------------------------------------


def current_champion(name: str) -> int | None:
    """The version holding `champion`, or None; ModelNotFoundError for an unknown model."""
    rm = require_registered_model(name)
    v = (rm.aliases or {}).get(ALIAS_CHAMPION)
    return int(v) if v is not None else None


def _history(rm: Any) -> list[int]:
    raw = (rm.tags or {}).get(TAG_CHAMPION_HISTORY)
    if not raw:
        return []
    try:
        data = json.loads(raw)
        return [int(v) for v in data]
    except (ValueError, TypeError):
        _log.warning("ignoring unreadable %s tag on %s: %r", TAG_CHAMPION_HISTORY, rm.name, raw[:200])
        return []


def _save_history(name: str, history: list[int]) -> None:
    _client().set_registered_model_tag(name, TAG_CHAMPION_HISTORY, json.dumps(history[-_MAX_HISTORY:]))


def recorded_gate_outcomes(mv: Any) -> dict[str, dict[str, Any]] | None:
    """The gate outcomes recorded on a model version (gate_results, else gates_passed/failed_gates); None if none."""
    tags = mv.tags or {}
    if TAG_GATE_RESULTS in tags:
        try:
            return gate_outcomes(json.loads(tags[TAG_GATE_RESULTS]))
        except ValueError:
            pass
    if TAG_GATES_PASSED in tags:
        failed = [g for g in tags.get(TAG_FAILED_GATES, "").split(",") if g]
        if tags[TAG_GATES_PASSED] == "true":
            return {"all": {"passed": True, "value": None, "threshold": None}}
        return {g: {"passed": False, "value": None, "threshold": None} for g in failed or ["unknown"]}
    return None


def _write_gate_tags(mv: Any, outcomes: Mapping[str, Mapping[str, Any]], failed: Sequence[str]) -> None:
    """The latest gate outcomes on a version, read back by `recorded_gate_outcomes` (promotion, rollout)."""
    client = _client()
    name, vstr = mv.name, str(mv.version)
    client.set_model_version_tag(name, vstr, TAG_GATES_PASSED, str(not failed).lower())
    client.set_model_version_tag(name, vstr, TAG_GATE_RESULTS, _tag_value({k: v["passed"] for k, v in outcomes.items()}))
    if failed:
        client.set_model_version_tag(name, vstr, TAG_FAILED_GATES, ",".join(failed))
    elif TAG_FAILED_GATES in (mv.tags or {}):
        client.delete_model_version_tag(name, vstr, TAG_FAILED_GATES)


def record_gate_outcomes(name: str, version: int | str, gate_report: Any) -> list[str]:
    """Record an evaluation's gate outcomes on the version without moving any alias; returns the failed gates.

    What `promote` records too: a version evaluated without promotion can later be rolled out (or
    promoted) on these results, and a failed gate keeps it from either.
    """
    mv = resolve_version(name, str(version))
    outcomes = gate_outcomes(gate_report)
    failed = _failed(outcomes)
    if TAG_INCOMPLETE in (mv.tags or {}):
        failed.append("complete_training_run")
    _write_gate_tags(mv, outcomes, failed)
    return failed


def promote(name: str, version: int | str, gate_report: Any = None, force: bool = False) -> PromotionResult:
    """Make `version` the champion if every gate passed (or `force`, recorded as a tag).

    Gates come from `gate_report` or, when it is None, from the gate tags recorded at registration.
    A failed gate leaves `champion` where it is, gives the version `challenger` and a `failed_gates` tag.
    The displaced champion is recorded (`previous_champion` on the version, `champion_history` on the
    model) so `rollback` can restore it. Unknown model/version: ModelNotFoundError, nothing moves.
    """
    client = _client()
    mv = resolve_version(name, str(version))
    version = int(mv.version)
    if gate_report is not None:
        outcomes: dict[str, dict[str, Any]] | None = gate_outcomes(gate_report)
    else:
        outcomes = recorded_gate_outcomes(mv)
    if outcomes is None and not force:
        raise PromotionError(
            f"no gate results for {name} v{version}: pass the model gate report, or force=True to promote anyway"
        )
    failed = _failed(outcomes or {})
    if TAG_INCOMPLETE in (mv.tags or {}):
        failed.append("complete_training_run")
    current = current_champion(name)
    vstr = str(version)

    if failed and not force:
        _write_gate_tags(mv, outcomes or {}, failed)
        if current != version:
            client.set_registered_model_alias(name, ALIAS_CHALLENGER, vstr)
        return PromotionResult(
            name=name, version=version, action="rejected", promoted=False, champion=current,
            failed_gates=tuple(failed),
            message=f"{name} v{version} not promoted: failed gates {', '.join(failed)}; champion stays "
            + (f"v{current}" if current is not None else "unset"),
        )

    if outcomes is not None:
        _write_gate_tags(mv, outcomes, failed)
    if current == version:
        return PromotionResult(
            name=name, version=version, action="already_champion", promoted=True, champion=version,
            previous_champion=None, failed_gates=tuple(failed), forced=force,
            message=f"{name} v{version} is already the champion",
        )

    rm = require_registered_model(name)
    history = _history(rm)
    if current is not None and (not history or history[-1] != current):
        history.append(current)
    history.append(version)
    client.set_model_version_tag(name, vstr, TAG_PREVIOUS_CHAMPION, str(current) if current is not None else "none")
    client.set_model_version_tag(name, vstr, TAG_PROMOTED_AT, _now())
    if force:
        client.set_model_version_tag(name, vstr, TAG_FORCED, "true" if not failed else f"true (failed: {','.join(failed)})")
    crash_point("promote")
    client.set_registered_model_alias(name, ALIAS_CHAMPION, vstr)
    _save_history(name, history)
    if (rm.aliases or {}).get(ALIAS_CHALLENGER) is not None and int(rm.aliases[ALIAS_CHALLENGER]) == version:
        client.delete_registered_model_alias(name, ALIAS_CHALLENGER)
    how = "forced" if force and (failed or outcomes is None) else "all gates passed"
    return PromotionResult(
        name=name, version=version, action="promoted", promoted=True, champion=version,
        previous_champion=current, failed_gates=tuple(failed), forced=force,
        message=f"{name} v{version} is the champion ({how}); previous champion "
        + (f"v{current}" if current is not None else "none"),
    )


def rollback(name: str) -> PromotionResult:
    """Move `champion` back to the previous champion recorded by `promote`; records the rollback."""
    client = _client()
    rm = require_registered_model(name)
    current = current_champion(name)
    if current is None:
        raise PromotionError(f"{name} has no champion to roll back")
    history = _history(rm)
    if not history or history[-1] != current:
        history.append(current)
    if len(history) < 2:
        try:
            prev_tag = client.get_model_version(name, str(current)).tags.get(TAG_PREVIOUS_CHAMPION)
        except MlflowException:
            prev_tag = None
        if prev_tag and prev_tag.isdigit():
            history.insert(0, int(prev_tag))
    history.pop()  # the current champion
    existing = set(_version_numbers(name))
    while history and (history[-1] not in existing or history[-1] == current):
        history.pop()
    if not history:
        raise PromotionError(f"{name} v{current} has no previous champion to roll back to")
    target = history[-1]
    at = _now()
    client.set_registered_model_alias(name, ALIAS_CHAMPION, str(target))
    client.set_model_version_tag(name, str(current), TAG_ROLLED_BACK_AT, at)
    client.set_model_version_tag(name, str(current), "rolled_back_to", str(target))
    _save_history(name, history)
    client.set_registered_model_tag(
        name, TAG_LAST_ROLLBACK, json.dumps({"from": current, "to": target, "at": at})
    )
    return PromotionResult(
        name=name, version=target, action="rolled_back", promoted=True, champion=target,
        previous_champion=current, message=f"{name}: champion rolled back from v{current} to v{target}",
    )


def list_versions(name: str, metric_keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per version, newest first: version, aliases, status, created, run id, tags, run metrics."""
    rm = require_registered_model(name)
    client = _client()
    by_version: dict[int, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(int(v), []).append(alias)
    esc = name.replace("'", "\\'")
    rows = []
    for mv in client.search_model_versions(f"name='{esc}'"):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        if metric_keys is not None:
            metrics = {k: metrics[k] for k in metric_keys if k in metrics}
        created = _dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, _dt.timezone.utc).isoformat(timespec="seconds")
        rows.append(
            {
                "version": int(mv.version),
                "aliases": sorted(by_version.get(int(mv.version), [])),
                "status": mv.status,
                "created": created,
                "run_id": mv.run_id,
                "tags": dict(mv.tags or {}),
                "metrics": metrics,
            }
        )
    rows.sort(key=lambda r: r["version"], reverse=True)
    return rows
