"""`TrainingRun`: one MLflow run of a flow (training or evaluation) and everything it records.

A run records parameters, per-epoch metrics, the dataset manifest (as an MLflow dataset input with the
manifest's digest), gate results, plots, the model card and the registered model, and ends FAILED (with the
reason) or KILLED whatever stops the flow; that life cycle lives in the one class.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lvm_core.contracts.errors import DataContractError, RegistryError
from lvm_core.contracts.gates import failed_gates, gate_outcomes
from lvm_core.data.embedding.fingerprint import EncoderFingerprint
from lvm_core.io import storage
from lvm_core.runtime.liveness import Owner
from lvm_core.tracking.dead_runs import reap_dead_runs
from lvm_core.tracking.model_logging import ModelVersionInfo, log_and_register_model
from lvm_core.tracking.setup import DEFAULT_EXPERIMENT, configure_tracking, mlflow_client, quiet_mlflow
from lvm_core.tracking.tags import (
    MAX_TAG_VALUE,
    TAG_ARCH,
    TAG_DATASET_DIGEST,
    TAG_DATASET_DIR,
    TAG_DATASET_ID,
    TAG_ENCODER,
    TAG_FAILURE,
    TAG_OWNER,
    TAG_SNAPSHOT,
    TAG_SPLIT_HASH,
    TAG_SPLIT_REGISTRY,
    fingerprint_tags,
    flatten_params,
    tag_value,
    truncate,
)

_log = logging.getLogger(__name__)

MAX_DATASET_DIGEST = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE


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
            run_tags.update(fingerprint_tags(encoder_fingerprint))
        elif encoder_fingerprint:
            run_tags[TAG_ENCODER] = str(encoder_fingerprint)
        for k, v in (tags or {}).items():
            run_tags[str(k)] = tag_value(v)
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
            quiet_mlflow()
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
            mlflow_client().set_terminated(self._run_id, status=status)
        self._ended = True

    def __enter__(self) -> TrainingRun:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
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
            mlflow_client().set_tag(self.run_id, TAG_FAILURE, truncate(reason, MAX_TAG_VALUE))
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
        client = mlflow_client()
        for k, v in tags.items():
            client.set_tag(self.run_id, str(k), tag_value(v))

    def log_params(self, params: Any, prefix: str = "") -> dict[str, str]:
        """Log a (nested) config as flat params; returns what was logged."""
        flat = flatten_params(params, prefix)
        items = [Param(k, v) for k, v in flat.items()]
        client = mlflow_client()
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i : i + 100])
        return flat

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics at `step`; a non-numeric value is an error naming its key."""
        ts = int(_dt.datetime.now(_dt.UTC).timestamp() * 1000)
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
        client = mlflow_client()
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
        client = mlflow_client()
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
        mlflow_client().log_text(self.run_id, text, artifact_file)

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
            mlflow_client().log_figure(self.run_id, figure, artifact_file)

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
        counts = manifest.get("counts")
        if not isinstance(counts, dict):
            counts = {}
        dataset = _ManifestDataset(source, ds_name, digest[:MAX_DATASET_DIGEST], counts)
        tags = [
            InputTag("mlflow.data.context", context),
            InputTag(TAG_DATASET_DIGEST, digest),
        ]
        client = mlflow_client()
        client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])
        client.log_artifact(self.run_id, str(manifest_path), "dataset")
        run_tags = {TAG_DATASET_DIGEST: digest, TAG_DATASET_DIR: str(dataset_dir)}
        existing = client.get_run(self.run_id).data.tags
        snapshot = manifest.get("snapshot_id")
        if snapshot and TAG_SNAPSHOT not in existing:
            run_tags[TAG_SNAPSHOT] = str(snapshot)
        if manifest.get("dataset_id") and TAG_DATASET_ID not in existing:
            run_tags[TAG_DATASET_ID] = str(manifest["dataset_id"])
        block = manifest.get("splits")
        splits: dict[str, Any] = block if isinstance(block, dict) else {}
        for tag, key in ((TAG_SPLIT_HASH, "content_hash"), (TAG_SPLIT_REGISTRY, "registry_hash")):
            if splits.get(key) and tag not in existing:
                run_tags[tag] = str(splits[key])
        self.set_tags(run_tags)
        return {"name": ds_name, "digest": digest, "source": str(dataset_dir)}

    def log_gate_results(self, report: Any, stage: str | None = None) -> dict[str, dict[str, Any]]:
        """Log gate results as `gates/<stage>.json`, pass/fail tags and `gate.<name>` metrics for numbers."""
        stage = stage or (getattr(report, "stage", None) if not isinstance(report, Mapping) else report.get("stage"))
        stage = str(stage or "model")
        outcomes = gate_outcomes(report)
        failed = failed_gates(outcomes)
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




def _parent(artifact_file: str) -> str | None:
    parent = str(Path(artifact_file).parent)
    return None if parent in ("", ".") else parent

